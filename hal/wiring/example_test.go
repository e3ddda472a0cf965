package wiring_test

import (
	"fmt"

	"github.com/openlocker/locker/hal/wiring"
)

func ExampleParse() {
	w, err := wiring.Parse([]byte(`
locks: {active_low: true}
compartments:
  - {number: 2, size: M, lock: GPIO27, door: GPIO25}
  - {number: 1, size: S, lock: GPIO17, door: GPIO24, parcel: GPIO12}
`), "cabinet.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("pulse", w.Locks.Pulse, "debounce", w.Sensors.Debounce, "pull", w.Sensors.Pull)
	for _, c := range w.Compartments {
		fmt.Println(c.Number, c.Size, c.Lock, c.Door, c.Parcel != "")
	}

	_, err = wiring.Parse([]byte(`
compartments:
  - {number: 1, size: S, lock: GPIO17, door: GPIO24}
  - {number: 2, size: M, lock: GPIO27, door: GPIO17}
`), "cabinet.yaml")
	fmt.Println(err)
	// Output:
	// pulse 300ms debounce 30ms pull up
	// 1 S GPIO17 GPIO24 true
	// 2 M GPIO27 GPIO25 false
	// cabinet.yaml:4: compartment 2: door pin "GPIO17" already used as lock of compartment 1 (line 3)
}
