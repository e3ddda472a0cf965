package hal

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/simulator/waittest"
)

// countingPin counts the reads of a pin.
type countingPin struct {
	gpio.PinIO
	reads *atomic.Int64
}

func (p countingPin) Read() gpio.Level {
	p.reads.Add(1)
	return p.PinIO.Read()
}

// newQuietRig is newSimRig with Options.InputChanges set to the cabinet's
// SubscribeInputs (inputs nil: unset), and the reads of the door and
// occupancy sensor pins counted.
func newQuietRig(t *testing.T, w *wiring.Wiring, tell bool) (*simRig, *atomic.Int64) {
	t.Helper()
	cab, err := simulator.New(w, simulator.Options{MinPulse: simMinPulse})
	if err != nil {
		t.Fatal(err)
	}
	sensors := map[string]bool{}
	for _, c := range w.Compartments {
		sensors[c.Door], sensors[c.Parcel] = true, c.Parcel != ""
	}
	reads := new(atomic.Int64)
	pins := func(name string) gpio.PinIO {
		p := cab.ByName(name)
		if p != nil && sensors[name] {
			return countingPin{p, reads}
		}
		return p
	}
	var opts Options
	if tell {
		opts.InputChanges = cab.SubscribeInputs
	}
	return startSimRig(t, w, cab, pins, opts, false), reads
}

// With InputChanges, an idle cabinet's sensors and keypad are read only
// every RestPoll (the safety net), not every poll and scan period; without
// it, every period as before. On the bubble's fake clock every period comes
// on time, so the counts are exact.
func TestInputChangesIdleReads(t *testing.T) {
	const idle = 400 * time.Millisecond
	const sensors = 48 // 24 doors and 24 occupancy sensors
	for _, tell := range []bool{false, true} {
		t.Run(map[bool]string{false: "polled", true: "told"}[tell], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := defaultWiring(t)
				r, reads := newQuietRig(t, w, tell)
				time.Sleep(100 * time.Millisecond) // the first polls after start
				synctest.Wait()
				n0, s0 := reads.Load(), r.hw.KeypadScans()
				time.Sleep(idle)
				synctest.Wait()
				n, s := reads.Load()-n0, r.hw.KeypadScans()-s0
				if !tell {
					polls, scans := int64(idle/w.Sensors.Poll), uint64(idle/time.Millisecond) // startSimRig: ScanInterval 1 ms
					if n != polls*sensors || s != scans {
						t.Errorf("polled: %d sensor reads and %d scans in %v, want %d and %d: every period", n, s, idle, polls*sensors, scans)
					}
					return
				}
				if n != 0 || s != 0 {
					t.Errorf("told of changes: %d sensor reads and %d scans in %v idle, want none", n, s, idle)
				}
				// The safety net: one poll and one scan every RestPoll.
				n0, s0 = reads.Load(), r.hw.KeypadScans()
				time.Sleep(3 * RestPoll)
				synctest.Wait()
				if n, s := reads.Load()-n0, r.hw.KeypadScans()-s0; n != 3*sensors || s != 3 {
					t.Errorf("told of changes: %d sensor reads and %d scans in %v idle, want %d and 3 (one every RestPoll)", n, s, 3*RestPoll, 3*sensors)
				}
			})
		})
	}
}

// Told of changes, the resting hal still sees every door, parcel and key:
// a release opens a door and it closes again, a parcel goes in, a door
// sensor that bounces gives one change per move, and the same key pressed
// twice is two presses.
func TestInputChangesSeesEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newQuietRig(t, defaultWiring(t), true)
		_ = r.cab.SetFault(6, simulator.FaultSensorBounce)
		for _, n := range []int{3, 6, 6} {
			time.Sleep(r.hw.cooldown)
			from := len(r.events())
			if err := r.hw.Release(n); err != nil {
				t.Fatal(err)
			}
			if ev, _ := r.wait(t, from, 3*time.Second, "release", isLock(n)); ev.Err != nil {
				t.Fatalf("release %d: %v", n, ev.Err)
			}
			_, from = r.wait(t, from, 3*time.Second, "door open", isDoor(n, true))
			if err := r.cab.SetParcel(n, true); err != nil {
				t.Fatal(err)
			}
			r.wait(t, from, 3*time.Second, "parcel in", func(ev Event) bool {
				return ev.Kind == ParcelChanged && ev.Compartment == n && ev.On
			})
			if err := r.cab.SetParcel(n, false); err != nil {
				t.Fatal(err)
			}
			_ = r.cab.CloseDoor(n)
			r.wait(t, from, 3*time.Second, "door closed", isDoor(n, false))
		}
		time.Sleep(100 * time.Millisecond)
		if opens, closes := r.count(isDoor(6, true)), r.count(isDoor(6, false)); opens != 2 || closes != 2 {
			t.Errorf("door 6 (bouncing): %d opens and %d closes, want 2 each: %s", opens, closes, fmtEvents(r.events()))
		}
		for i, k := range []byte("77#") {
			from := len(r.events())
			if err := r.cab.PressKey(k); err != nil {
				t.Fatal(err)
			}
			r.wait(t, from, 3*time.Second, "key press", func(ev Event) bool { return ev.Kind == KeyPressed && ev.Key == k })
			if err := r.cab.ReleaseKey(k); err != nil {
				t.Fatal(err)
			}
			// The release is seen before the next press: two scans see it up.
			scans := r.hw.KeypadScans()
			waittest.For(t, time.Second, func() bool { return r.hw.KeypadScans() >= scans+3 }, "the release scanned")
			if got := r.count(func(ev Event) bool { return ev.Kind == KeyPressed }); got != i+1 {
				t.Fatalf("%d key presses after %d keys", got, i+1)
			}
		}
	})
}

// defaultWiring is the simulator's default cabinet (24 compartments with
// door and occupancy sensors, a keypad, a display).
func defaultWiring(t *testing.T) *wiring.Wiring {
	t.Helper()
	w, err := simulator.DefaultWiring()
	if err != nil {
		t.Fatal(err)
	}
	return w
}
