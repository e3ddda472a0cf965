package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/clocktest"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/simulator/waittest"
)

// fakeCabinet is an in-memory hal.Cabinet. Its events channel is unbuffered,
// so a send returns only once the controller's loop has taken the event.
type fakeCabinet struct {
	mu       stdsync.Mutex
	comps    []hal.Compartment
	door     map[int]bool
	parcel   map[int]bool
	releases []int
	leds     map[int]bool
	display  [2]string
	events   chan hal.Event
	unread   map[int]bool // compartments whose sensors have no reading (hal.Readiness)
}

func newFakeCabinet(sizes string) *fakeCabinet {
	f := &fakeCabinet{door: map[int]bool{}, parcel: map[int]bool{}, leds: map[int]bool{}, events: make(chan hal.Event)}
	for i, s := range strings.Fields(sizes) {
		f.comps = append(f.comps, hal.Compartment{Number: i + 1, Size: s, HasOccupancy: true})
	}
	return f
}

func (f *fakeCabinet) Compartments() []hal.Compartment { return f.comps }
func (f *fakeCabinet) Release(n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n < 1 || n > len(f.comps) {
		return hal.ErrNoCompartment
	}
	f.releases = append(f.releases, n)
	return nil
}
func (f *fakeCabinet) DoorOpen(n int) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.door[n], nil
}
func (f *fakeCabinet) ParcelPresent(n int) (bool, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.parcel[n], f.comps[n-1].HasOccupancy, nil
}
func (f *fakeCabinet) Readable(n int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.unread[n]
}
func (f *fakeCabinet) Show(lines ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.display = [2]string{}
	copy(f.display[:], lines)
	return nil
}
func (f *fakeCabinet) Events() <-chan hal.Event { return f.events }
func (f *fakeCabinet) SetLED(n int, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leds[n] = on
	return nil
}
func (f *fakeCabinet) LED(n int) bool { f.mu.Lock(); defer f.mu.Unlock(); return f.leds[n] }
func (f *fakeCabinet) Releases() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.releases...)
}
func (f *fakeCabinet) Display() [2]string { f.mu.Lock(); defer f.mu.Unlock(); return f.display }

// rig is a controller on a real SQLite file with a fake cabinet.
type rig struct {
	t         *testing.T
	ctx       context.Context
	cancel    context.CancelFunc
	path      string
	st        *store.Store
	cab       *fakeCabinet
	clock     *clocktest.Clock
	c         *Controller
	done      chan error
	mu        stdsync.Mutex
	traces    []wire.Trace
	lang      string
	maxOutbox int
}

const lockerID = "610091A01"

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func newRig(t *testing.T, sizes string) *rig {
	t.Helper()
	r := &rig{t: t, path: filepath.Join(t.TempDir(), "locker.db"), cab: newFakeCabinet(sizes), clock: clocktest.New(t0)}
	// A copy of an empty database migrated once per test binary (what
	// store.Open makes of a new file): migrating every rig's new file
	// was a third of a short test's time.
	if err := os.WriteFile(r.path, migratedDB(t), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	return r
}

func (r *rig) start() {
	r.t.Helper()
	r.ctx, r.cancel = context.WithCancel(context.Background())
	st, err := store.Open(r.ctx, r.path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.st = st
	r.cab.events = make(chan hal.Event)
	c, err := New(Options{LockerID: lockerID, Store: st, Cabinet: r.cab, Clock: r.clock, Tick: time.Hour, Language: r.lang, MaxOutbox: r.maxOutbox,
		OnTrace: func(p []byte) {
			var tr wire.Trace
			if err := json.Unmarshal(p, &tr); err != nil {
				r.t.Errorf("trace is not JSON: %v", err)
			}
			r.mu.Lock()
			r.traces = append(r.traces, tr)
			r.mu.Unlock()
		}})
	if err != nil {
		r.t.Fatal(err)
	}
	r.c = c
	r.done = make(chan error, 1)
	go func() { r.done <- c.Run(r.ctx) }()
	select {
	case <-c.Ready():
	case err := <-r.done:
		r.t.Fatalf("controller stopped: %v", err)
	}
	r.t.Cleanup(r.stop)
}

func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.st.Close()
	r.cancel = nil
}

// restart stops the controller and starts a new one on the same database,
// as after a power cut (the fake cabinet keeps its physical state).
func (r *rig) restart() {
	r.stop()
	r.start()
}

func (r *rig) event(ev hal.Event) {
	r.t.Helper()
	select {
	case r.cab.events <- ev:
	case <-time.After(5 * time.Second):
		r.t.Fatal("controller does not take events")
	}
	// The loop took the event; wait until it has handled it.
	if err := r.c.do(r.ctx, func() {}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) keys(s string) {
	for i := 0; i < len(s); i++ {
		r.event(hal.Event{Kind: hal.KeyPressed, Key: s[i]})
	}
}

func (r *rig) door(n int, open bool) {
	r.cab.mu.Lock()
	r.cab.door[n] = open
	r.cab.mu.Unlock()
	r.event(hal.Event{Kind: hal.DoorChanged, Compartment: n, On: open})
}

func (r *rig) parcel(n int, present bool) {
	r.cab.mu.Lock()
	r.cab.parcel[n] = present
	r.cab.mu.Unlock()
	r.event(hal.Event{Kind: hal.ParcelChanged, Compartment: n, On: present})
}

// deposit types code, and the courier puts a parcel in compartment n and
// shuts the door.
func (r *rig) deposit(code string, n int) {
	r.t.Helper()
	r.keys(code + "#")
	r.door(n, true)
	r.parcel(n, true)
	r.door(n, false)
}

func (r *rig) tick() {
	if err := r.c.do(r.ctx, func() { r.c.housekeeping(r.ctx) }); err != nil {
		r.t.Fatal(err)
	}
}

// types returns the trace types recorded since the last call.
func (r *rig) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, tr := range r.traces {
		out = append(out, tr.Type)
	}
	r.traces = nil
	return out
}

func (r *rig) expectTypes(want ...string) {
	r.t.Helper()
	got := r.types()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		r.t.Fatalf("traces = %v, want %v", got, want)
	}
}

func (r *rig) state(n int) string {
	r.t.Helper()
	rep, err := r.c.Compartments(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	return rep.Compartments[n-1].State
}

func (r *rig) apply(body *wire.GrantsBody) wire.GrantsAck {
	r.t.Helper()
	ack, err := r.c.ApplyGrants(r.ctx, body)
	if err != nil {
		r.t.Fatal(err)
	}
	return ack
}

func ptr[T any](v T) *T { return &v }

func hash(code string) string { return wire.CodeHash(lockerID, code) }

func body(ops ...wire.GrantOp) *wire.GrantsBody {
	return &wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: nextIssued(t0), ExpiresAt: t0.Add(time.Hour), Ops: ops}
}

func depositOp(id string, version int64, code, size string, compartment int) wire.GrantOp {
	return wire.GrantOp{Op: "put", GrantID: id, Version: version, Action: "deposit", Size: size, Compartment: compartment,
		ParcelID: "JT" + id, Holder: "13488888888", CodeHash: hash(code), ValidUntil: ptr(t0.Add(24 * time.Hour)),
		Pickup: &wire.PickupSpec{GrantID: id + "-p", Holder: "13499996666", CodeHash: hash(code + "9"),
			ValidUntil: ptr(t0.Add(72 * time.Hour))}}
}

func TestDepositAndPickup(t *testing.T) {
	r := newRig(t, "S S M L")
	r.expectTypes("started")
	ack := r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	if ack.Applied != 1 || ack.Stale != 0 || len(ack.Rejected) != 0 {
		t.Fatalf("ack = %+v", ack)
	}

	// The courier's code opens the smallest free compartment that fits: 3 (M).
	r.keys("123456#")
	if got := r.cab.Releases(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("releases = %v, want [3]", got)
	}
	if d := r.cab.Display(); d[0] != "Door 03 open" {
		t.Fatalf("display = %q", d)
	}
	r.door(3, true)
	r.parcel(3, true)
	r.door(3, false)
	r.expectTypes("lock_released", "door_opened", "door_closed", "deposited")
	if s := r.state(3); s != "occupied" {
		t.Fatalf("state = %s, want occupied", s)
	}
	// The deposit code is used up.
	r.keys("123456#")
	if n := len(r.cab.Releases()); n != 1 {
		t.Fatalf("used-up deposit code opened a door: %v", r.cab.Releases())
	}
	r.expectTypes("grant_rejected")

	// The recipient's code (the nested pickup grant) opens compartment 3.
	r.keys("1234569#")
	if got := r.cab.Releases(); len(got) != 2 || got[1] != 3 {
		t.Fatalf("releases = %v", got)
	}
	r.door(3, true)
	r.parcel(3, false)
	r.door(3, false)
	r.mu.Lock()
	picked := r.traces[len(r.traces)-1]
	r.mu.Unlock()
	r.expectTypes("lock_released", "door_opened", "door_closed", "picked_up")
	if picked.Actor != "134****6666" || picked.ParcelID != "JTg-1" || picked.GrantID != "g-1-p" {
		t.Fatalf("picked_up = %+v", picked)
	}
	if s := r.state(3); s != "free" {
		t.Fatalf("state = %s, want free", s)
	}

	// Every event is in the outbox, seq gapless from 1, ids as the protocol says.
	evs, err := r.c.PendingEvents(r.ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		var tr wire.Trace
		if err := json.Unmarshal(e.Payload, &tr); err != nil {
			t.Fatal(err)
		}
		if tr.Seq != int64(i+1) || e.Seq != tr.Seq || tr.EventID != fmt.Sprintf("%s-%d", lockerID, i+1) {
			t.Fatalf("event %d: seq %d id %s", i, tr.Seq, tr.EventID)
		}
		if strings.Contains(string(e.Payload), "88888888") || strings.Contains(string(e.Payload), "99996666") {
			t.Fatalf("a phone number leaked: %s", e.Payload)
		}
	}
	if len(evs) != 10 {
		t.Fatalf("outbox has %d events, want 10", len(evs))
	}
	st, err := r.c.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastSeq != 10 || st.Outbox != 10 || st.Compartments.Total != 4 || st.Compartments.Free != 4 {
		t.Fatalf("status = %+v", st)
	}
	if err := r.c.AckEvent(r.ctx, 1); err != nil {
		t.Fatal(err)
	}
	if evs, _ := r.c.PendingEvents(r.ctx, 0, 1); evs[0].Seq != 2 {
		t.Fatalf("after ack of 1 the first pending is %d", evs[0].Seq)
	}
}

func TestDepositCancelledAndPickupIncomplete(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(depositOp("g-1", 1, "111111", "M", 0)))
	r.types()
	r.keys("111111#")
	r.door(1, true)
	r.door(1, false) // nothing put in
	r.expectTypes("lock_released", "door_opened", "door_closed", "deposit_cancelled")
	if s := r.state(1); s != "free" {
		t.Fatalf("state = %s", s)
	}
	// Nothing was used up: the same code works again.
	r.keys("111111#")
	r.door(1, true)
	r.parcel(1, true)
	r.door(1, false)
	r.expectTypes("lock_released", "door_opened", "door_closed", "deposited")

	// A pickup with 2 uses: closed with the parcel inside → incomplete, still usable.
	r.apply(body(wire.GrantOp{Op: "put", GrantID: "g-1-p", Version: 2, Action: "pickup", Compartment: 1, ParcelID: "JTg-1",
		Holder: "13499996666", CodeHash: hash("222222"), Uses: ptr(2), ValidUntil: ptr(t0.Add(time.Hour))}))
	r.keys("222222#")
	r.door(1, true)
	r.door(1, false)
	r.expectTypes("lock_released", "door_opened", "door_closed", "pickup_incomplete")
	if s := r.state(1); s != "occupied" {
		t.Fatalf("state = %s", s)
	}
	r.keys("222222#")
	r.door(1, true)
	r.parcel(1, false)
	r.door(1, false)
	r.expectTypes("lock_released", "door_opened", "door_closed", "picked_up")
}

func TestReservedCompartment(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(depositOp("res", 1, "333333", "", 1), depositOp("bysize", 1, "444444", "M", 0)))
	if s := r.state(1); s != "reserved" {
		t.Fatalf("state = %s, want reserved", s)
	}
	// A size-based deposit does not take the reserved compartment.
	r.keys("444444#")
	if got := r.cab.Releases(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("releases = %v, want [2]", got)
	}
	r.door(2, true)
	r.parcel(2, true)
	r.door(2, false)
	r.apply(body(depositOp("bysize2", 1, "555555", "M", 0)))
	r.types()
	r.keys("555555#")
	if n := len(r.cab.Releases()); n != 1 {
		t.Fatalf("a size-based deposit opened the reserved compartment")
	}
	r.expectTypes("grant_rejected")
	if d := r.cab.Display(); d[0] != "No free door" {
		t.Fatalf("display = %q", d)
	}
	// The holder of the reservation gets it.
	r.keys("333333#")
	if got := r.cab.Releases(); got[len(got)-1] != 1 {
		t.Fatalf("releases = %v", got)
	}
}

func TestTransferStopsOldCode(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("res", 1, "333333", "", 1)))
	moved := depositOp("res", 2, "777777", "", 1)
	moved.Holder = "13500001111"
	r.apply(body(moved))
	r.types()
	r.keys("333333#")
	if n := len(r.cab.Releases()); n != 0 {
		t.Fatal("the old code still opens")
	}
	r.expectTypes() // a wrong code: no trace, counted
	r.keys("777777#")
	if n := len(r.cab.Releases()); n != 1 {
		t.Fatal("the new code does not open")
	}
}

func TestGrantVersionsAndSnapshot(t *testing.T) {
	r := newRig(t, "S M")
	b := body(depositOp("g-1", 3, "123456", "S", 0))
	if ack := r.apply(b); ack.Applied != 1 {
		t.Fatalf("ack = %+v", ack)
	}
	// The same envelope again changes nothing.
	if ack := r.apply(b); ack.Applied != 0 || ack.Stale != 1 {
		t.Fatalf("replay ack = %+v", ack)
	}
	// Revoke at 4, then a replayed put at 3 (stale) and even at 4 (stale) cannot bring it back.
	if ack := r.apply(body(wire.GrantOp{Op: "revoke", GrantID: "g-1", Version: 4})); ack.Applied != 1 {
		t.Fatalf("revoke ack = %+v", ack)
	}
	if ack := r.apply(body(depositOp("g-1", 4, "123456", "S", 0))); ack.Stale != 1 {
		t.Fatalf("put after revoke ack = %+v", ack)
	}
	r.types()
	r.keys("123456#")
	if len(r.cab.Releases()) != 0 {
		t.Fatal("revoked grant opened a door")
	}
	// Code hashes are unique among grants in force.
	ack := r.apply(body(depositOp("g-2", 1, "888888", "S", 0), depositOp("g-3", 1, "888888", "S", 0)))
	if ack.Applied != 1 || len(ack.Rejected) != 1 || ack.Rejected[0].GrantID != "g-3" ||
		ack.Rejected[0].Error != "code_hash in use by another grant" {
		t.Fatalf("ack = %+v", ack)
	}
	// Bad ops are rejected one by one.
	bad := []wire.GrantOp{
		{Op: "put", GrantID: "x1", Version: 1, Action: "deposit", CodeHash: hash("101010"), ValidUntil: ptr(t0.Add(time.Hour))},
		{Op: "put", GrantID: "x2", Version: 1, Action: "pickup", Compartment: 1, ParcelID: "P", CodeHash: "ABC", ValidUntil: ptr(t0.Add(time.Hour))},
		{Op: "put", GrantID: "x3", Version: 1, Action: "teleport", CodeHash: hash("202020")},
		{Op: "put", GrantID: "x4", Version: 1, Action: "reclaim", Compartment: 9, CodeHash: hash("303030"), ValidUntil: ptr(t0.Add(time.Hour))},
		{Op: "put", GrantID: "", Version: 1},
		{Op: "frobnicate", GrantID: "x5", Version: 1},
	}
	ack = r.apply(body(bad...))
	if ack.Applied != 0 || len(ack.Rejected) != len(bad) {
		t.Fatalf("ack = %+v", ack)
	}
	// A snapshot revokes every grant it does not name.
	snap := body(depositOp("g-9", 1, "999999", "M", 0))
	snap.Snapshot = true
	r.apply(snap)
	r.keys("888888#")
	if len(r.cab.Releases()) != 0 {
		t.Fatal("a grant left out of a snapshot still opens")
	}
	r.keys("999999#")
	if len(r.cab.Releases()) != 1 {
		t.Fatal("the snapshot's grant does not open")
	}
}

func TestLockoutDoublesAndSurvivesRestart(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.types()
	for i := 0; i < 5; i++ {
		r.keys("000000#")
	}
	r.expectTypes("keypad_lockout")
	if d := r.cab.Display(); d[0] != "Keypad locked" || d[1] != "Wait 1m 00s" {
		t.Fatalf("display = %q", d)
	}
	// While locked, even the right code does nothing.
	r.keys("123456#")
	if len(r.cab.Releases()) != 0 {
		t.Fatal("a locked keypad opened a door")
	}
	r.restart()
	r.types()
	r.keys("123456#")
	if len(r.cab.Releases()) != 0 {
		t.Fatal("the lockout did not survive a restart")
	}
	r.clock.Advance(61 * time.Second)
	for i := 0; i < 5; i++ {
		r.keys("000000#")
	}
	r.expectTypes("keypad_lockout")
	if d := r.cab.Display(); d[1] != "Wait 2m 00s" {
		t.Fatalf("second lockout: display = %q, want a 2 min wait", d)
	}
	r.clock.Advance(121 * time.Second)
	r.keys("123456#")
	if len(r.cab.Releases()) != 1 {
		t.Fatal("the right code does not open after the lockout")
	}
}

func TestCommands(t *testing.T) {
	r := newRig(t, "M M")
	r.types()
	do := func(id, action string, n int) wire.CommandResult {
		res, err := r.c.Execute(r.ctx, &wire.Command{Kind: "command", LockerID: lockerID, CommandID: id, Action: action, Compartment: n})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := do("c-1", "disable", 1); !res.OK {
		t.Fatalf("disable: %+v", res)
	}
	if s := r.state(1); s != "disabled" {
		t.Fatalf("state = %s", s)
	}
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	if got := r.cab.Releases(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("deposit went to %v, want [2] (1 is disabled)", got)
	}
	if res := do("c-1", "enable", 1); res.OK || res.Error != "duplicate" {
		t.Fatalf("repeated command id: %+v", res)
	}
	if res := do("c-2", "open", 1); !res.OK {
		t.Fatalf("open: %+v", res)
	}
	if got := r.cab.Releases(); got[len(got)-1] != 1 {
		t.Fatalf("releases = %v", got)
	}
	if res := do("c-3", "open", 7); res.OK {
		t.Fatal("opened a compartment that does not exist")
	}
	r.restart()
	if res := do("c-2", "open", 1); res.OK || res.Error != "duplicate" {
		t.Fatalf("command id forgotten after restart: %+v", res)
	}
}

func TestExpiryAndReclaim(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	r.door(1, true)
	r.parcel(1, true)
	r.door(1, false)
	r.types()
	r.clock.Advance(73 * time.Hour)
	r.tick()
	r.tick()
	r.expectTypes("pickup_expired")
	if s := r.state(1); s != "expired" {
		t.Fatalf("state = %s", s)
	}
	r.keys("1234569#")
	if len(r.cab.Releases()) != 1 {
		t.Fatal("an expired pickup code opened the door")
	}
	r.types()
	now := r.clock.Now()
	r.apply(&wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Ops: []wire.GrantOp{
		{Op: "put", GrantID: "rc-1", Version: 1, Action: "reclaim", Compartment: 1, Holder: "13400000000",
			CodeHash: hash("654321"), ValidUntil: ptr(now.Add(time.Hour))}}})
	r.keys("654321#")
	r.door(1, true)
	r.parcel(1, false)
	r.door(1, false)
	r.expectTypes("lock_released", "door_opened", "door_closed", "reclaimed")
	if s := r.state(1); s != "free" {
		t.Fatalf("state = %s", s)
	}
}

func TestForcedDoorAndLockFault(t *testing.T) {
	r := newRig(t, "M M L")
	r.types()
	r.door(2, true)
	r.expectTypes("door_opened", "door_forced")
	r.door(2, false)
	r.expectTypes("door_closed")

	// The lock of the first fitting compartment is jammed: hal reports it
	// after its retry; the courier's deposit moves on to the next one.
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	if got := r.cab.Releases(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("releases = %v", got)
	}
	if !r.cab.LED(1) {
		t.Fatal("the released compartment's LED is dark")
	}
	r.types()
	r.event(hal.Event{Kind: hal.LockReleased, Compartment: 1, Err: fmt.Errorf("%w (2 pulses)", hal.ErrLockFault)})
	r.expectTypes("lock_fault", "lock_released")
	if got := r.cab.Releases(); len(got) != 2 || got[1] != 2 {
		t.Fatalf("after the fault the deposit opened %v, want compartment 2 next", got)
	}
	if r.state(1) != "fault" || r.cab.LED(1) || !r.cab.LED(2) {
		t.Fatalf("state 1 = %s, LED1 %v LED2 %v", r.state(1), r.cab.LED(1), r.cab.LED(2))
	}
	r.door(2, true)
	r.parcel(2, true)
	r.door(2, false)
	r.expectTypes("door_opened", "door_closed", "deposited")
	if r.cab.LED(2) {
		t.Fatal("the LED stays lit after the door closed")
	}
	// A faulty compartment is not offered again; enable (the technician
	// vouches for it) brings it back.
	res, _ := r.c.Execute(r.ctx, &wire.Command{CommandID: "c-en", Action: "enable", Compartment: 1})
	if !res.OK || r.state(1) != "free" {
		t.Fatalf("enable: %+v, state %s", res, r.state(1))
	}

	// Hardware that never reports: the controller's own time-out catches it.
	r.apply(body(depositOp("g-2", 1, "222222", "L", 0)))
	r.keys("222222#")
	r.types()
	r.clock.Advance(11 * time.Minute)
	r.tick()
	r.expectTypes("lock_fault")
	if s := r.state(3); s != "fault" {
		t.Fatalf("state = %s, want fault", s)
	}
	// A release that is confirmed later clears the lock fault.
	r.event(hal.Event{Kind: hal.LockReleased, Compartment: 3})
	if s := r.state(3); s != "free" {
		t.Fatalf("after a confirmed release state = %s, want free", s)
	}
}

func TestDoorLeftOpenRepeats(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	r.door(1, true)
	r.types()
	r.clock.Advance(time.Minute)
	r.tick()
	r.expectTypes()
	r.clock.Advance(61 * time.Second)
	r.tick()
	r.tick()
	r.expectTypes("door_left_open")
	r.clock.Advance(4 * time.Minute)
	r.tick()
	r.expectTypes()
	r.clock.Advance(time.Minute)
	r.tick()
	r.expectTypes("door_left_open")
	r.door(1, false)
	r.clock.Advance(10 * time.Minute)
	r.tick()
	r.expectTypes("door_closed", "deposit_cancelled")
}

func TestSensorFaultTakesCompartmentOutOfUse(t *testing.T) {
	r := newRig(t, "M M")
	r.types()
	r.event(hal.Event{Kind: hal.SensorFault, Compartment: 1, Err: fmt.Errorf("door sensor chatters: 9 changes in 2s")})
	r.mu.Lock()
	tr := r.traces[0]
	r.mu.Unlock()
	r.expectTypes("sensor_fault")
	if tr.Compartment != 1 || !strings.Contains(tr.Reason, "chatters") || r.state(1) != "fault" {
		t.Fatalf("trace %+v, state %s", tr, r.state(1))
	}
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	if got := r.cab.Releases(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("a deposit went to %v, want 2 (1 has a faulty sensor)", got)
	}
	r.event(hal.Event{Kind: hal.SensorRecovered, Compartment: 1})
	if r.state(1) != "free" {
		t.Fatalf("after recovery state = %s", r.state(1))
	}
	r.types()
	r.event(hal.Event{Kind: hal.SensorFault, Err: fmt.Errorf("expander X1 (0x20 on bus 1): no answer")})
	r.expectTypes("sensor_fault")
}

func TestRejectEnvelopeRateLimit(t *testing.T) {
	r := newRig(t, "M")
	r.types()
	for i := 0; i < 5; i++ {
		if err := r.c.RejectEnvelope(r.ctx, "bad signature"); err != nil {
			t.Fatal(err)
		}
	}
	r.expectTypes("envelope_rejected")
	r.clock.Advance(11 * time.Second)
	if err := r.c.RejectEnvelope(r.ctx, "unknown key_id"); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	last := r.traces[len(r.traces)-1]
	r.mu.Unlock()
	if last.Suppressed != 4 || last.Reason != "unknown key_id" {
		t.Fatalf("second envelope_rejected = %+v, want 4 suppressed", last)
	}
}

func TestBootReconcilesWithSensors(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	r.door(1, true)
	r.parcel(1, true)
	r.types()
	// Power cut while the door is open; the courier closes it meanwhile, and
	// someone opens door 2 by force.
	r.stop()
	r.cab.door[1] = false
	r.cab.door[2] = true
	r.start()
	got := r.types()
	want := "door_closed deposited door_opened door_forced started" // door 2 was forced while the locker was down
	if strings.Join(got, " ") != want {
		t.Fatalf("boot traces = %v, want %s", got, want)
	}
	if s := r.state(1); s != "occupied" {
		t.Fatalf("state = %s", s)
	}
	if n := len(r.cab.Releases()); n != 1 {
		t.Fatalf("boot opened a door: %v", r.cab.Releases())
	}
}

func TestMaskHolder(t *testing.T) {
	for in, want := range map[string]string{
		"13488888888": "134****8888", "+8613488888888": "+86*******8888", "1234567": "*******", "": "",
	} {
		if got := wire.MaskHolder(in); got != want {
			t.Errorf("MaskHolder(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUntrustedClockExpiresNothing(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	r.door(1, true)
	r.parcel(1, true)
	r.door(1, false)
	// Power cut; the board comes back without a real-time clock: 1970.
	r.stop()
	r.clock.Set(time.Unix(0, 0).UTC())
	r.types()
	r.start()
	r.mu.Lock()
	started := r.traces[len(r.traces)-1]
	r.mu.Unlock()
	r.types()
	ts, _ := time.Parse(wire.TimeFormat, started.Time)
	if started.Type != "started" || !started.TimeEstimated || ts.Before(t0) {
		t.Fatalf("started = %+v: want an estimated time not before the last trusted one", started)
	}
	// Days pass on the untrusted clock: nothing expires.
	r.clock.Advance(100 * time.Hour)
	r.tick()
	r.expectTypes()
	if s := r.state(1); s != "occupied" {
		t.Fatalf("state = %s on an untrusted clock", s)
	}
	// NTP sets the clock: the pickup grant (72 h) has ended, and now it expires.
	r.clock.Set(t0.Add(80 * time.Hour))
	r.tick()
	r.expectTypes("pickup_expired")
}

func TestAKnownCodeDoesNotResetTheLockout(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	// An attacker holds a code that matches a grant but opens nothing: an
	// ended pickup grant's.
	until := t0.Add(time.Minute)
	r.apply(body(wire.GrantOp{Op: "put", GrantID: "g-ended", Version: 1, Action: "pickup", Compartment: 1, ParcelID: "X",
		CodeHash: hash("777777"), ValidUntil: &until}))
	r.clock.Advance(2 * time.Minute)
	r.types()
	for round := 0; round < 3; round++ {
		for i := 0; i < 4; i++ {
			r.keys("000000#")
		}
		r.keys("777777#") // known, but cannot be used: not a reset
	}
	if got := r.types(); !strings.Contains(strings.Join(got, " "), "keypad_lockout") {
		t.Fatalf("interleaving a known code avoided the lockout: %v", got)
	}
}

func TestServiceMenu(t *testing.T) {
	r := newRig(t, "M M M")
	r.apply(body(wire.GrantOp{Op: "put", GrantID: "svc-1", Version: 1, Action: "service", Holder: "13700001111",
		CodeHash: hash("99887766"), ValidUntil: ptr(t0.Add(time.Hour))}))
	r.types()
	r.keys("99887766#")
	if d := r.cab.Display(); d[0] != "1Open 2Off 3On" {
		t.Fatalf("service menu: %q", d)
	}
	r.keys("1")
	r.keys("2#") // open door 2
	if got := r.cab.Releases(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("releases = %v", got)
	}
	r.keys("2")
	r.keys("3#") // disable 3
	r.keys("3")
	r.keys("3#") // enable 3
	r.keys("*")  // leave
	r.mu.Lock()
	trs := append([]wire.Trace(nil), r.traces...)
	r.mu.Unlock()
	r.expectTypes("lock_released", "compartment_disabled", "compartment_enabled")
	for _, tr := range trs {
		if tr.Actor != "137****1111" || tr.GrantID != "svc-1" {
			t.Fatalf("service trace does not name the masked technician: %+v", tr)
		}
	}
	if d := r.cab.Display(); d[0] != "Enter code" {
		t.Fatalf("after * the display is %q", d)
	}
	// Out of the menu, digits are a code again.
	r.keys("99#")
	if len(r.cab.Releases()) != 1 {
		t.Fatal("digits after leaving the menu opened a door")
	}
}

func TestSelfTest(t *testing.T) {
	r := newRig(t, "S M L")
	r.apply(body(depositOp("g-1", 1, "123456", "L", 0)))
	r.keys("123456#") // compartment 3 is in use: skipped without a service code
	r.types()
	var got []SelfTestResult
	done := make(chan struct{})
	go func() {
		res, err := r.c.SelfTest(r.ctx, false, "lockerctl", nil)
		if err != nil {
			t.Error(err)
		}
		got = res
		close(done)
	}()
	waittest.For(t, 5*time.Second, func() bool { return len(r.cab.Releases()) >= 3 }, "the self-test's releases")
	if rel := r.cab.Releases(); len(rel) != 3 || rel[1] != 1 || rel[2] != 2 {
		t.Fatalf("releases = %v, want the deposit's 3 then 1 and 2", rel)
	}
	r.event(hal.Event{Kind: hal.LockReleased, Compartment: 1})
	r.event(hal.Event{Kind: hal.LockReleased, Compartment: 2, Err: hal.ErrLockFault})
	<-done
	want := "1:ok 2:lock_fault 3:skipped"
	var have []string
	for _, res := range got {
		have = append(have, fmt.Sprintf("%d:%s", res.Compartment, res.Result))
	}
	sort.Strings(have)
	if strings.Join(have, " ") != want {
		t.Fatalf("results = %v, want %s", have, want)
	}
	types := strings.Join(r.types(), " ")
	if !strings.Contains(types, "lock_fault") || !strings.HasSuffix(types, "selftest") {
		t.Fatalf("traces = %s", types)
	}
	if _, err := r.c.SelfTest(r.ctx, false, "x", nil); err != nil {
		t.Fatalf("a second self-test: %v", err)
	}
}

func TestEveryMessageInEveryLanguage(t *testing.T) {
	for lang, m := range messages {
		for id := msgIdle; id <= msgSelfTestDone; id++ {
			l, ok := m[id]
			if !ok || l[0] == "" {
				t.Errorf("%s: message %d missing", lang, id)
			}
			for _, line := range l {
				width := 0
				for _, r := range line {
					width++
					if r > 0x2e80 {
						width++ // a Chinese character takes two columns
					}
				}
				if lang == "zh" {
					col := 0
					for _, r := range strings.ReplaceAll(line, "%s", "07") {
						if r > 0x7f && col%2 != 0 {
							t.Errorf("zh message %d line %q: %q starts on an odd column", id, line, r)
						}
						if r > 0x7f {
							col += 2
						} else {
							col++
						}
					}
				}
				if width > 17 { // "%s" stands for 2 columns
					t.Errorf("%s: message %d line %q is %d columns, more than 16", lang, id, line, width-2)
				}
			}
		}
	}
}

func TestChineseDisplay(t *testing.T) {
	r := &rig{t: t, path: filepath.Join(t.TempDir(), "locker.db"), cab: newFakeCabinet("M"), clock: clocktest.New(t0)}
	r.lang = "zh"
	r.start()
	if d := r.cab.Display(); d[0] != "请输入取件码" {
		t.Fatalf("display = %q", d)
	}
	for i := 0; i < 5; i++ {
		r.keys("000000#")
	}
	if d := r.cab.Display(); d[0] != "键盘已锁定" || d[1] != "请等待01分00秒" {
		t.Fatalf("display = %q", d)
	}
	if _, err := New(Options{LockerID: lockerID, Store: r.st, Cabinet: r.cab, Language: "xx"}); err == nil {
		t.Fatal("an unknown language was accepted")
	}
}

func TestDoorClosedTooSoonIsASensorFault(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	r.types()
	at := time.Now()
	r.event(hal.Event{Kind: hal.DoorChanged, Compartment: 1, On: true, At: at})
	r.parcel(1, true)
	// 60 ms later the sensor says closed: nobody deposits that fast.
	r.event(hal.Event{Kind: hal.DoorChanged, Compartment: 1, On: false, At: at.Add(60 * time.Millisecond)})
	r.expectTypes("door_opened", "sensor_fault")
	if s := r.state(1); s != "free" {
		t.Fatalf("state = %s: the deposit must not be concluded on a doubted sensor", s)
	}
	// The sensor comes back; the real close, seconds later, ends the deposit.
	r.event(hal.Event{Kind: hal.DoorChanged, Compartment: 1, On: true, At: at.Add(time.Second)})
	r.event(hal.Event{Kind: hal.DoorChanged, Compartment: 1, On: false, At: at.Add(5 * time.Second)})
	r.expectTypes("door_closed", "deposited")
}

func TestServiceOpenNeedsAServiceCode(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(wire.GrantOp{Op: "put", GrantID: "svc-2", Version: 1, Action: "service", Compartment: 2, Holder: "13700001111",
		CodeHash: hash("55667788"), ValidUntil: ptr(t0.Add(time.Hour))}, depositOp("g-1", 1, "123456", "M", 0)))
	r.types()
	for _, tc := range []struct {
		code string
		n    int
	}{{"123456", 1}, {"55667788", 1}, {"00000000", 2}} {
		if err := r.c.ServiceOpen(r.ctx, tc.code, tc.n); !errors.Is(err, ErrNotAuthorized) {
			t.Fatalf("ServiceOpen(%d) with a %s: %v", tc.n, tc.code, err)
		}
	}
	if len(r.cab.Releases()) != 0 {
		t.Fatal("opened without a service code for that compartment")
	}
	if err := r.c.ServiceOpen(r.ctx, "55667788", 2); err != nil {
		t.Fatal(err)
	}
	if got := r.cab.Releases(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("releases = %v", got)
	}
	r.mu.Lock()
	last := r.traces[len(r.traces)-1]
	r.mu.Unlock()
	if last.Type != "lock_released" || last.Actor != "137****1111" {
		t.Fatalf("trace = %+v", last)
	}
}

func TestBootReportsWhatItFinds(t *testing.T) {
	r := newRig(t, "M M M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0), depositOp("g-2", 1, "222222", "M", 0)))
	r.keys("123456#")
	r.door(1, true)
	r.parcel(1, true)
	r.door(1, false)  // 1 holds g-1's parcel
	r.keys("222222#") // released 2, but the power goes before the door opens
	r.stop()
	r.cab.parcel[1] = false // someone emptied 1 while the board was down
	r.cab.parcel[3] = true  // and put something in 3
	r.types()
	r.start()
	got := strings.Join(r.types(), " ")
	if got != "parcel_missing release_interrupted parcel_found started" {
		t.Fatalf("boot traces = %s", got)
	}
	if r.state(1) != "occupied" || r.state(2) != "free" || r.state(3) != "fault" {
		t.Fatalf("states %s %s %s", r.state(1), r.state(2), r.state(3))
	}
	if n := len(r.cab.Releases()); n != 2 {
		t.Fatalf("boot opened a door: %v", r.cab.Releases())
	}
	// The interrupted deposit took no use: the courier's code opens again.
	r.keys("222222#")
	if n := len(r.cab.Releases()); n != 3 {
		t.Fatal("the interrupted deposit's code no longer works")
	}
}

// A large envelope takes the preloaded path: the same rules hold there.
func TestLargeEnvelopeKeepsTheRules(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(depositOp("old", 5, "900000", "M", 0)))
	// Tombstones: not in the live set the large path keeps in memory, their
	// versions looked up in chunks (store.GrantVersions).
	r.apply(body(wire.GrantOp{Op: "revoke", GrantID: "gone", Version: 3}, wire.GrantOp{Op: "revoke", GrantID: "back", Version: 3}))
	var ops []wire.GrantOp
	for i := 0; i < preloadOps+10; i++ {
		ops = append(ops, depositOp(fmt.Sprintf("g-%d", i), 1, fmt.Sprintf("%06d", 100000+i), "M", 0))
	}
	ops[3].CodeHash = hash("900000")                                          // taken by "old"
	ops[7].CodeHash = ops[6].CodeHash                                         // taken by an op of the same envelope
	ops = append(ops, depositOp("old", 5, "900001", "M", 0))                  // stale
	ops = append(ops, wire.GrantOp{Op: "revoke", GrantID: "g-9", Version: 2}) // applied in the same envelope
	ops = append(ops, depositOp("g-9", 1, "555000", "M", 0))                  // stale after that revoke
	ops = append(ops, depositOp("gone", 3, "555001", "M", 0))                 // stale: revoked at 3
	ops = append(ops, depositOp("back", 4, "555002", "M", 0))                 // newer than its tombstone
	ack := r.apply(body(ops...))
	if ack.Applied != preloadOps+10-2+1+1 || ack.Stale != 3 || len(ack.Rejected) != 2 ||
		ack.Rejected[0].GrantID != "g-3" || ack.Rejected[1].GrantID != "g-7" {
		t.Fatalf("ack = applied %d stale %d rejected %+v", ack.Applied, ack.Stale, ack.Rejected)
	}
	r.types()
	r.keys("100009#") // g-9 was revoked
	if len(r.cab.Releases()) != 0 {
		t.Fatal("a grant revoked in a large envelope opened a door")
	}
	r.keys("100008#")
	if len(r.cab.Releases()) != 1 {
		t.Fatal("a grant of a large envelope does not open")
	}
	r.keys("555001#") // "gone" stays revoked
	if len(r.cab.Releases()) != 1 {
		t.Fatal("a put no newer than its tombstone opened a door")
	}
	r.keys("555002#")
	if len(r.cab.Releases()) != 2 {
		t.Fatal("a put newer than its tombstone does not open")
	}
}

func TestOutboxIsBoundedWithoutLosingParcels(t *testing.T) {
	r := &rig{t: t, path: filepath.Join(t.TempDir(), "locker.db"), cab: newFakeCabinet("M M"), clock: clocktest.New(t0)}
	r.maxOutbox = 40
	r.start()
	for i := 0; i < 8; i++ { // 8 deposits and pickups, offline: 8 events each
		code, pick := fmt.Sprintf("%06d", 200000+i), fmt.Sprintf("%06d", 300000+i)
		op := depositOp(fmt.Sprintf("g-%d", i), 1, code, "M", 0)
		op.Pickup.CodeHash = hash(pick)
		r.apply(body(op))
		r.keys(code + "#")
		r.door(1, true)
		r.parcel(1, true)
		r.door(1, false)
		r.keys(pick + "#")
		r.door(1, true)
		r.parcel(1, false)
		r.door(1, false)
	}
	r.tick()
	evs, err := r.c.PendingEvents(r.ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) > 40 {
		t.Fatalf("%d events in an outbox bounded at 40", len(evs))
	}
	var parcels int
	var overflow wire.Trace
	for _, e := range evs {
		var tr wire.Trace
		json.Unmarshal(e.Payload, &tr)
		switch tr.Type {
		case "deposited", "picked_up":
			parcels++
		case "outbox_overflow":
			overflow = tr
		}
	}
	if parcels != 16 {
		t.Fatalf("%d parcel events kept, want all 16", parcels)
	}
	if overflow.Dropped == 0 || overflow.DroppedFrom < 1 || overflow.DroppedTo <= overflow.DroppedFrom {
		t.Fatalf("outbox_overflow = %+v", overflow)
	}
}

// When the database cannot record, no door opens, the display says so, and
// the keypad keeps answering; when it can again, the same code works.
func TestNoDoorOpensThatCannotBeRecorded(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	// Make every write fail, as a full disk or a read-only file system does.
	if err := r.st.Update(r.ctx, func(tx *store.Tx) error {
		return tx.Exec("CREATE TRIGGER no_writes BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END")
	}); err != nil {
		t.Fatal(err)
	}
	r.keys("123456#")
	if n := len(r.cab.Releases()); n != 0 {
		t.Fatal("a door opened that could not be recorded")
	}
	if d := r.cab.Display(); d[0] != "Out of service" {
		t.Fatalf("display = %q", d)
	}
	r.keys("*")
	if d := r.cab.Display(); d[0] != "Enter code" {
		t.Fatalf("the keypad stopped answering: %q", d)
	}
	if err := r.st.Update(r.ctx, func(tx *store.Tx) error { return tx.Exec("DROP TRIGGER no_writes") }); err != nil {
		t.Fatal(err)
	}
	r.keys("123456#")
	if n := len(r.cab.Releases()); n != 1 {
		t.Fatal("the code does not work once the database records again")
	}
}
