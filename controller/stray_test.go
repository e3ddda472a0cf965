package controller

import (
	"errors"
	"testing"

	"github.com/openlocker/locker/hal"
)

// A parcel put in through a forced door takes its compartment out of use:
// the next deposit must not open it and record the stranger's parcel as its
// own, and a door sensor that reads sanely again does not put it back.
func TestParcelThroughForcedDoorTakesCompartmentOutOfUse(t *testing.T) {
	r := newRig(t, "S S")
	r.types()
	r.door(1, true)
	r.parcel(1, true)
	r.door(1, false)
	r.expectTypes("door_opened", "door_forced", "parcel_found", "door_closed")
	if s := r.state(1); s != "fault" {
		t.Fatalf("compartment 1 holding a stranger's parcel is %s, want fault", s)
	}
	r.event(hal.Event{Kind: hal.SensorFault, Compartment: 1, Err: errors.New("chatter")})
	r.event(hal.Event{Kind: hal.SensorRecovered, Compartment: 1})
	if s := r.state(1); s != "fault" {
		t.Fatalf("a door sensor's recovery put compartment 1 back in use: %s", s)
	}
	r.types()
	r.apply(body(depositOp("g-1", 1, "123456", "S", 0)))
	r.keys("123456#")
	if got := r.cab.Releases(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("the deposit opened %v, want [2]", got)
	}

	// A parcel taken out through a forced door is reported; the compartment
	// stays occupied, so that its pickup code still opens it.
	r.door(2, true)
	r.parcel(2, true)
	r.door(2, false)
	r.types()
	r.door(2, true)
	r.parcel(2, false)
	r.door(2, false)
	r.expectTypes("door_opened", "door_forced", "parcel_missing", "door_closed")
	if s := r.state(2); s != "occupied" {
		t.Fatalf("compartment 2 after its parcel was taken through a forced door = %s, want occupied", s)
	}
}
