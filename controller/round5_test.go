package controller

import (
	"github.com/openlocker/locker/hal"

	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
)

// A reclaim naming no parcel, put while parcel A is in its compartment, is
// bound to A. The recipient picks A up. The central then puts the same
// reclaim again at a higher version (its validity extended, as the central
// does for any grant), naming no parcel as before: the put finds the
// compartment empty and stores it unbound, and the next deposit (parcel B,
// another recipient's) binds it to B. The code issued for parcel A opens
// the door of parcel B (I1: "a reclaim naming no parcel is for the one in
// its compartment when it was put"; the hole closed by 80d7e36, reopened by
// a re-put).
func TestReclaimPutAgainKeepsItsParcel(t *testing.T) {
	r := newRig(t, "M")
	dep := depositOp("d-1", 1, "111111", "M", 0)
	dep.ParcelID = ""
	r.apply(body(dep))
	r.deposit("111111", 1) // parcel A
	rc := wire.GrantOp{Op: "put", GrantID: "rc-1", Version: 1, Action: "reclaim", Compartment: 1,
		Holder: "13488888888", CodeHash: hash("333333"), ValidFrom: ptr(t0.Add(time.Hour)), ValidUntil: ptr(t0.Add(48 * time.Hour))}
	r.apply(body(rc)) // bound to parcel A
	// The recipient picks parcel A up in time.
	r.keys("1111119#")
	r.door(1, true)
	r.parcel(1, false)
	r.door(1, false)
	if s := r.state(1); s != "free" {
		t.Fatalf("after the pickup compartment 1 is %s", s)
	}
	// The central extends the reclaim (version 2, same code, no parcel_id).
	rc.Version = 2
	rc.ValidUntil = ptr(t0.Add(96 * time.Hour))
	r.apply(body(rc))
	// The next courier deposits parcel B, for another recipient.
	r.apply(body(depositOp("d-2", 1, "222222", "M", 0)))
	r.deposit("222222", 1)
	if s := r.state(1); s != "occupied" {
		t.Fatalf("after the second deposit compartment 1 is %s", s)
	}
	r.types()
	releases := len(r.cab.Releases())
	r.clock.Advance(2 * time.Hour) // the reclaim grant comes into force
	r.keys("333333#")
	if n := len(r.cab.Releases()); n != releases {
		t.Fatalf("I1: the reclaim code issued for parcel A (picked up), put again at version 2, opened compartment 1 "+
			"holding parcel JTd-2; traces %v", r.types())
	}
}

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
