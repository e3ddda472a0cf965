package hal

import (
	"errors"
	"strings"
	"testing"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"

	"github.com/openlocker/locker/hal/wiring"
)

// LocksOff drives every lock output it can find off, touches no other
// pin, goes on past a missing one, and drives them off again on Halt.
func TestLocksOff(t *testing.T) {
	w, err := wiring.Parse([]byte(rigWiring), "rig.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pins := newPinSet()
	pins.missing["L2"] = true
	l, err := LocksOff(w, pins.source, Options{})
	if !errors.Is(err, ErrNoPin) || !strings.Contains(err.Error(), "lock of compartment 2") {
		t.Errorf("LocksOff = %v, want the missing lock pin of compartment 2", err)
	}
	if l.Len() != 2 {
		t.Fatalf("%d locks driven off, want 2", l.Len())
	}
	for _, rec := range pins.bus.records() {
		if rec.in || (rec.pin != "L1" && rec.pin != "L3") || rec.l != gpio.High {
			t.Errorf("LocksOff: %+v; want only L1 and L3 driven high (off, active low)", rec)
		}
	}
	if n := len(pins.bus.records()); n != 2 {
		t.Errorf("%d pin writes, want 2", n)
	}
	pins.get("L1").set(gpio.Low) // as if on
	if err := l.Halt(); err != nil {
		t.Fatal(err)
	}
	if pins.get("L1").get() != gpio.High {
		t.Error("Halt left L1 on")
	}
	if err := (*Locks)(nil).Halt(); err != nil {
		t.Errorf("Halt of nil Locks = %v", err)
	}
}

// Locks on an expander: the chip is initialised with the lock outputs
// latched off, its other pins inputs; an expander that does not answer is
// reported and the board's locks are driven off all the same.
func TestLocksOffExpander(t *testing.T) {
	yaml := strings.Replace(expWiring, "  - {number: 2, size: S, lock: X1.A1, door: D2}\n",
		"  - {number: 2, size: S, lock: X1.B7, door: D2}\n  - {number: 3, size: S, lock: L3, door: D3}\n", 1)
	w, err := wiring.Parse([]byte(yaml), "exp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	chip := newFakeMCP()
	pins := newPinSet()
	buses := func(string) (i2c.Bus, error) { return chip, nil }
	l, err := LocksOff(w, pins.source, Options{Buses: buses})
	if err != nil || l.Len() != 3 {
		t.Fatalf("LocksOff = %v, %d locks", err, l.Len())
	}
	if !chip.isOff(0, true) || !chip.isOff(15, true) || pins.get("L3").get() != gpio.High {
		t.Error("locks not off")
	}
	chip.mu.Lock()
	iodir := [2]byte{chip.regs[mcpIODIRA], chip.regs[mcpIODIRA+1]}
	chip.mu.Unlock()
	if iodir != [2]byte{0xFE, 0x7F} {
		t.Errorf("IODIR %02x, want only A0 and B7 outputs", iodir)
	}
	for i := range 16 {
		if iv := chip.intervals(i, true); len(iv) != 0 {
			t.Errorf("pin %d energised: %v", i, iv)
		}
	}

	dead := newFakeMCP()
	dead.setFault(func([]byte, *fakeMCP) error { return errBus })
	pins = newPinSet()
	l, err = LocksOff(w, pins.source, Options{Buses: func(string) (i2c.Bus, error) { return dead, nil }})
	if !errors.Is(err, ErrExpander) || strings.Count(err.Error(), "X1") != 2 { // reported once (the error names it twice)
		t.Errorf("LocksOff on a dead bus = %v", err)
	}
	if l.Len() != 1 || pins.get("L3").get() != gpio.High {
		t.Errorf("%d locks driven off, L3 %v; want the board's lock off", l.Len(), pins.get("L3").get())
	}
}
