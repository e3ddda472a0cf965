package simulator_test

import (
	"fmt"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/openlocker/locker/simulator"
)

// The daemon pulses a lock pin; the door springs ajar by itself, and a
// person pushes it shut again.
func Example() {
	w, err := simulator.DefaultWiring()
	if err != nil {
		panic(err)
	}
	cab, err := simulator.New(w, simulator.Options{}) // in memory
	if err != nil {
		panic(err)
	}
	defer cab.Halt()
	lock, door := cab.ByName("LOCK07"), cab.ByName("DOOR07")
	fmt.Println("door sensor:", door.Read())

	_ = lock.Out(gpio.High) // energise the coil
	time.Sleep(2 * simulator.DefaultMinPulse)
	_ = lock.Out(gpio.Low)
	c, _ := cab.Compartment(7)
	fmt.Println("door sensor:", door.Read(), "door:", c.Door, "latched:", c.Latched)

	fmt.Println(cab.OpenDoor(8)) // a latched door stays shut
	_ = cab.SetParcel(7, true)
	_ = cab.CloseDoor(7)
	c, _ = cab.Compartment(7)
	fmt.Printf("%+v\n", c)
	// Output:
	// door sensor: Low
	// door sensor: High door: open latched: false
	// simulator: door is latched: compartment 8
	// {Number:7 Size:S Door:closed Latched:true Parcel:true Fault:none}
}
