package hal

import (
	"context"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator/waittest"
)

// TestOnPeriphFakes drives a two-door cabinet built on periph's own fake
// pins (gpiotest.Pin): a door opened by hand is reported once, and a
// release pulses the coil, is confirmed by the door sensor, and leaves the
// coil off.
func TestOnPeriphFakes(t *testing.T) {
	w, err := wiring.Parse([]byte(`name: fakes
locks: {pulse: 60ms, confirm: 500ms}
sensors: {debounce: 10ms, poll: 2ms, pull: none} # gpiotest.Pin reads high after In with a pull-up
compartments:
  - {number: 1, size: S, lock: L1, door: D1}
  - {number: 2, size: M, lock: L2, door: D2}
`), "fakes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pins := map[string]*gpiotest.Pin{}
	for _, n := range []string{"L1", "D1", "L2", "D2"} {
		pins[n] = &gpiotest.Pin{N: n, Num: -1}
	}
	src := func(name string) gpio.PinIO {
		if p, ok := pins[name]; ok {
			return p
		}
		return nil
	}
	level := func(name string) gpio.Level {
		p := pins[name]
		p.Lock()
		defer p.Unlock()
		return p.L
	}
	set := func(name string, l gpio.Level) {
		p := pins[name]
		p.Lock()
		p.L = l
		p.Unlock()
	}
	h, err := New(w, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.Run(ctx)
	next := func() Event {
		t.Helper()
		select {
		case ev := <-h.Events():
			return ev
		case <-time.After(3 * time.Second):
			t.Fatal("no event")
		}
		return Event{}
	}

	set("D2", gpio.High) // someone opens door 2
	if ev := next(); ev.Kind != DoorChanged || ev.Compartment != 2 || !ev.On {
		t.Fatalf("event = %+v", ev)
	}
	// Release 1: the coil goes on; the door springs open; the release is confirmed.
	if err := h.Release(1); err != nil {
		t.Fatal(err)
	}
	waittest.For(t, time.Second, func() bool { return level("L1") == gpio.High }, "the coil to go on")
	set("D1", gpio.High)
	for {
		ev := next()
		if ev.Kind == LockReleased {
			if ev.Compartment != 1 || ev.Err != nil {
				t.Fatalf("release = %+v", ev)
			}
			break
		}
	}
	if level("L1") != gpio.Low || level("L2") != gpio.Low {
		t.Fatal("a coil was left on")
	}
	h.Halt()
}
