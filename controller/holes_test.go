package controller

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

// Regression tests for the holes of issue 11 that live in the state
// machine and the keypad flows (docs/invariants.md names them).

// Hole 2: the service menu outlives its grant. Every action of the menu
// re-checks the grant: once it is revoked, or past valid_until, the next
// key ends the menu and opens nothing.
func TestServiceMenuEndsWithItsGrant(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(r *rig)
	}{
		{"revoked", func(r *rig) {
			r.apply(body(wire.GrantOp{Op: "revoke", GrantID: "svc-1", Version: 2}))
		}},
		{"past valid_until", func(r *rig) { r.clock.Advance(2 * time.Minute) }},
		{"transferred", func(r *rig) {
			r.apply(body(wire.GrantOp{Op: "put", GrantID: "svc-1", Version: 2, Action: "service", Holder: "13700002222",
				CodeHash: hash("55443322"), ValidUntil: ptr(t0.Add(time.Hour))}))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "M M M")
			r.apply(body(wire.GrantOp{Op: "put", GrantID: "svc-1", Version: 1, Action: "service", Holder: "13700001111",
				CodeHash: hash("99887766"), ValidUntil: ptr(t0.Add(time.Minute))}))
			r.keys("99887766#")
			r.keys("1")
			r.keys("2#") // the grant is in force: door 2 opens
			if got := r.cab.Releases(); !slices.Equal(got, []int{2}) {
				t.Fatalf("releases = %v, want [2]", got)
			}
			r.door(2, true)
			r.door(2, false)
			r.keys("1") // the menu is open again, choosing a door
			tc.end(r)
			r.keys("3#")
			r.keys("4") // and the self-test
			if got := r.cab.Releases(); !slices.Equal(got, []int{2}) {
				t.Fatalf("the menu opened doors after its grant ended: releases = %v", got)
			}
			if d := r.cab.Display(); d[0] == "1Open 2Off 3On" || strings.HasPrefix(d[0], "Door") {
				t.Fatalf("the menu is still shown: %q", d)
			}
		})
	}
}

// Hole 3: a pickup grant with no parcel id (nested in a deposit grant
// that named no parcel) was bound to the compartment only: after the parcel
// was reclaimed and the next courier deposited there, the old pickup code
// opened the new parcel. It is now bound to its parcel.
func TestPickupWithoutParcelIDEndsWithItsParcel(t *testing.T) {
	r := newRig(t, "M")
	dep := depositOp("d-1", 1, "111111", "M", 0)
	dep.ParcelID = ""
	r.apply(body(dep, wire.GrantOp{Op: "put", GrantID: "rc-1", Version: 1, Action: "reclaim", Compartment: 1,
		Holder: "13488888888", CodeHash: hash("333333"), ValidFrom: ptr(t0.Add(time.Hour)), ValidUntil: ptr(t0.Add(48 * time.Hour))}))
	r.keys("111111#")
	r.door(1, true)
	r.parcel(1, true)
	r.door(1, false)
	// The recipient never comes; the courier reclaims the parcel.
	r.clock.Advance(2 * time.Hour)
	r.keys("333333#")
	r.door(1, true)
	r.parcel(1, false)
	r.door(1, false)
	if s := r.state(1); s != "free" {
		t.Fatalf("after the reclaim compartment 1 is %s", s)
	}
	// The next courier deposits another parcel there.
	dep2 := depositOp("d-2", 1, "222222", "M", 0)
	dep2.ParcelID = ""
	r.apply(body(dep2))
	r.keys("222222#")
	r.door(1, true)
	r.parcel(1, true)
	r.door(1, false)
	r.types()
	releases := len(r.cab.Releases())
	r.keys("1111119#") // the first recipient's code
	if n := len(r.cab.Releases()); n != releases {
		t.Fatalf("the first parcel's pickup code opened the second parcel's compartment")
	}
	// The second recipient's code still opens it.
	r.keys("2222229#")
	if n := len(r.cab.Releases()); n != releases+1 {
		t.Fatalf("the second parcel's own pickup code did not open its compartment")
	}
}

// Hole 4: a remote open (or a service open) on a compartment with a
// session in progress dropped the session: no `deposited`, a free
// compartment with a parcel inside. It is now refused, and the deposit is
// recorded when the door closes.
func TestOpenNeverErasesASession(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0),
		wire.GrantOp{Op: "put", GrantID: "svc-1", Version: 1, Action: "service", Holder: "13700001111",
			CodeHash: hash("99887766"), ValidUntil: ptr(t0.Add(time.Hour))}))
	r.keys("123456#")
	r.door(1, true) // the courier has the door open
	r.parcel(1, true)
	res, err := r.c.Execute(r.ctx, &wire.Command{Kind: "command", LockerID: lockerID, CommandID: "c-1", Action: "open", Compartment: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || !strings.Contains(res.Error, "in progress") {
		t.Fatalf("open during a deposit: %+v, want a refusal", res)
	}
	if err := r.c.ServiceOpen(r.ctx, "99887766", 1); err == nil {
		t.Fatal("a service open during a deposit was accepted")
	}
	r.keys("99887766#1") // and the service menu
	r.keys("1#")
	if d := r.cab.Display(); d[0] != "Door 01 in use" {
		t.Fatalf("service menu open on a busy door shows %q", d)
	}
	if got := r.cab.Releases(); !slices.Equal(got, []int{1}) {
		t.Fatalf("releases = %v, want only the deposit's", got)
	}
	r.keys("*")
	r.door(1, false)
	if got := r.types(); !slices.Contains(got, "deposited") {
		t.Fatalf("the deposit was lost: %v", got)
	}
	if s := r.state(1); s != "occupied" {
		t.Fatalf("compartment 1 is %s, want occupied", s)
	}
	// Once the session is over, the command opens the door.
	res, _ = r.c.Execute(r.ctx, &wire.Command{Kind: "command", LockerID: lockerID, CommandID: "c-2", Action: "open", Compartment: 1})
	if !res.OK {
		t.Fatalf("open after the deposit: %+v", res)
	}
}

// Hole 5: the board dies between the coil and the door-open record, and
// the person uses the door meanwhile. Boot now reads the occupancy sensor:
// a parcel put in is deposited, one taken out is picked up.
func TestBootFinishesAReleaseUsedWhileDown(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#") // lock_released is on disk, the coil fired
	r.stop()          // … and the board browns out before door_opened
	r.cab.door[1], r.cab.parcel[1] = false, true
	r.start() // the courier opened, put the parcel in and closed the door
	if got := r.types(); !slices.Contains(got, "deposited") || slices.Contains(got, "release_interrupted") {
		t.Fatalf("boot after a deposit while down: %v", got)
	}
	if s := r.state(1); s != "occupied" {
		t.Fatalf("compartment 1 is %s", s)
	}

	r.keys("1234569#") // the recipient
	r.stop()
	r.cab.parcel[1] = false
	r.start()
	if got := r.types(); !slices.Contains(got, "picked_up") {
		t.Fatalf("boot after a pickup while down: %v", got)
	}
	if s := r.state(1); s != "free" {
		t.Fatalf("compartment 1 is %s", s)
	}

	// A release whose door did not move anything is still interrupted,
	// and a pickup's use is given back.
	r.apply(body(depositOp("g-2", 2, "654321", "M", 0)))
	r.keys("654321#")
	r.stop()
	r.start()
	if got := r.types(); !slices.Contains(got, "release_interrupted") {
		t.Fatalf("boot after an unused release: %v", got)
	}
}

// Hole 10: a flickering occupancy sensor flooded the outbox with
// parcel_missing; a stale code typed forever wrote a trace per try and
// never met the lockout.
func TestFloodsAreBounded(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.deposit("123456", 1)
	r.types()
	for i := 0; i < 200; i++ {
		r.parcel(1, i%2 == 1)
	}
	missing := 0
	for _, typ := range r.types() {
		if typ == "parcel_missing" {
			missing++
		}
	}
	if missing != 1 {
		t.Fatalf("a flickering occupancy sensor gave %d parcel_missing, want 1", missing)
	}

	// The used-up deposit code, typed again and again.
	rejected, locked := 0, false
	for i := 0; i < 50; i++ {
		r.keys("123456#")
		r.clock.Advance(10 * time.Second)
	}
	for _, typ := range r.types() {
		switch typ {
		case "grant_rejected":
			rejected++
		case "keypad_lockout":
			locked = true
		}
	}
	if rejected > 2 || !locked {
		t.Fatalf("a stale code typed 50 times: %d grant_rejected traces (want at most one per %v), lockout %v",
			rejected, RejectedTraceEvery, locked)
	}
}

// Hole 9: one clock jump into the future poisoned the clock estimate for
// good: the stored last trusted time only went up.
func TestClockJumpDoesNotPoisonTheEstimate(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.tick()
	r.clock.Advance(20 * 365 * 24 * time.Hour) // the clock jumps 20 years ahead…
	r.c.RejectEnvelope(r.ctx, "anything")      // … and a trace records the high-water mark
	r.clock.Advance(-20 * 365 * 24 * time.Hour)
	r.clock.Advance(2 * time.Minute) // NTP sets it right
	r.c.RejectEnvelope(r.ctx, "again")
	// The board restarts without a network clock: it boots in 1970.
	r.stop()
	good := r.clock.Now()
	r.clock.Set(time.Unix(0, 0))
	r.start()
	if est := r.c.Now(); est.Sub(good) > time.Hour || good.Sub(est) > time.Hour {
		t.Fatalf("estimate after the jump was corrected = %v, want about %v", est, good)
	}
	r.keys("123456#")
	if len(r.cab.Releases()) != 1 {
		t.Fatal("a valid code was refused on the estimated clock")
	}
}

// Migration 6's CHECK constraints: a state the machine does not know
// cannot be stored.
func TestStoredStatesAreChecked(t *testing.T) {
	r := newRig(t, "M")
	err := r.st.Update(r.ctx, func(tx *store.Tx) error {
		sc, err := tx.Compartment(1)
		if err != nil {
			return err
		}
		sc.State = "open-ish"
		return tx.PutCompartment(sc)
	})
	if err == nil || !strings.Contains(err.Error(), "CHECK") {
		t.Fatalf("an unknown state was stored: %v", err)
	}
	err = r.st.Update(r.ctx, func(tx *store.Tx) error {
		sc, _ := tx.Compartment(1)
		sc.State, sc.Fault = "fault", "" // a fault without its reason
		return tx.PutCompartment(sc)
	})
	if err == nil {
		t.Fatal("a fault without its reason was stored")
	}
}

// flipClock reads sane and 1970 by turns, as a board's clock does whose
// RTC and NTP disagree: one goroutine may see it trusted and another not.
type flipClock struct {
	mu stdsync.Mutex
	n  int
}

func (f *flipClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.n%2 == 0 {
		return t0.Add(time.Duration(f.n) * time.Minute)
	}
	return time.Unix(int64(f.n), 0)
}

// Hole 11: Status and Compartments read the clock estimate's high-water
// mark from other goroutines while the loop wrote it. This runs both under
// -race on a clock that is trusted and not by turns; it did not catch the
// old race (the database's own locks order most of the accesses), so the
// fix rests on clockMu guarding every access in clock.go.
func TestClockReadsFromOtherGoroutines(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "locker.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cab := newFakeCabinet("M M")
	c, err := New(Options{LockerID: lockerID, Store: st, Cabinet: cab, Clock: &flipClock{}, Tick: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.Ready()
	reader := make(chan struct{})
	go func() {
		defer close(reader)
		for i := 0; i < 300; i++ {
			c.Status(ctx)
			c.Now()
		}
	}()
	for i := 0; i < 100; i++ {
		c.RejectEnvelope(ctx, "tick") // each trace on a trusted reading moves the mark
	}
	<-reader
	cancel()
	<-done
}

// A compartment's sensor faults come from up to three sources (door,
// occupancy sensor, coil): it is in use again only when all recovered, and
// the trace names the source.
func TestSensorFaultSources(t *testing.T) {
	r := newRig(t, "M")
	r.event(hal.Event{Kind: hal.SensorFault, Compartment: 1, Source: "door", Err: hal.ErrChatter})
	r.event(hal.Event{Kind: hal.SensorFault, Compartment: 1, Source: "parcel", Err: hal.ErrChatter})
	r.event(hal.Event{Kind: hal.SensorRecovered, Compartment: 1, Source: "door"})
	if s := r.state(1); s != "fault" {
		t.Fatalf("with its occupancy sensor still faulty the compartment is %s", s)
	}
	r.event(hal.Event{Kind: hal.SensorRecovered, Compartment: 1, Source: "parcel"})
	if s := r.state(1); s != "free" {
		t.Fatalf("with every source recovered the compartment is %s", s)
	}
	r.mu.Lock()
	var contents []string
	for _, tr := range r.traces {
		if strings.HasPrefix(tr.Type, "sensor_") {
			contents = append(contents, tr.Content)
		}
	}
	r.mu.Unlock()
	if len(contents) != 4 || !strings.HasPrefix(contents[1], "Occupancy sensor 01") {
		t.Fatalf("sensor traces: %q", contents)
	}
}

// A lock board that does not answer at start leaves its compartments'
// sensors unread, and hal's "off" for them is no reading: boot took it
// for "door closed, nothing inside" and cancelled a deposit whose parcel
// was in (found by TestCrashKill9Kerong under load: a status reply cut
// short at start). Boot leaves such a compartment as stored and out of
// use, and judges it — deposit recorded — once its sensors are read.
func TestBootWaitsForUnreadSensors(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	r.door(1, true)
	r.stop() // the courier puts the parcel in and closes the door while the locker is down
	r.cab.door[1], r.cab.parcel[1] = false, true
	r.cab.unread = map[int]bool{1: true, 2: true}
	r.start()
	got := r.types()
	if slices.Contains(got, "deposit_cancelled") || slices.Contains(got, "deposited") || slices.Contains(got, "door_closed") {
		t.Fatalf("boot judged compartments it could not read: %v", got)
	}
	if !slices.Contains(got, "sensor_fault") {
		t.Errorf("no sensor_fault for the unread compartments: %v", got)
	}
	if s := r.state(2); s != "fault" {
		t.Errorf("unread empty compartment 2 is %s, want fault (out of use)", s)
	}
	r.tick() // still unread: nothing changes
	if got := r.types(); len(got) != 0 {
		t.Errorf("a tick judged unread compartments: %v", got)
	}
	r.cab.mu.Lock()
	r.cab.unread = nil
	r.cab.mu.Unlock()
	r.tick()
	got = r.types()
	if !slices.Contains(got, "deposited") || slices.Contains(got, "deposit_cancelled") {
		t.Fatalf("once read: %v, want the deposit recorded", got)
	}
	if s := r.state(1); s != "occupied" {
		t.Errorf("compartment 1 is %s", s)
	}
	if s := r.state(2); s != "free" {
		t.Errorf("compartment 2 is %s once read", s)
	}
	if !slices.Contains(got, "sensor_recovered") {
		t.Errorf("no sensor_recovered: %v", got)
	}
}

// An unread compartment's session is not judged by the stuck-release
// time-out either: a pickup released just before a power cut, used while
// the locker was down, and read only after DoorTimeout is a pickup, not a
// lock fault that gives the use back.
func TestUnreadSessionIsNotTimedOut(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.deposit("123456", 1)
	r.keys("1234569#") // the recipient's release is on disk …
	r.stop()           // … and the power goes before the door opens
	r.cab.parcel[1] = false
	r.cab.unread = map[int]bool{1: true}
	r.start()
	r.types()
	r.clock.Advance(r.c.opts.DoorTimeout + time.Minute)
	r.tick()
	if got := r.types(); slices.Contains(got, "lock_fault") {
		t.Fatalf("the time-out judged an unread compartment: %v", got)
	}
	r.cab.mu.Lock()
	r.cab.unread = nil
	r.cab.mu.Unlock()
	r.tick()
	if got := r.types(); !slices.Contains(got, "picked_up") {
		t.Fatalf("once read: %v, want picked_up", got)
	}
}
