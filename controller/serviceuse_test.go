package controller

import (
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

// A cabinet-wide service grant with "uses": 1 opens the menu; the first
// door chosen does not open (lock fault). I1 takes one of its uses "per
// door opened", and a pickup's use is given back when its door never
// opens; the service use is not: the grant is used up by a door that
// stayed shut, the menu ends, and the technician can open no door at all.
func TestServiceUseGivenBackOnALockFault(t *testing.T) {
	r := newRig(t, "M M M")
	r.apply(body(wire.GrantOp{Op: "put", GrantID: "svc-1", Version: 1, Action: "service", Holder: "13700001111",
		CodeHash: hash("99887766"), Uses: ptr(1), ValidUntil: ptr(t0.Add(time.Hour))}))
	r.keys("99887766#")
	r.keys("11#")
	r.event(hal.Event{Kind: hal.LockReleased, Compartment: 1, Err: errLost}) // door 1 does not open
	r.keys("*")
	r.keys("99887766#")
	r.keys("12#")
	if rel := r.cab.Releases(); len(rel) != 2 || rel[1] != 2 {
		t.Fatalf("I1: a one-use service grant lost its use to a door that never opened (lock fault on door 1): "+
			"releases %v, want [1 2]; traces %v", rel, r.types())
	}
}
