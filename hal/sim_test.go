package hal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/simulator/waittest"
)

// Tests of the hardware driving the simulated cabinet: real pins and real
// I²C transactions against the simulator's physics and injected faults.
// Every one ends by checking the simulator's invariants: the power budget,
// the pulse cap, the gap between pulses and each coil's cool-down.

// simMinPulse is how long the simulated latches need.
const simMinPulse = 30 * time.Millisecond

func loadExample(t *testing.T, name string, edits ...func(*wiring.Wiring)) *wiring.Wiring {
	t.Helper()
	w, err := wiring.Load(filepath.Join("..", "testdata", "wiring", name))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range edits {
		e(w)
	}
	return w
}

// simRig is a Hardware running over a simulated cabinet, with its events
// collected.
type simRig struct {
	cab *simulator.Cabinet
	hw  *Hardware

	mu     sync.Mutex
	evs    []Event
	notify chan struct{}
}

func newSimRig(t *testing.T, w *wiring.Wiring) *simRig {
	t.Helper()
	cab, err := simulator.New(w, simulator.Options{MinPulse: simMinPulse})
	if err != nil {
		t.Fatal(err)
	}
	return startSimRig(t, w, cab, cab.ByName, Options{}, true)
}

// startSimRig runs hal on the simulated cabinet cab with pins and opts (the
// rig's buses, display and keypad timings, and a silent logger added), and
// collects its events; at the end it checks the cabinet's invariants, and
// with spacing the pulses' spacing too.
func startSimRig(t *testing.T, w *wiring.Wiring, cab *simulator.Cabinet, pins PinSource, opts Options, spacing bool) *simRig {
	t.Helper()
	opts.Buses, opts.NoDisplayDelays, opts.ScanInterval = cab.Bus, true, time.Millisecond
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	hw, err := New(w, pins, opts)
	if err != nil {
		t.Fatal(err)
	}
	r := &simRig{cab: cab, hw: hw, notify: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = hw.Run(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-hw.Events():
				r.mu.Lock()
				r.evs = append(r.evs, ev)
				r.mu.Unlock()
				select {
				case r.notify <- struct{}{}:
				default:
				}
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = cab.Halt()
		if err := cab.CheckInvariants(); err != nil {
			t.Error(err)
		}
		if !spacing {
			return
		}
		if err := cab.CheckSpacing(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// events returns the events so far.
func (r *simRig) events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}

// wait returns the first event since index from that matches, waiting up
// to within.
func (r *simRig) wait(t *testing.T, from int, within time.Duration, what string, match func(Event) bool) (Event, int) {
	t.Helper()
	deadline := time.After(within)
	for {
		evs := r.events()
		for i := from; i < len(evs); i++ {
			if match(evs[i]) {
				return evs[i], i
			}
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("no %s within %v; events: %v", what, within, fmtEvents(evs))
		}
	}
}

// count counts the events that match.
func (r *simRig) count(match func(Event) bool) int {
	n := 0
	for _, ev := range r.events() {
		if match(ev) {
			n++
		}
	}
	return n
}

func fmtEvents(evs []Event) string {
	s := ""
	for _, ev := range evs {
		s += fmt.Sprintf("\n  %s %d on=%v key=%q src=%q err=%v", ev.Kind, ev.Compartment, ev.On, ev.Key, ev.Source, ev.Err)
	}
	return s
}

func isLock(n int) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == LockReleased && ev.Compartment == n }
}

func isDoor(n int, open bool) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == DoorChanged && ev.Compartment == n && ev.On == open }
}

func anyDoor(n int) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == DoorChanged && ev.Compartment == n }
}

func pulses(t *testing.T, cab *simulator.Cabinet, n int) int {
	t.Helper()
	s, err := cab.Stats(n)
	if err != nil {
		t.Fatal(err)
	}
	return s.Pulses
}

// Each example wiring runs on the simulator: a release opens a door and the
// sensor says so, a key press is seen (and beeps), text reaches the display.
func TestExampleWirings(t *testing.T) {
	for _, tc := range []struct {
		file  string
		comps []int // compartments to release
	}{
		{"gpio-24.yaml", []int{1, 24}},
		{"mcp23017-96.yaml", []int{1, 16, 17, 96}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := loadExample(t, tc.file)
				r := newSimRig(t, w)
				if got := len(r.hw.Compartments()); got != len(w.Compartments) {
					t.Fatalf("%d compartments, want %d", got, len(w.Compartments))
				}
				for _, n := range tc.comps {
					if err := r.hw.Release(n); err != nil {
						t.Fatal(err)
					}
				}
				for _, n := range tc.comps {
					r.wait(t, 0, 2*time.Second, fmt.Sprintf("door %d open", n), isDoor(n, true))
					ev, _ := r.wait(t, 0, 2*time.Second, fmt.Sprintf("release of %d", n), isLock(n))
					if ev.Err != nil {
						t.Errorf("release of %d: %v", n, ev.Err)
					}
					if c, _ := r.cab.Compartment(n); c.Door != simulator.DoorOpen {
						t.Errorf("compartment %d: %+v, want open", n, c)
					}
					if open, _ := r.hw.DoorOpen(n); !open {
						t.Errorf("DoorOpen(%d) false", n)
					}
				}
				if r.cab.MaxCoilsAtOnce() != 1 {
					t.Errorf("max coils at once %d, want 1", r.cab.MaxCoilsAtOnce())
				}
				n := tc.comps[0]
				if err := r.cab.CloseDoor(n); err != nil {
					t.Fatal(err)
				}
				r.wait(t, 0, time.Second, "door closed", isDoor(n, false))

				if err := r.cab.PressKey('5'); err != nil {
					t.Fatal(err)
				}
				ev, _ := r.wait(t, 0, time.Second, "key 5", func(ev Event) bool { return ev.Kind == KeyPressed })
				if ev.Key != '5' {
					t.Errorf("key %q, want 5", ev.Key)
				}
				_ = r.cab.ReleaseKey('5')
				if _, beeps := r.cab.Buzzer(); beeps != 1 {
					t.Errorf("%d beeps, want 1", beeps)
				}
				waittest.For(t, time.Second, func() bool { on, _ := r.cab.Buzzer(); return !on }, "the beep to end")

				if err := r.hw.Show("Enter code", "> 12"); err != nil {
					t.Fatal(err)
				}
				if got := r.cab.Display(); len(got) != 4 || got[0] != "Enter code" || got[1] != "> 12" {
					t.Errorf("display %q", got)
				}
				if !r.cab.Backlight() {
					t.Error("backlight off")
				}
				if n := r.count(func(ev Event) bool { return ev.Kind == SensorFault }); n != 0 {
					t.Errorf("%d sensor faults: %v", n, fmtEvents(r.events()))
				}
			})
		})
	}
}

// jammed_lock: two pulses, then ErrLockFault; the door never moves, so no
// door event.
func TestSimJammedLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSimRig(t, loadExample(t, "gpio-24.yaml"))
		if err := r.cab.SetFault(3, simulator.FaultJammedLock); err != nil {
			t.Fatal(err)
		}
		if err := r.hw.Release(3); err != nil {
			t.Fatal(err)
		}
		ev, _ := r.wait(t, 0, 10*time.Second, "release of 3", isLock(3))
		if !errors.Is(ev.Err, ErrLockFault) {
			t.Errorf("release = %v, want ErrLockFault", ev.Err)
		}
		if p := pulses(t, r.cab, 3); p != 2 {
			t.Errorf("%d pulses, want exactly 2 (one retry)", p)
		}
		time.Sleep(50 * time.Millisecond)
		if n := r.count(anyDoor(3)); n != 0 {
			t.Errorf("%d door events for a jammed lock", n)
		}
		if r.hw.Busy() {
			t.Error("busy after the fault")
		}
	})
}

// sensor_stuck_closed: the latch releases and the door springs open, but
// the sensor never says so: to the hardware this is a jammed lock
// (ErrLockFault after two pulses). The controller cannot tell them apart.
func TestSimSensorStuckClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSimRig(t, loadExample(t, "gpio-24.yaml"))
		_ = r.cab.SetFault(4, simulator.FaultSensorStuckClosed)
		if err := r.hw.Release(4); err != nil {
			t.Fatal(err)
		}
		ev, _ := r.wait(t, 0, 10*time.Second, "release of 4", isLock(4))
		if !errors.Is(ev.Err, ErrLockFault) {
			t.Errorf("release = %v, want ErrLockFault", ev.Err)
		}
		if c, _ := r.cab.Compartment(4); c.Door != simulator.DoorOpen {
			t.Errorf("door physically %s, want open", c.Door)
		}
		if p := pulses(t, r.cab, 4); p != 2 {
			t.Errorf("%d pulses, want 2", p)
		}
		if n := r.count(anyDoor(4)); n != 0 {
			t.Errorf("%d door events from a sensor stuck closed", n)
		}
	})
}

// sensor_stuck_open on a closed door: the hardware reports the door open
// (the controller, with no release in progress, will call it forced), and
// a release still pulses once, so the door really opens.
func TestSimSensorStuckOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSimRig(t, loadExample(t, "gpio-24.yaml"))
		_ = r.cab.SetFault(5, simulator.FaultSensorStuckOpen)
		r.wait(t, 0, time.Second, "door 5 open", isDoor(5, true))
		if err := r.hw.Release(5); err != nil {
			t.Fatal(err)
		}
		ev, _ := r.wait(t, 0, time.Second, "release of 5", isLock(5))
		if ev.Err != nil || pulses(t, r.cab, 5) != 1 {
			t.Errorf("release %v after %d pulses, want nil after 1", ev.Err, pulses(t, r.cab, 5))
		}
		if c, _ := r.cab.Compartment(5); c.Door != simulator.DoorOpen || c.Latched {
			t.Errorf("compartment %+v, want open and unlatched", c)
		}
		// A door that is really open gets its pulse too, and nothing else.
		_ = r.cab.SetFault(5, simulator.FaultNone)
		from := len(r.events())
		time.Sleep(r.hw.cooldown)
		if err := r.hw.Release(5); err != nil {
			t.Fatal(err)
		}
		if ev, _ := r.wait(t, from, time.Second, "second release of 5", isLock(5)); ev.Err != nil {
			t.Errorf("release of an open door: %v", ev.Err)
		}
		if p := pulses(t, r.cab, 5); p != 2 {
			t.Errorf("%d pulses in all, want 2", p)
		}
	})
}

// sensor_bounce: a few toggles within 15 ms on each move give exactly one
// event per real movement, and no SensorFault.
func TestSimSensorBounce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSimRig(t, loadExample(t, "gpio-24.yaml"))
		_ = r.cab.SetFault(6, simulator.FaultSensorBounce)
		for range 3 {
			from := len(r.events())
			if err := r.hw.Release(6); err != nil {
				t.Fatal(err)
			}
			if ev, _ := r.wait(t, from, 2*time.Second, "release", isLock(6)); ev.Err != nil {
				t.Fatalf("release: %v", ev.Err)
			}
			waittest.For(t, time.Second, func() bool { open, _ := r.hw.DoorOpen(6); return open }, "door 6 open")
			_ = r.cab.CloseDoor(6)
			waittest.For(t, time.Second, func() bool { open, _ := r.hw.DoorOpen(6); return !open }, "door 6 closed")
			time.Sleep(r.hw.cooldown)
		}
		time.Sleep(50 * time.Millisecond)
		opens, closes := r.count(isDoor(6, true)), r.count(isDoor(6, false))
		if opens != 3 || closes != 3 {
			t.Errorf("%d opens and %d closes, want 3 each: %s", opens, closes, fmtEvents(r.events()))
		}
		if n := r.count(func(ev Event) bool { return ev.Kind == SensorFault }); n != 0 {
			t.Errorf("%d sensor faults from contact bounce", n)
		}
	})
}

// Ten releases queued at once: never two coils on, every gap and cool-down
// kept (checked by the rig), a repeat of one compartment waits for its
// coil to cool down.
func TestSimPowerBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := loadExample(t, "gpio-24.yaml")
		w.Locks.Cooldown = 400 * time.Millisecond
		r := newSimRig(t, w)
		for n := 1; n <= 10; n++ {
			if err := r.hw.Release(n); err != nil {
				t.Fatal(err)
			}
		}
		for n := 1; n <= 10; n++ {
			if ev, _ := r.wait(t, 0, 3*time.Second, "release", isLock(n)); ev.Err != nil {
				t.Errorf("release of %d: %v", n, ev.Err)
			}
		}
		log := r.cab.PulseLog()
		if len(log) != 10 {
			t.Fatalf("%d pulses, want 10", len(log))
		}
		for i, p := range log {
			if p.Compartment != i+1 {
				t.Errorf("pulse %d of compartment %d: not first come, first served", i, p.Compartment)
			}
			if i > 0 && p.Start.Sub(log[i-1].End) < w.Locks.Gap {
				t.Errorf("pulse %d started %v after the last ended", i, p.Start.Sub(log[i-1].End))
			}
		}
		if r.cab.MaxCoilsAtOnce() != 1 || r.cab.BudgetViolations() != 0 {
			t.Errorf("max coils %d, violations %d", r.cab.MaxCoilsAtOnce(), r.cab.BudgetViolations())
		}
		// A repeat: close 10 and release it again at once.
		_ = r.cab.CloseDoor(10)
		waittest.For(t, time.Second, func() bool { open, _ := r.hw.DoorOpen(10); return !open }, "door 10 closed")
		from := len(r.events())
		if err := r.hw.Release(10); err != nil {
			t.Fatal(err)
		}
		r.wait(t, from, 2*time.Second, "second release of 10", isLock(10))
		log = r.cab.PulseLog()
		if len(log) != 11 {
			t.Fatalf("%d pulses, want 11", len(log))
		}
		if d := log[10].Start.Sub(log[9].End); d < w.Locks.Cooldown {
			t.Errorf("coil 10 pulsed again %v after its last pulse, cool-down %v", d, w.Locks.Cooldown)
		}
	})
}

// "Open all" of 24 compartments with a budget of two coils: staggered,
// never three at once.
func TestSimOpenAllBudgetTwo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := loadExample(t, "gpio-24.yaml")
		w.Locks.MaxEnergised = 2
		w.Locks.Gap = 15 * time.Millisecond
		r := newSimRig(t, w)
		for n := 1; n <= 24; n++ {
			if err := r.hw.Release(n); err != nil {
				t.Fatal(err)
			}
		}
		for n := 1; n <= 24; n++ {
			if ev, _ := r.wait(t, 0, 5*time.Second, "release", isLock(n)); ev.Err != nil {
				t.Errorf("release of %d: %v", n, ev.Err)
			}
		}
		if m := r.cab.MaxCoilsAtOnce(); m != 2 {
			t.Errorf("max coils at once %d, want 2", m)
		}
	})
}

// A door sensor that chatters gives one SensorFault (not one per change)
// and no door event; steady again, SensorRecovered. The poller is driven
// by hand with made-up times: slept 10 ms levels on a loaded machine
// outlasted the debounce time and made this test flaky.
func TestChatter(t *testing.T) {
	w := `locks: {active_low: true, pulse: 30ms}
sensors: {debounce: 20ms, poll: 1ms, chatter_changes: 8, chatter_window: 300ms}
compartments:
  - {number: 1, size: S, lock: L1, door: D1}
  - {number: 2, size: S, lock: L2, door: D2}
`
	r := newRig(t, w, Options{})
	door := r.pins.get("D1")
	now := time.Now()
	var evs []Event
	chatter := func(first bool, final bool) {
		evs = evs[:0]
		for i := range 40 { // 10 ms a level: shorter than the debounce time
			door.set(gpio.Level((i%2 == 0) == first))
			for range 10 {
				now = now.Add(time.Millisecond)
				evs = r.hw.pollOnce(now, evs)
			}
		}
		door.set(gpio.Level(final))
		for range 400 { // steady for longer than the window
			now = now.Add(time.Millisecond)
			evs = r.hw.pollOnce(now, evs)
		}
	}
	chatter(true, false) // ends closed, as it started
	if len(evs) != 2 {
		t.Fatalf("events %s, want a fault and a recovery", fmtEvents(evs))
	}
	if ev := evs[0]; ev.Kind != SensorFault || ev.Compartment != 1 || !errors.Is(ev.Err, ErrChatter) || ev.Source != "door" {
		t.Fatalf("event %+v, want a chatter fault of 1", ev)
	}
	if want := "9 changes within 300ms"; !strings.Contains(evs[0].Err.Error(), want) {
		t.Errorf("fault %q does not say %q (chatter_changes 8: the ninth change is the fault)", evs[0].Err, want)
	}
	if ev := evs[1]; ev.Kind != SensorRecovered || ev.Compartment != 1 || ev.Source != "door" {
		t.Fatalf("event %+v, want 1 recovered", ev)
	}
	// Chatter that ends on a new level: the change comes after the recovery.
	chatter(false, true)
	if len(evs) != 3 {
		t.Fatalf("events %s, want a fault, a recovery and the door open", fmtEvents(evs))
	}
	for i, want := range []EventKind{SensorFault, SensorRecovered, DoorChanged} {
		if ev := evs[i]; ev.Kind != want || ev.Compartment != 1 {
			t.Fatalf("event %+v, want %v", ev, want)
		}
	}
	if !evs[2].On {
		t.Error("the door reads closed after chatter that ended open")
	}
}

// chatter's counting, step by step: what update returns at each sample
// (a fault with its count, a recovery) and how many changes it holds in
// its window.
func TestChatterCounting(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	const merge, window, limit = 30 * time.Millisecond, 2 * time.Second, 8
	// Bounce: five toggles in 15 ms, every 400 ms, for 4 s: one counted
	// change per move, never a fault.
	var c chatter
	for move := range 10 {
		base := move * 400
		for i := range 6 {
			v := (move%2 == 0) == (i%2 == 0)
			if f, n, rec := c.update(v, ms(base+i*3), merge, window, limit); f || n != 0 || rec {
				t.Fatalf("move %d, toggle %d: update = (%v, %d, %v), want nothing to report", move, i, f, n, rec)
			}
		}
		// One counted change per move: the window (2 s) holds the moves of
		// the last 2 s, at most five (400 ms apart).
		if got, want := len(c.times), min(move+1, 5); got != want {
			t.Fatalf("after move %d: %d counted changes in the window, want %d (one per move)", move, got, want)
		}
	}
	// Chatter: a change every 50 ms (beyond the 30 ms merge) is counted each
	// time, and the ninth counted change in 2 s is a fault that says so,
	// once.
	var d chatter
	for i := 1; i <= 20; i++ {
		f, n, rec := d.update(i%2 == 1, ms(10000+i*50), merge, window, limit)
		wantF, wantN := i == limit+1, 0
		if wantF {
			wantN = limit + 1
		}
		if f != wantF || n != wantN || rec {
			t.Fatalf("change %d: update = (%v, %d, %v), want (%v, %d, false)", i, f, n, rec, wantF, wantN)
		}
		if len(d.times) != i {
			t.Fatalf("change %d: %d counted, want %d", i, len(d.times), i)
		}
	}
	// Not steady for the whole window yet: still faulty, nothing to report.
	if f, n, rec := d.update(false, ms(10000+20*50+2000-1), merge, window, limit); f || n != 0 || rec {
		t.Fatalf("1 ms before the window: update = (%v, %d, %v), want nothing", f, n, rec)
	}
	// Steady for the window: recovered, and the count starts again.
	if f, n, rec := d.update(false, ms(10000+20*50+2000), merge, window, limit); f || n != 0 || !rec || len(d.times) != 0 {
		t.Fatalf("update = (%v, %d, %v) with %d counted, want a recovery and 0", f, n, rec, len(d.times))
	}
	// And a new burst is a new fault, with its own count.
	for i := 1; i <= limit+1; i++ {
		f, n, _ := d.update(i%2 == 1, ms(20000+i*50), merge, window, limit)
		if (f || n != 0) != (i == limit+1) || (f && n != limit+1) {
			t.Fatalf("second burst, change %d: fault %v with count %d, want one at change %d with count %d", i, f, n, limit+1, limit+1)
		}
	}
}

// An expander that vanishes: one SensorFault naming it, no door event
// while it is gone (its sensors keep their state); back, it is
// re-initialised, reported, and its inputs read again.
func TestSimExpanderGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSimRig(t, loadExample(t, "mcp23017-96.yaml"))
		if err := r.cab.SetExpanderFault("DOORS1", true); err != nil {
			t.Fatal(err)
		}
		ev, _ := r.wait(t, 0, time.Second, "expander fault", func(ev Event) bool { return ev.Kind == SensorFault })
		if ev.Compartment != 0 || ev.Source != "expander DOORS1" || !errors.Is(ev.Err, ErrExpander) {
			t.Errorf("fault %+v", ev)
		}
		if err := r.cab.ForceDoor(3); err != nil { // the door opens while nobody can see it
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if n := r.count(func(ev Event) bool { return ev.Kind == DoorChanged }); n != 0 {
			t.Errorf("%d door events while the expander is gone", n)
		}
		if n := r.count(func(ev Event) bool { return ev.Kind == SensorFault }); n != 1 {
			t.Errorf("%d sensor faults, want 1", n)
		}
		if open, _ := r.hw.DoorOpen(3); open {
			t.Error("DoorOpen(3) changed while unreadable")
		}
		_ = r.cab.SetExpanderFault("DOORS1", false)
		_, i := r.wait(t, 0, time.Second, "recovery", func(ev Event) bool { return ev.Kind == SensorRecovered })
		if ev := r.events()[i]; ev.Source != "expander DOORS1" || ev.Compartment != 0 {
			t.Errorf("recovered %+v", ev)
		}
		r.wait(t, i, time.Second, "door 3 open, re-read", isDoor(3, true))
		if ev, j := r.wait(t, 0, time.Second, "door 3", anyDoor(3)); j < i {
			t.Errorf("door event %+v before the recovery", ev)
		}
	})
}

// A lock expander that loses its power comes back with every pin an input:
// the periodic check sees it, the driver restores its registers, and the
// locks work again.
func TestSimLockExpanderPowerCycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSimRig(t, loadExample(t, "mcp23017-96.yaml"))
		_ = r.cab.SetExpanderFault("LOCKS2", true)
		r.wait(t, 0, 2*ExpanderCheck, "fault", func(ev Event) bool {
			return ev.Kind == SensorFault && ev.Source == "expander LOCKS2"
		})
		_ = r.cab.SetExpanderFault("LOCKS2", false)
		r.wait(t, 0, time.Second, "recovery", func(ev Event) bool {
			return ev.Kind == SensorRecovered && ev.Source == "expander LOCKS2"
		})
		if err := r.hw.Release(20); err != nil {
			t.Fatal(err)
		}
		if ev, _ := r.wait(t, 0, 2*time.Second, "release", isLock(20)); ev.Err != nil {
			t.Errorf("release after the recovery: %v", ev.Err)
		}
	})
}

// The poll catches a door opened and closed within 300 ms on expanders,
// with one transaction per input expander per poll. On the bubble's fake
// clock every poll comes on time, so the count is exact (give or take the
// poll under way at either end); the cycle's real cost is what
// BenchmarkPollCycle96 measures.
func TestSimExpanderPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := loadExample(t, "mcp23017-96.yaml")
		r := newSimRig(t, w)
		time.Sleep(50 * time.Millisecond)
		before, locksBefore := r.cab.ExpanderTransactions("DOORS6"), r.cab.ExpanderTransactions("LOCKS6")
		start := time.Now()
		_ = r.cab.ForceDoor(90)
		time.Sleep(150 * time.Millisecond)
		_ = r.cab.CloseDoor(90)
		time.Sleep(150 * time.Millisecond)
		elapsed := time.Since(start)
		r.wait(t, 0, time.Second, "door 90 open", isDoor(90, true))
		r.wait(t, 0, time.Second, "door 90 closed", isDoor(90, false))
		polls := uint64(elapsed / w.Sensors.Poll)
		if txs := r.cab.ExpanderTransactions("DOORS6") - before; txs < polls-1 || txs > polls+1 {
			t.Errorf("%d transactions to one door expander in %d polls: want one per poll", txs, polls)
		}
		if l := r.cab.ExpanderTransactions("LOCKS6") - locksBefore; l > 2 {
			t.Errorf("%d transactions to an output-only expander in %v", l, elapsed)
		}
	})
}

// BenchmarkPollCycle96 measures one sensor poll cycle of the 96-compartment
// expander cabinet on the simulated buses.
func BenchmarkPollCycle96(b *testing.B) {
	w, err := wiring.Load("../testdata/wiring/mcp23017-96.yaml")
	if err != nil {
		b.Fatal(err)
	}
	cab, err := simulator.New(w, simulator.Options{})
	if err != nil {
		b.Fatal(err)
	}
	hw, err := New(w, cab.ByName, Options{Buses: cab.Bus, NoDisplayDelays: true})
	if err != nil {
		b.Fatal(err)
	}
	defer hw.Halt()
	var evs []Event
	now := time.Now()
	for b.Loop() {
		now = now.Add(w.Sensors.Poll)
		evs = hw.pollOnce(now, evs[:0])
	}
}
