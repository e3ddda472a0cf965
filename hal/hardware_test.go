package hal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"

	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator/waittest"
)

// rigWiring: 3 compartments on an active-low relay board; doors read high
// when open; compartment 1 has an occupancy sensor that reads low when a
// parcel is there.
const rigWiring = `name: rig
locks: {active_low: true, pulse: 30ms}
sensors: {parcel_present_low: true, debounce: 40ms, poll: 1ms}
keypad:
  rows: [R1, R2, R3, R4]
  cols: [C1, C2, C3, C4]
display: {rs: RS, e: E, data: [DB4, DB5, DB6, DB7]}
compartments:
  - {number: 1, size: S, lock: L1, door: D1, parcel: P1}
  - {number: 2, size: M, lock: L2, door: D2}
  - {number: 3, size: XL, lock: L3, door: D3}
`

// rig is a Hardware over fake pins.
type rig struct {
	hw     *Hardware
	pins   *pinSet
	matrix *matrix
}

// newRig builds the hardware with doors closed and no parcel.
func newRig(t *testing.T, yaml string, opts Options) *rig {
	t.Helper()
	w, err := wiring.Parse([]byte(yaml), "rig.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{pins: newPinSet()}
	r.matrix = newMatrix(r.pins)
	for _, c := range w.Compartments {
		r.pins.get(c.Door).set(gpio.Low) // closed
		if c.Parcel != "" {
			r.pins.get(c.Parcel).set(gpio.High) // absent
		}
	}
	opts.NoDisplayDelays = true
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r.hw, err = New(w, r.pins.source, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.hw.Halt() })
	return r
}

// run starts Run; the returned func stops it and returns its result.
func (r *rig) run(t *testing.T) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- r.hw.Run(ctx) }()
	t.Cleanup(cancel)
	return func() error {
		cancel()
		select {
		case err := <-res:
			return err
		case <-time.After(time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}
}

// next waits for the next event.
func (r *rig) next(t *testing.T, within time.Duration) Event {
	t.Helper()
	select {
	case ev := <-r.hw.Events():
		return ev
	case <-time.After(within):
		t.Fatalf("no event within %v", within)
		return Event{}
	}
}

// quiet checks that no event comes for d.
func (r *rig) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-r.hw.Events():
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

func TestNewMissingPin(t *testing.T) {
	w, err := wiring.Parse([]byte(`compartments:
  - {number: 1, size: S, lock: GPIO17, door: GPIO24}
  - {number: 2, size: S, lock: GPIO27, door: GPIO25}
  - {number: 3, size: S, lock: GPIO22, door: GPIO99}
`), "w.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pins := newPinSet()
	pins.missing["GPIO99"] = true
	_, err = New(w, pins.source, Options{})
	if !errors.Is(err, ErrNoPin) {
		t.Fatalf("New = %v, want ErrNoPin", err)
	}
	if want := `hal: no such pin "GPIO99" (door of compartment 3)`; err.Error() != want {
		t.Errorf("New error\n got %s\nwant %s", err, want)
	}
	if recs := pins.bus.records(); len(recs) != 0 {
		t.Errorf("New touched pins before finding them all: %v", recs)
	}
}

func TestNewBadArgs(t *testing.T) {
	pins := newPinSet()
	if _, err := New(nil, pins.source, Options{}); err == nil {
		t.Error("New(nil wiring) succeeded")
	}
	w := &wiring.Wiring{Compartments: []wiring.Compartment{{Number: 1, Size: "S", Lock: "L", Door: "D"}}}
	if _, err := New(w, pins.source, Options{}); err == nil || !strings.HasPrefix(err.Error(), "hal: wiring: locks: pulse") {
		t.Errorf("New(incomplete wiring) = %v", err)
	}
	w2, _ := wiring.Parse([]byte(rigWiring), "rig.yaml")
	if _, err := New(w2, nil, Options{}); err == nil {
		t.Error("New(nil pins) succeeded")
	}
}

func TestNewConfiguresPins(t *testing.T) {
	r := newRig(t, rigWiring, Options{})
	recs := r.pins.bus.records()
	// Every lock is written off (high: active low) before any other pin is
	// touched.
	for i, rec := range recs[:3] {
		if want := "L" + string(rune('1'+i)); rec.pin != want || rec.in || rec.l != gpio.High {
			t.Errorf("write %d = %+v, want %s high", i, rec, want)
		}
	}
	for _, rec := range recs[3:] {
		if strings.HasPrefix(rec.pin, "L") {
			t.Errorf("lock written after the first three writes: %+v", rec)
		}
	}
	for _, name := range []string{"D1", "D2", "D3", "P1", "C1", "C4"} {
		p := r.pins.get(name)
		if p.isOut || p.ins != 1 || p.pull != gpio.PullUp || p.edge != gpio.NoEdge {
			t.Errorf("%s: out %v, %d In calls, pull %v, edge %v; want an input with pull-up, no edge", name, p.isOut, p.ins, p.pull, p.edge)
		}
	}
	for _, name := range []string{"R1", "R4"} {
		if p := r.pins.get(name); !p.isOut || p.get() != gpio.High {
			t.Errorf("keypad %s not driven high", name)
		}
	}
	got := r.hw.Compartments()
	want := []Compartment{{1, "S", true}, {2, "M", false}, {3, "XL", false}}
	if len(got) != len(want) {
		t.Fatalf("Compartments = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Compartments[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestNewPull(t *testing.T) {
	for pull, want := range map[string]gpio.Pull{"down": gpio.PullDown, "none": gpio.Float} {
		r := newRig(t, strings.Replace(rigWiring, "sensors: {", "sensors: {pull: "+pull+", ", 1), Options{})
		if got := r.pins.get("D2").pull; got != want {
			t.Errorf("pull %s: pin pull %v, want %v", pull, got, want)
		}
	}
}

func TestNewInitialState(t *testing.T) {
	w, _ := wiring.Parse([]byte(rigWiring), "rig.yaml")
	pins := newPinSet()
	pins.get("D1").set(gpio.High) // open
	pins.get("D2").set(gpio.Low)  // closed
	pins.get("D3").set(gpio.High) // open
	pins.get("P1").set(gpio.Low)  // parcel there (reads low)
	newMatrix(pins)
	h, err := New(w, pins.source, Options{NoDisplayDelays: true})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Halt()
	for n, want := range map[int]bool{1: true, 2: false, 3: true} {
		if open, err := h.DoorOpen(n); err != nil || open != want {
			t.Errorf("DoorOpen(%d) = %v, %v; want %v", n, open, err, want)
		}
	}
	if present, ok, err := h.ParcelPresent(1); !present || !ok || err != nil {
		t.Errorf("ParcelPresent(1) = %v, %v, %v", present, ok, err)
	}
	if present, ok, err := h.ParcelPresent(2); present || ok || err != nil {
		t.Errorf("ParcelPresent(2) = %v, %v, %v; want no sensor", present, ok, err)
	}
	for _, n := range []int{0, 4, -1} {
		if _, err := h.DoorOpen(n); !errors.Is(err, ErrNoCompartment) {
			t.Errorf("DoorOpen(%d) = %v", n, err)
		}
		if _, _, err := h.ParcelPresent(n); !errors.Is(err, ErrNoCompartment) {
			t.Errorf("ParcelPresent(%d) = %v", n, err)
		}
	}
}

func TestNewHaltsOnError(t *testing.T) {
	w, _ := wiring.Parse([]byte(rigWiring), "rig.yaml")
	pins := newPinSet()
	newMatrix(pins)
	pins.get("D3").failIn = errors.New("busy")
	_, err := New(w, pins.source, Options{NoDisplayDelays: true})
	if err == nil || err.Error() != "hal: door of compartment 3: pin D3: busy" {
		t.Fatalf("New = %v", err)
	}
	for _, l := range []string{"L1", "L2", "L3"} {
		ws := pins.get(l).writes()
		if len(ws) < 2 || ws[len(ws)-1].l != gpio.High {
			t.Errorf("%s: writes %v; want switched off again by Halt", l, ws)
		}
	}
}

// lockIntervals returns the energised intervals of every lock, in time
// order, with their compartment.
func (r *rig) lockIntervals(n int) []interval {
	return r.pins.get("L" + string(rune('0'+n))).active(gpio.Low)
}

// springDoors makes each door of the rig spring open when its coil is
// energised, as a latch does.
func (r *rig) springDoors(ns ...int) {
	for _, n := range ns {
		door := r.pins.get("D" + string(rune('0'+n)))
		r.pins.get("L" + string(rune('0'+n))).onOut = func(l gpio.Level) {
			if l == gpio.Low { // active low
				door.set(gpio.High)
			}
		}
	}
}

// releases collects n LockReleased events, skipping the others.
func (r *rig) releases(t *testing.T, n int, within time.Duration) []Event {
	t.Helper()
	var out []Event
	deadline := time.After(within)
	for len(out) < n {
		select {
		case ev := <-r.hw.Events():
			if ev.Kind == LockReleased {
				out = append(out, ev)
			}
		case <-deadline:
			t.Fatalf("%d LockReleased within %v, want %d: %+v", len(out), within, n, out)
		}
	}
	return out
}

func TestReleaseQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const gap = 50 * time.Millisecond
		w := strings.Replace(rigWiring, "pulse: 30ms}", "pulse: 30ms, gap: 50ms, cooldown: 0s, confirm: 200ms}", 1)
		r := newRig(t, w, Options{})
		r.springDoors(1, 2, 3)
		order := []int{1, 2, 1, 3}
		for _, n := range order {
			if err := r.hw.Release(n); err != nil {
				t.Fatal(err)
			}
		}
		if !r.hw.Busy() {
			t.Error("Busy false with releases queued")
		}
		stop := r.run(t)
		evs := r.releases(t, len(order), 2*time.Second)
		count := map[int]int{}
		for _, ev := range evs {
			if ev.Err != nil {
				t.Errorf("event %+v, want no error", ev)
			}
			count[ev.Compartment]++
		}
		if count[1] != 2 || count[2] != 1 || count[3] != 1 {
			t.Errorf("LockReleased per compartment %v, want 1:2 2:1 3:1", count)
		}
		var all []interval
		for n, want := range map[int]int{1: 2, 2: 1, 3: 1} {
			iv := r.lockIntervals(n)
			if len(iv) != want { // the second release of 1 finds its door open, and pulses all the same
				t.Fatalf("compartment %d pulsed %d times, want %d", n, len(iv), want)
			}
			for _, p := range iv {
				if p.len() != 30*time.Millisecond {
					t.Errorf("pulse of %d lasted %v, want 30ms", n, p.len())
				}
			}
			all = append(all, iv...)
		}
		slices.SortFunc(all, func(a, b interval) int { return a.start.Compare(b.start) })
		for i := 1; i < len(all); i++ {
			if g := all[i].start.Sub(all[i-1].end); g < gap {
				t.Errorf("pulses %d and %d %v apart, want at least %v (one coil at a time)", i-1, i, g, gap)
			}
		}
		if r.hw.Busy() {
			t.Error("Busy after the last LockReleased")
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
		if err := r.hw.Release(1); !errors.Is(err, ErrHalted) {
			t.Errorf("Release after Run = %v, want ErrHalted", err)
		}
		if err := r.hw.Run(context.Background()); !errors.Is(err, ErrHalted) {
			t.Errorf("Run after Halt = %v, want ErrHalted", err)
		}
	})
}

// A door that never opens: two pulses, then ErrLockFault; a door open
// already: one pulse (its sensor may be stuck open on a shut door), then
// released.
func TestReleaseConfirmation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := strings.Replace(rigWiring, "pulse: 30ms}", "pulse: 30ms, gap: 10ms, cooldown: 50ms, confirm: 100ms}", 1)
		r := newRig(t, w, Options{})
		r.pins.get("D3").set(gpio.High) // door 3 stands open
		stop := r.run(t)
		defer stop()
		waittest.For(t, time.Second, func() bool { open, _ := r.hw.DoorOpen(3); return open }, "door 3 open")
		start := time.Now()
		if err := r.hw.Release(2); err != nil {
			t.Fatal(err)
		}
		if err := r.hw.Release(3); err != nil {
			t.Fatal(err)
		}
		evs := r.releases(t, 2, 2*time.Second)
		if evs[0].Compartment != 3 || evs[0].Err != nil {
			t.Errorf("first event %+v after %v, want 3 released after its pulse", evs[0], evs[0].At.Sub(start))
		}
		if evs[1].Compartment != 2 || !errors.Is(evs[1].Err, ErrLockFault) {
			t.Errorf("second event %+v, want a lock fault of 2", evs[1])
		}
		if iv := r.lockIntervals(2); len(iv) != 2 {
			t.Errorf("compartment 2 pulsed %d times, want 2", len(iv))
		} else if g := iv[1].start.Sub(iv[0].end); g < 100*time.Millisecond {
			t.Errorf("retry %v after the first pulse, want after the confirmation time", g)
		}
		if iv := r.lockIntervals(3); len(iv) != 1 {
			t.Errorf("compartment 3 (open) pulsed %d times, want once", len(iv))
		} else if evs[0].At.Before(iv[0].end) {
			t.Errorf("3 released at %v, before its pulse ended at %v", evs[0].At.Sub(start), iv[0].end.Sub(start))
		}
	})
}

func TestReleaseUnknown(t *testing.T) {
	r := newRig(t, rigWiring, Options{})
	for _, n := range []int{0, 4, 99, -3} {
		if err := r.hw.Release(n); !errors.Is(err, ErrNoCompartment) {
			t.Errorf("Release(%d) = %v, want ErrNoCompartment", n, err)
		}
	}
	if r.hw.Busy() {
		t.Error("Busy after refused releases")
	}
}

func TestHardwareHaltMidPulse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := strings.Replace(rigWiring, "pulse: 30ms", "pulse: 800ms, gap: 0s", 1)
		r := newRig(t, w, Options{})
		stop := r.run(t)
		if err := r.hw.Release(2); err != nil {
			t.Fatal(err)
		}
		if err := r.hw.Release(3); err != nil {
			t.Fatal(err)
		}
		coil := r.pins.get("L2")
		waittest.For(t, time.Second, func() bool { return coil.get() == gpio.Low }, "the coil to be on")
		if err := r.hw.Halt(); err != nil {
			t.Fatal(err)
		}
		if coil.get() != gpio.High {
			t.Fatal("coil on after Halt returned")
		}
		if err := stop(); err != nil {
			t.Errorf("Run = %v", err)
		}
		if r.hw.Busy() {
			t.Error("Busy after Halt")
		}
		if iv := r.lockIntervals(3); len(iv) != 0 {
			t.Errorf("compartment 3 pulsed after Halt: %v", iv)
		}
		if err := r.hw.Halt(); err != nil {
			t.Errorf("second Halt: %v", err)
		}
		if err := r.hw.Show("x"); !errors.Is(err, ErrHalted) {
			t.Errorf("Show after Halt = %v", err)
		}
	})
}

func TestRunTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, rigWiring, Options{})
		stop := r.run(t)
		waittest.For(t, time.Second, func() bool { r.hw.mu.Lock(); defer r.hw.mu.Unlock(); return r.hw.running }, "Run to start")
		if err := r.hw.Run(context.Background()); err == nil {
			t.Error("second Run succeeded")
		}
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
}

func TestSensors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, rigWiring, Options{})
		stop := r.run(t)
		defer stop()
		door, parcel := r.pins.get("D2"), r.pins.get("P1")

		door.set(gpio.High) // opens
		ev := r.next(t, time.Second)
		if ev.Kind != DoorChanged || ev.Compartment != 2 || !ev.On || ev.At.IsZero() {
			t.Fatalf("event %+v, want door 2 open", ev)
		}
		if open, _ := r.hw.DoorOpen(2); !open {
			t.Error("DoorOpen(2) false after the event")
		}
		parcel.set(gpio.Low) // a parcel, read low
		ev = r.next(t, time.Second)
		if ev.Kind != ParcelChanged || ev.Compartment != 1 || !ev.On {
			t.Fatalf("event %+v, want parcel 1 present", ev)
		}
		door.set(gpio.Low)
		ev = r.next(t, time.Second)
		if ev.Kind != DoorChanged || ev.Compartment != 2 || ev.On {
			t.Fatalf("event %+v, want door 2 closed", ev)
		}
		r.quiet(t, 100*time.Millisecond)
	})
}

// Contact bounce within the debounce time gives no event; bounce that ends
// on a new level gives exactly one.
func TestSensorBounce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := strings.Replace(rigWiring, "debounce: 40ms", "debounce: 150ms", 1)
		r := newRig(t, w, Options{})
		stop := r.run(t)
		defer stop()
		door := r.pins.get("D1")
		bounce := func(final gpio.Level) {
			for i := range 9 {
				door.set(i%2 == 0) // high, low, high, …
				time.Sleep(2 * time.Millisecond)
			}
			door.set(final)
		}
		bounce(gpio.Low) // ends closed, as it started
		r.quiet(t, 300*time.Millisecond)
		if open, _ := r.hw.DoorOpen(1); open {
			t.Error("door open after bounce")
		}
		start := time.Now()
		bounce(gpio.High) // ends open
		ev := r.next(t, time.Second)
		if ev.Kind != DoorChanged || ev.Compartment != 1 || !ev.On {
			t.Fatalf("event %+v, want door 1 open", ev)
		}
		// The last bounce (to high) came 16 ms after start: the change is
		// reported the debounce time (150 ms) after it, at the poll (1 ms)
		// that sees it.
		if d := ev.At.Sub(start); d < 166*time.Millisecond || d > 167*time.Millisecond {
			t.Errorf("event after %v, want 166 ms (the last bounce plus the debounce time)", d)
		}
		r.quiet(t, 300*time.Millisecond)
	})
}

func TestDebouncer(t *testing.T) {
	const hold = 30 * time.Millisecond
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		ms     int
		v      bool
		change bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"steady", []step{{0, false, false}, {10, false, false}, {100, false, false}}},
		{"clean change", []step{{0, true, false}, {10, true, false}, {29, true, false}, {30, true, true}, {40, true, false}}},
		{"bounce back", []step{{0, true, false}, {5, false, false}, {10, true, false}, {35, true, false}, {40, true, true}}},
		{"glitch", []step{{0, true, false}, {20, true, false}, {25, false, false}, {60, false, false}}},
		{"on then off", []step{{0, true, false}, {30, true, true}, {40, false, false}, {69, false, false}, {70, false, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d debouncer
			for _, s := range tc.steps {
				if got := d.update(s.v, at(s.ms), hold); got != s.change {
					t.Errorf("at %dms sample %v: change %v, want %v", s.ms, s.v, got, s.change)
				}
			}
		})
	}
}

func TestSensorActiveLow(t *testing.T) {
	w := strings.Replace(rigWiring, "sensors: {", "sensors: {door_open_low: true, ", 1)
	r := newRig(t, w, Options{}) // doors read low: open
	if open, _ := r.hw.DoorOpen(1); !open {
		t.Error("door_open_low: a low door pin reads closed")
	}
}

func TestShowWithoutDisplay(t *testing.T) {
	r := newRig(t, "compartments:\n  - {number: 1, size: S, lock: L1, door: D1}\n", Options{})
	if err := r.hw.Show("hello"); err != nil {
		t.Errorf("Show without display = %v", err)
	}
	if r.hw.KeypadScans() != 0 {
		t.Error("KeypadScans without keypad")
	}
	stop := r.run(t) // runs without keypad and display
	if err := stop(); err != nil {
		t.Error(err)
	}
}

func TestHardwareShow(t *testing.T) {
	r := newRig(t, rigWiring, Options{})
	if err := r.hw.Show("Enter code", "> 12"); err != nil {
		t.Fatal(err)
	}
	lcd := decodeLCD(t, r.pins.bus.records(), "RS", "E", [4]string{"DB4", "DB5", "DB6", "DB7"})
	if got := lcd.row(0, 16) + "|" + lcd.row(1, 16); got != "Enter code      |> 12            " {
		t.Errorf("display shows %q", got)
	}
}

func TestHardwareKeypad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, rigWiring, Options{ScanInterval: time.Millisecond})
		stop := r.run(t)
		defer stop()
		for _, key := range "1#D" {
			r.matrix.press(byte(key))
			ev := r.next(t, time.Second)
			if ev.Kind != KeyPressed || ev.Key != byte(key) {
				t.Fatalf("event %+v, want key %c", ev, key)
			}
			r.matrix.release()
			scans := r.hw.KeypadScans()
			waittest.For(t, time.Second, func() bool { return r.hw.KeypadScans() > scans+3 }, "scans")
		}
		r.quiet(t, 20*time.Millisecond)
		if r.matrix.badScans.Load() != 0 {
			t.Errorf("%d column reads with more than one row low", r.matrix.badScans.Load())
		}
	})
}

// Events are not dropped when the buffer is full: the poller waits for room.
func TestEventsNotDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, strings.Replace(rigWiring, "debounce: 40ms", "debounce: 2ms", 1), Options{EventBuffer: 1})
		stop := r.run(t)
		defer stop()
		door := r.pins.get("D3")
		door.set(gpio.High)               // open: fills the buffer
		time.Sleep(30 * time.Millisecond) // nobody reads yet
		door.set(gpio.Low)                // closed: the poller waits to send it
		time.Sleep(30 * time.Millisecond)
		for i, want := range []bool{true, false} {
			if ev := r.next(t, time.Second); ev.Kind != DoorChanged || ev.On != want {
				t.Fatalf("event %d = %+v, want door open %v", i, ev, want)
			}
		}
		door.set(gpio.High) // the poller goes on after the wait
		if ev := r.next(t, time.Second); ev.Kind != DoorChanged || !ev.On {
			t.Fatalf("event %+v, want door open", ev)
		}
	})
}

// matrix fakes a 4x4 keypad over the row and column pins of a pinSet: a
// column reads low when a key of it is down and that key's row is low.
type matrix struct {
	rows     [4]*fakePin
	mu       sync.Mutex
	down     map[byte]bool
	badScans atomic.Int32 // column reads while more than one row was low
}

func newMatrix(pins *pinSet) *matrix {
	m := &matrix{down: map[byte]bool{}}
	for r := range 4 {
		m.rows[r] = pins.get("R" + string(rune('1'+r)))
	}
	for c := range 4 {
		pins.get("C" + string(rune('1'+c))).readFn = m.col(c)
	}
	return m
}

// col is the Read of column c.
func (m *matrix) col(c int) func() gpio.Level {
	return func() gpio.Level {
		m.mu.Lock()
		defer m.mu.Unlock()
		level, low := gpio.High, 0
		for r, row := range m.rows {
			if row.get() == gpio.Low {
				low++
				if m.down[wiring.DefaultLayout[r][c]] {
					level = gpio.Low
				}
			}
		}
		if low > 1 {
			m.badScans.Add(1)
		}
		return level
	}
}

// press holds down keys (and releases all others).
func (m *matrix) press(keys ...byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.down)
	for _, k := range keys {
		m.down[k] = true
	}
}

func (m *matrix) release() { m.press() }

// Production passes gpioreg.ByName.
var _ PinSource = gpioreg.ByName

func TestSetLED(t *testing.T) {
	w := strings.Replace(rigWiring, "lock: L1, door: D1,", "lock: L1, door: D1, led: LED1,", 1)
	r := newRig(t, w, Options{})
	led := r.pins.get("LED1")
	if ws := led.writes(); len(ws) != 1 || ws[0].l != gpio.Low {
		t.Errorf("LED writes at start %v, want off", ws)
	}
	if err := r.hw.SetLED(1, true); err != nil || led.get() != gpio.High {
		t.Errorf("SetLED(1, true) = %v, pin %v", err, led.get())
	}
	if err := r.hw.SetLED(2, true); err != nil {
		t.Errorf("SetLED without an LED = %v", err)
	}
	if err := r.hw.SetLED(9, true); !errors.Is(err, ErrNoCompartment) {
		t.Errorf("SetLED(9) = %v", err)
	}
	_ = r.hw.Halt()
	if led.get() != gpio.Low {
		t.Error("LED on after Halt")
	}
	if err := r.hw.SetLED(1, true); !errors.Is(err, ErrHalted) {
		t.Errorf("SetLED after Halt = %v", err)
	}
}

// A flickering occupancy sensor gives one SensorFault of its compartment
// (Source "parcel", an ErrChatter naming the occupancy sensor) and no
// ParcelChanged while it flickers; steady again, SensorRecovered, then one
// ParcelChanged when the settled level differs from the last reported one.
// The poller is driven by hand with made-up times: no sleeps.
func TestParcelChatter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := `locks: {active_low: true, pulse: 30ms}
sensors: {parcel_present_low: true, debounce: 20ms, poll: 1ms, chatter_changes: 8, chatter_window: 300ms}
compartments:
  - {number: 1, size: S, lock: L1, door: D1, parcel: P1}
  - {number: 2, size: S, lock: L2, door: D2, parcel: P2}
`
		r := newRig(t, w, Options{})
		parcel := r.pins.get("P1") // reads high: absent
		now := time.Now()
		var evs []Event
		step := func(d time.Duration) {
			now = now.Add(d)
			evs = r.hw.pollOnce(now, evs)
		}
		flicker := func(final gpio.Level) {
			for i := range 60 { // 10 ms a level for 600 ms: shorter than the debounce time
				parcel.set(i%2 == 0)
				for range 10 {
					step(time.Millisecond)
				}
			}
			parcel.set(final)
			for range 400 { // steady for longer than the chatter window
				step(time.Millisecond)
			}
		}
		kinds := func() []string {
			var out []string
			for _, ev := range evs {
				out = append(out, fmt.Sprintf("%s %d %s on=%v", ev.Kind, ev.Compartment, ev.Source, ev.On))
			}
			return out
		}

		flicker(gpio.High) // ends absent, as it started
		if got, want := kinds(), []string{"sensor-fault 1 parcel on=false", "sensor-recovered 1 parcel on=false"}; !slices.Equal(got, want) {
			t.Fatalf("events %q, want %q", got, want)
		}
		if ev := evs[0]; !errors.Is(ev.Err, ErrChatter) || !strings.Contains(ev.Err.Error(), "occupancy sensor") {
			t.Errorf("fault %v, want a chatter of the occupancy sensor", ev.Err)
		}
		if present, _, _ := r.hw.ParcelPresent(1); present {
			t.Error("ParcelPresent(1) after flicker that ended absent")
		}

		evs = evs[:0]
		flicker(gpio.Low) // ends present
		if got, want := kinds(), []string{"sensor-fault 1 parcel on=false", "sensor-recovered 1 parcel on=false",
			"parcel 1  on=true"}; !slices.Equal(got, want) {
			t.Fatalf("events %q, want %q", got, want)
		}
		if present, _, _ := r.hw.ParcelPresent(1); !present {
			t.Error("ParcelPresent(1) false after settling present")
		}

		// A flicker slow enough to pass the debounce (30 ms a level, 40
		// changes): at most chatter_changes ParcelChanged before the fault, none
		// after it until the recovery.
		evs = evs[:0]
		for i := range 40 {
			parcel.set(i%2 == 0)
			for range 30 {
				step(time.Millisecond)
			}
		}
		parcel.set(gpio.High)
		for range 400 {
			step(time.Millisecond)
		}
		faults, before, during, recovered := 0, 0, 0, false
		for _, ev := range evs {
			switch {
			case ev.Kind == SensorFault:
				faults++
			case ev.Kind == SensorRecovered:
				recovered = true
			case ev.Kind == ParcelChanged && faults == 0:
				before++
			case ev.Kind == ParcelChanged && !recovered:
				during++
			}
		}
		if faults != 1 || before > 8 || during != 0 || len(evs) > 8+3 {
			t.Fatalf("slow flicker: %d faults, %d changes before, %d during; events %q", faults, before, during, kinds())
		}
		if ev := evs[len(evs)-1]; ev.Kind != ParcelChanged || ev.On || evs[len(evs)-2].Kind != SensorRecovered {
			t.Errorf("slow flicker ends with %q, want the recovery and then absent", kinds())
		}

		// An ordinary deposit and pickup are no chatter.
		evs = evs[:0]
		for _, l := range []gpio.Level{gpio.Low, gpio.High, gpio.Low} {
			parcel.set(l)
			for range 100 {
				step(time.Millisecond)
			}
		}
		if got, want := kinds(), []string{"parcel 1  on=true", "parcel 1  on=false", "parcel 1  on=true"}; !slices.Equal(got, want) {
			t.Fatalf("events %q, want %q", got, want)
		}
	})
}
