package controller

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/simulator/waittest"
)

// The control API's POST /selftest {"all": true, "code": C} (lockerctl
// selftest -all) does exactly this: CheckServiceCode(C), then SelfTest(all)
// as the code's holder. A service grant scoped to one compartment opens
// that compartment only (keypad, lockerctl open) and never the menu; its
// code must not release the lock of a compartment holding someone else's
// parcel.
func TestScopedServiceCodeDoesNotSelfTestEveryDoor(t *testing.T) {
	r := newRig(t, "S S M L")
	r.apply(body(depositOp("g-1", 1, "123456", "S", 0)))
	r.deposit("123456", 1)
	if s := r.state(1); s != "occupied" {
		t.Fatalf("compartment 1 is %s, want occupied", s)
	}
	r.apply(body(wire.GrantOp{Op: "put", GrantID: "svc-3", Version: 1, Action: "service", Compartment: 3,
		Holder: "13700001111", CodeHash: hash("24681357"), ValidUntil: ptr(t0.Add(24 * time.Hour))}))
	before := len(r.cab.Releases())

	actor, err := r.c.CheckServiceCode(r.ctx, "24681357")
	if err != nil {
		return // refused: the hole is closed
	}
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
	defer cancel()
	go r.c.SelfTest(ctx, true, actor, nil)
	waittest.For(t, 5*time.Second, func() bool { return len(r.cab.Releases()) > before }, "the self-test's releases")
	time.Sleep(100 * time.Millisecond)
	if rel := r.cab.Releases()[before:]; slices.Contains(rel, 1) {
		t.Fatalf("a service code scoped to compartment 3 ran the self-test on every door: released %v, "+
			"compartment 1 holding parcel JTg-1 included (actor %s)", rel, actor)
	}
}

// A service grant for one compartment with "uses": 1 opens its door once
// at the keypad (the use is taken); lockerctl open (ServiceOpen) takes no
// use, so the same one-use code opens the door again and again.
func TestOneUseServiceCodeOpensOnceThroughTheControlAPI(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(wire.GrantOp{Op: "put", GrantID: "svc-2", Version: 1, Action: "service", Compartment: 2,
		Holder: "13700001111", CodeHash: hash("55667788"), Uses: ptr(1), ValidUntil: ptr(t0.Add(time.Hour))}))
	if err := r.c.ServiceOpen(r.ctx, "55667788", 2); err != nil {
		t.Fatal(err)
	}
	r.door(2, true)
	r.door(2, false)
	if err := r.c.ServiceOpen(r.ctx, "55667788", 2); err == nil {
		t.Fatalf("a one-use service code opened compartment 2 a second time: releases %v", r.cab.Releases())
	}
}

// A technician (or the central) disabled compartment 3 (its lock does not
// hold). A wiring file cut short while it was being edited lists only
// compartments 1 and 2; lockerd starts on it, then on the whole file
// again. Compartment 3 must come back disabled, not free for the next
// deposit: a half-written wiring must not change what is stored.
func TestHalfWrittenWiringKeepsADisabledCompartment(t *testing.T) {
	r := newRig(t, "M M M")
	res, err := r.c.Execute(r.ctx, &wire.Command{Kind: "command", LockerID: lockerID, CommandID: "c-off-3",
		Action: "disable", Compartment: 3, Reason: "lock does not hold"})
	if err != nil || !res.OK {
		t.Fatalf("disable: %+v %v", res, err)
	}
	if s := r.state(3); s != "disabled" {
		t.Fatalf("state = %s, want disabled", s)
	}
	whole := r.cab.comps
	r.cab.comps = whole[:2] // the half-written wiring
	r.restart()
	r.cab.comps = whole // the whole wiring again
	r.restart()
	if s := r.state(3); s != "disabled" {
		r.apply(body(depositOp("g-1", 1, "123456", "M", 3)))
		r.keys("123456#")
		t.Fatalf("after a start on a wiring without it, disabled compartment 3 is %q; a deposit released %v",
			s, r.cab.Releases())
	}
}
