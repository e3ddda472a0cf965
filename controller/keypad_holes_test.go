package controller

// Holes found by an attack at the keypad and the cabinet; each test failed
// before its fix.

import (
	"slices"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

// TestLateOpenGivesNoDepositCodeASecondDoor: a size deposit's
// first door does not open (lock fault), it moves on to a second door,
// which does not open either (no second move-on). The courier types the
// code again at once: a third door opens, and the parcel is deposited
// there. The second door then opens late (I15), within the minute: it is
// credited to the same deposit grant, which already has a door open or is
// used up, so one single-use deposit code gets two doors and parcel JTg-1
// is recorded deposited twice, in two compartments (I7; docs/protocol.md:
// "A deposit grant that already has a door open cannot open a second one";
// lockFault: "a second session of one deposit grant would record it twice").
func TestLateOpenGivesNoDepositCodeASecondDoor(t *testing.T) {
	r := newRig(t, "M M M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	r.event(hal.Event{Kind: hal.LockReleased, Compartment: 1, Err: errLost}) // moves on to 2
	r.event(hal.Event{Kind: hal.LockReleased, Compartment: 2, Err: errLost}) // no second move-on
	r.keys("123456#")                                                        // the courier tries again: door 3
	if rel := r.cab.Releases(); !slices.Equal(rel, []int{1, 2, 3}) {
		t.Fatalf("releases %v, want [1 2 3]", rel)
	}
	r.types()
	r.door(3, true) // the courier at door 3 …
	r.door(2, true) // … and door 2 springs open late (its board acted after all)
	r.parcel(3, true)
	r.door(3, false)
	r.parcel(2, true) // a passer-by (or the courier's second parcel) in door 2
	r.door(2, false)
	var deposited []wire.Trace
	for _, tr := range r.takeTraces() {
		if tr.Type == "deposited" {
			deposited = append(deposited, tr)
		}
	}
	if len(deposited) > 1 {
		t.Fatalf("one single-use deposit code (g-1) was credited with %d doors: %d deposited traces for parcel %s "+
			"(compartments %d and %d); compartment 2 is %s, compartment 3 %s",
			len(deposited), len(deposited), deposited[0].ParcelID, deposited[0].Compartment, deposited[1].Compartment,
			r.state(2), r.state(3))
	}
}

// TestOneUseServiceMenuOpensOneDoor: a cabinet-wide service
// grant with "uses": 1. Through the control API (ServiceOpen) it opens one
// door and is used up; at the keypad its menu opens any number of doors,
// the menu can be left and entered again, and the grant never loses its
// use (I1: uses count door openings; I4: a used-up grant opens nothing).
func TestOneUseServiceMenuOpensOneDoor(t *testing.T) {
	r := newRig(t, "M M M")
	r.apply(body(wire.GrantOp{Op: "put", GrantID: "svc-1", Version: 1, Action: "service", Holder: "13700001111",
		CodeHash: hash("99887766"), Uses: ptr(1), ValidUntil: ptr(t0.Add(time.Hour))}))
	for round := 0; round < 2; round++ {
		r.keys("99887766#")
		for _, n := range []string{"1", "2", "3"} {
			r.keys("1" + n + "#")
			r.door(int(n[0]-'0'), true)
			r.door(int(n[0]-'0'), false)
		}
		r.keys("*")
	}
	if rel := r.cab.Releases(); len(rel) > 1 {
		t.Fatalf("a one-use service code opened %d doors through the keypad menu: releases %v", len(rel), rel)
	}
}

// TestPickupExpiredWaitsForItsOpenDoor: the recipient types
// the pickup code a second before it ends, opens the door, and shuts it
// again with the parcel still inside. The housekeeping tick at the expiry
// finds the session and records nothing, but marks the grant expired_sent:
// pickup_expired is never sent and the compartment stays "occupied" for
// ever (docs/protocol.md: "pickup_expired is sent once per pickup grant,
// when its valid_until passes with its parcel still in the compartment").
func TestPickupExpiredWaitsForItsOpenDoor(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.deposit("123456", 1)
	// The nested pickup ends at t0+72h.
	r.clock.Set(t0.Add(72*time.Hour - time.Second))
	r.keys("1234569#")
	r.door(1, true)
	r.clock.Set(t0.Add(72*time.Hour + time.Second))
	r.tick() // the expiry, with the door open
	r.door(1, false)
	r.types()
	for i := 0; i < 3; i++ {
		r.clock.Advance(time.Hour)
		r.tick()
	}
	got := r.types()
	if !slices.Contains(got, "pickup_expired") {
		t.Fatalf("the pickup grant ended with parcel JTg-1 still in compartment 1, and no pickup_expired was ever "+
			"recorded (traces after the close: %v); compartment 1 is %s", got, r.state(1))
	}
}

// TestSizeDepositLeavesAReservedCompartment: a deposit grant
// names compartment 1 from valid_from on. On a clock that is not trusted
// (a board back without its RTC and without network), housekeeping never
// refreshes the reservations, while the keypad judges codes at the
// estimated time: once valid_from has passed, compartment 1 is still
// "free", and a size deposit takes it (the model's I1: "a size deposit
// took compartment 1 reserved by …"). The named grant's courier is then
// turned away.
func TestSizeDepositLeavesAReservedCompartment(t *testing.T) {
	r := newRig(t, "M M")
	r.stop()
	r.clock.Set(time.Unix(0, 0).UTC()) // 1970: not trusted; the time is estimated from t0 on
	r.start()
	res := depositOp("res", 1, "333333", "", 1)
	res.ValidFrom = ptr(t0.Add(time.Hour))
	r.apply(body(res, depositOp("bysize", 1, "444444", "M", 0)))
	r.clock.Advance(2 * time.Hour) // "res" is in force, at the controller's time
	r.tick()
	r.tick()
	r.keys("444444#")
	if rel := r.cab.Releases(); len(rel) == 1 && rel[0] == 1 {
		r.door(1, true)
		r.parcel(1, true)
		r.door(1, false)
		r.keys("333333#")
		t.Fatalf("a size deposit took compartment 1, reserved by deposit grant res (in force since an hour); "+
			"res's code then opens %v (releases %v, display %q)", r.cab.Releases()[1:], r.cab.Releases(), r.cab.Display())
	}
}
