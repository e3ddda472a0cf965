package controller

// Found by an attack over the link; it failed before the fix.

import (
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
)

// A reclaim grant arrives with compartment and no parcel_id (PROTOCOL.md:
// a reclaim needs only a compartment), pre-issued for when the pickup
// would have expired. The recipient picks the parcel up in time; the next
// courier deposits another parcel in the same compartment. The reclaim
// code, still in force and unused, then opens the compartment of a parcel
// it was never issued for (I1: "a pickup or reclaim: the compartment
// holding the very parcel it was issued for"). The pickup of hole 3 was
// bound to its parcel; the reclaim was not.
//
// Put before the deposit, it is bound to the next parcel deposited; put
// while a parcel is in, to that parcel; put again at a higher version once
// that parcel is gone (its validity extended), it keeps that binding (found
// by an attack on the fix: re-bound on the empty compartment, it went to
// the next parcel).
func TestReclaimWithoutParcelIDOpensOnlyItsParcel(t *testing.T) {
	for _, tc := range []struct {
		name               string
		putAfter, putAgain bool
	}{{"put before the deposit", false, false}, {"put after it", true, false}, {"put again after the pickup", true, true}} {
		t.Run(tc.name, func(t *testing.T) { reclaimWithoutParcelID(t, tc.putAfter, tc.putAgain) })
	}
}

func reclaimWithoutParcelID(t *testing.T, putAfter, putAgain bool) {
	r := newRig(t, "M")
	dep := depositOp("d-1", 1, "111111", "M", 0)
	dep.ParcelID = ""
	rc := wire.GrantOp{Op: "put", GrantID: "rc-1", Version: 1, Action: "reclaim", Compartment: 1,
		Holder: "13488888888", CodeHash: hash("333333"), ValidFrom: ptr(t0.Add(time.Hour)), ValidUntil: ptr(t0.Add(48 * time.Hour))}
	if putAfter {
		r.apply(body(dep))
	} else {
		r.apply(body(dep, rc))
	}
	r.deposit("111111", 1) // parcel A
	if putAfter {
		r.apply(body(rc))
	}
	// The recipient picks parcel A up in time.
	r.keys("1111119#")
	r.door(1, true)
	r.parcel(1, false)
	r.door(1, false)
	if s := r.state(1); s != "free" {
		t.Fatalf("after the pickup compartment 1 is %s", s)
	}
	if putAgain {
		rc.Version = 2
		rc.ValidUntil = ptr(t0.Add(96 * time.Hour))
		r.apply(body(rc))
	}
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
		t.Fatalf("I1: the reclaim code issued for parcel A (picked up) opened compartment 1 holding parcel JTd-2; traces %v", r.types())
	}
}
