package hal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"

	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator/waittest"
)

// Every pulse ends, whatever the pin or the bus does: a switch-off that
// fails is retried (with a bounded back-off) until the coil reads off,
// reported when it fails and when it ends, and counted against the power
// budget meanwhile.

// backoff is the longest the retries of n failed switch-offs can add to a
// pulse.
func backoff(n int) time.Duration {
	var d time.Duration
	for k := range n {
		d += min(CoilRetryMin<<k, CoilRetryMax)
	}
	return d
}

// reportLog records a Solenoid's reports.
type reportLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *reportLog) add(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

func (l *reportLog) get() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// checkStuckThenOff checks that the reports are one failure (wrapping
// want) and then the end of it.
func checkStuckThenOff(t *testing.T, reps []error, want error) {
	t.Helper()
	if len(reps) != 2 || !errors.Is(reps[0], ErrCoilStuck) || !errors.Is(reps[0], want) || reps[1] != nil {
		t.Errorf("reports %v, want [%v …, nil]", reps, want)
	}
}

// A board pin whose switch-off write fails n times: the coil goes off at
// the next write that works, within the pulse and the back-off.
func TestSolenoidOffRetried(t *testing.T) {
	for _, n := range []int{1, 2, 5, 8} {
		t.Run(fmt.Sprint(n, " failures"), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, p := newTestSolenoid(t, false)
				var reps reportLog
				s.setReport(reps.add)
				p.onOut = func(l gpio.Level) {
					if l == gpio.High { // on: the off writes fail
						p.fail(n)
					}
				}
				const d = 40 * time.Millisecond
				err := s.Pulse(context.Background(), d)
				if n >= 2 && !errors.Is(err, ErrCoilStuck) { // the guard's write and Pulse's own failed
					t.Errorf("Pulse = %v, want ErrCoilStuck", err)
				}
				waittest.For(t, time.Second, func() bool { return p.get() == gpio.Low && !s.On() }, "the coil off")
				waittest.For(t, time.Second, func() bool { return len(reps.get()) == 2 }, "two reports")
				checkStuckThenOff(t, reps.get(), errBroken)
				if got := p.failures(); got != n {
					t.Errorf("%d failed writes, want %d", got, n)
				}
				iv := p.active(gpio.High)
				if len(iv) != 1 || iv[0].end.IsZero() {
					t.Fatalf("energised %v, want one closed interval", iv)
				}
				if max := d + backoff(n); iv[0].len() > max || iv[0].len() > wiring.MaxPulse {
					t.Errorf("energised for %v, want at most %v (and the cap %v)", iv[0].len(), max, wiring.MaxPulse)
				}
				if s.Stuck() != nil {
					t.Errorf("Stuck = %v after the coil went off", s.Stuck())
				}
				p.onOut = nil
				if err := s.Pulse(context.Background(), 5*time.Millisecond); err != nil || p.get() != gpio.Low {
					t.Errorf("Pulse after the recovery = %v, pin %v", err, p.get())
				}
			})
		})
	}
}

// A board pin that cannot be written at all: the failure is reported once,
// new pulses are refused, Halt says so, and the switch-off is tried again
// and again (at least every CoilRetryMax) until the pin works.
func TestSolenoidOffDeadPin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, p := newTestSolenoid(t, true)
		var reps reportLog
		s.setReport(reps.add)
		p.onOut = func(l gpio.Level) {
			if l == gpio.Low { // on (active low): dead from now on
				p.fail(-1)
			}
		}
		if err := s.Pulse(context.Background(), 20*time.Millisecond); !errors.Is(err, ErrCoilStuck) {
			t.Fatalf("Pulse = %v, want ErrCoilStuck", err)
		}
		if !s.On() || s.Stuck() == nil {
			t.Errorf("On %v, Stuck %v: want a coil that may be on", s.On(), s.Stuck())
		}
		if err := s.Pulse(context.Background(), time.Millisecond); !errors.Is(err, ErrCoilStuck) {
			t.Errorf("Pulse on a stuck coil = %v, want refused with ErrCoilStuck", err)
		}
		if err := s.Halt(); !errors.Is(err, ErrCoilStuck) {
			t.Errorf("Halt = %v, want ErrCoilStuck", err)
		}
		// Retried forever: once the back-off has reached its cap, a retry
		// comes every CoilRetryMax.
		waittest.For(t, time.Second, func() bool { return p.failures() > 8 }, "the back-off to reach its cap")
		time.Sleep(CoilRetryMax) // past the last doubling
		synctest.Wait()
		for range 3 {
			f := p.failures()
			time.Sleep(CoilRetryMax)
			synctest.Wait()
			if got := p.failures(); got != f+1 {
				t.Fatalf("%d retries in %v after %d failures, want 1", got-f, CoilRetryMax, f)
			}
		}
		if got := reps.get(); len(got) != 1 {
			t.Errorf("reports %v, want the one failure while it lasts", got)
		}
		p.fail(0) // repaired
		waittest.For(t, time.Second, func() bool { return p.get() == gpio.High && !s.On() }, "the coil off")
		waittest.For(t, time.Second, func() bool { return len(reps.get()) == 2 }, "two reports")
		checkStuckThenOff(t, reps.get(), errBroken)
		if err := s.Pulse(context.Background(), time.Millisecond); !errors.Is(err, ErrHalted) {
			t.Errorf("Pulse after Halt = %v, want ErrHalted", err)
		}
	})
}

// A coil on an MCP23017 whose switch-off is lost on the bus (failed
// transactions, or writes acknowledged and dropped, seen only by reading
// the latch back): re-initialised and read back until it is off, within
// the pulse and the back-off.
func TestSolenoidExpanderOffRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		how  error
		want error
	}{
		{"failed writes", 3, errBus, ErrExpander},
		{"dropped writes", 2, errDrop, ErrLatch},
		{"many failed writes", 9, errBus, ErrExpander},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				chip := newFakeMCP()
				m, err := NewMCP23017("X1", chip, 0x20)
				if err != nil {
					t.Fatal(err)
				}
				s, err := NewSolenoid("lock 1", m.Pin(11), true)
				if err != nil {
					t.Fatal(err)
				}
				var reps reportLog
				s.setReport(reps.add)
				fault, _ := failWritesAfterOn(11, true, tc.n, tc.how)
				chip.setFault(fault)
				const d = 40 * time.Millisecond
				// Pulse's own switch-off may already work (n counts writes, and
				// an attempt writes two or four times): the reports tell.
				if err := s.Pulse(context.Background(), d); err != nil && !errors.Is(err, ErrCoilStuck) {
					t.Errorf("Pulse = %v, want nil or ErrCoilStuck", err)
				}
				waittest.For(t, time.Second, func() bool { return chip.isOff(11, true) && !s.On() }, "the coil off")
				waittest.For(t, time.Second, func() bool { return len(reps.get()) == 2 }, "two reports")
				checkStuckThenOff(t, reps.get(), tc.want)
				iv := chip.intervals(11, true)
				if len(iv) != 1 || iv[0].end.IsZero() {
					t.Fatalf("energised %v, want one closed interval", iv)
				}
				// Each failed switch-off costs at most its back-off; a write
				// dropped is found by the read back of the same attempt.
				if max := d + backoff(tc.n); iv[0].len() > max || iv[0].len() > wiring.MaxPulse {
					t.Errorf("energised for %v, want at most %v (and the cap %v)", iv[0].len(), max, wiring.MaxPulse)
				}
				chip.mu.Lock()
				inits := 0
				for _, w := range chip.writes {
					if w[0] == mcpIOCON {
						inits++
					}
				}
				chip.mu.Unlock()
				if inits < 2 {
					t.Errorf("%d initialisations, want the chip re-initialised by the retries", inits)
				}
			})
		})
	}
}

// expWiring: two compartments whose locks are on an MCP23017 (active-low
// relays), doors on board pins, one coil at a time.
const expWiring = `name: exp
expanders:
  - {name: X1, bus: "1", address: 0x20}
locks: {active_low: true, pulse: 30ms, gap: 0s, cooldown: 0s, confirm: 100ms, max_energised: 1}
sensors: {debounce: 5ms, poll: 1ms}
compartments:
  - {number: 1, size: S, lock: X1.A0, door: D1}
  - {number: 2, size: S, lock: X1.A1, door: D2}
`

func newExpRig(t *testing.T, chip *fakeMCP) *rig {
	t.Helper()
	return newRig(t, expWiring, Options{Buses: func(string) (i2c.Bus, error) { return chip, nil }})
}

// waitEvent returns the next event that matches, dropping the others.
func (r *rig) waitEvent(t *testing.T, within time.Duration, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev := <-r.hw.Events():
			if match(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s within %v", what, within)
			return Event{}
		}
	}
}

// The bus dies while compartment 1's coil is on: the failure reaches the
// controller as a SensorFault of compartment 1 ("lock"), the driver keeps
// trying, and the stuck coil holds the power budget, so compartment 2's
// release waits. When the bus works again, the coil goes off, the
// controller hears so, and compartment 2 is pulsed.
func TestHardwareCoilStuckOnDeadBus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chip := newFakeMCP()
		r := newExpRig(t, chip)
		fault, repair := failWritesAfterOn(0, true, -1, errBus)
		chip.setFault(fault)
		defer r.run(t)()
		if err := r.hw.Release(1); err != nil {
			t.Fatal(err)
		}
		if err := r.hw.Release(2); err != nil {
			t.Fatal(err)
		}
		ev := r.waitEvent(t, time.Second, "lock fault of 1", func(ev Event) bool { return ev.Kind == SensorFault && ev.Compartment != 0 })
		if ev.Compartment != 1 || ev.Source != "lock" || !errors.Is(ev.Err, ErrCoilStuck) || !errors.Is(ev.Err, ErrExpander) {
			t.Fatalf("event %+v, want a stuck coil of compartment 1", ev)
		}
		_, f0 := chip.counts()
		waittest.For(t, time.Second, func() bool { _, f := chip.counts(); return f >= f0+5 }, "the switch-off retried")
		if !chip.isActive(0, true) {
			t.Fatal("the coil went off on a dead bus")
		}
		if iv := chip.intervals(1, true); len(iv) != 0 {
			t.Fatalf("compartment 2 pulsed while 1's coil may be on (max_energised 1): %v", iv)
		}
		if !r.hw.Busy() {
			t.Error("Busy false with releases waiting")
		}
		repair()
		rec := r.waitEvent(t, time.Second, "recovery of 1's lock", func(ev Event) bool {
			return ev.Kind == SensorRecovered && ev.Compartment == 1 && ev.Source == "lock"
		})
		if iv := chip.intervals(0, true); iv[0].end.IsZero() || iv[0].end.After(rec.At) {
			t.Errorf("coil 1 energised %v, want off by its recovery at %v", iv, rec.At)
		}
		// Then the queue goes on, one coil at a time: 1's retry pulse (its
		// door never opens) and 2's.
		waittest.For(t, time.Second, func() bool { return len(chip.intervals(1, true)) > 0 }, "compartment 2 pulsed")
		end := func(iv interval) time.Time {
			if iv.end.IsZero() {
				return time.Now()
			}
			return iv.end
		}
		for _, a := range chip.intervals(0, true) {
			for _, b := range chip.intervals(1, true) {
				if a.start.Before(end(b)) && b.start.Before(end(a)) {
					t.Errorf("coils 1 %v and 2 %v on at once (max_energised 1)", a, b)
				}
			}
		}
	})
}

// Check finds an output latch that holds another level than the driver
// wrote — a coil left energised behind the driver's back — reports the
// expander and restores the latch within one check period.
func TestHardwareCheckFindsLatchOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chip := newFakeMCP()
		r := newExpRig(t, chip)
		defer r.run(t)()
		if !chip.isOff(0, true) || !chip.isOff(1, true) {
			t.Fatal("locks not off after New")
		}
		chip.poke(mcpOLATA, 0x02) // A0 low: coil 1 on (active low)
		ev := r.waitEvent(t, ExpanderCheck+time.Second, "expander fault", func(ev Event) bool { return ev.Kind == SensorFault })
		if ev.Compartment != 0 || ev.Source != "expander X1" || !errors.Is(ev.Err, ErrLatch) {
			t.Errorf("fault %+v, want the latch of expander X1", ev)
		}
		r.waitEvent(t, time.Second, "expander recovered", func(ev Event) bool {
			return ev.Kind == SensorRecovered && ev.Source == "expander X1"
		})
		if !chip.isOff(0, true) || !chip.isOff(1, true) {
			t.Fatal("coil 1 still on after the recovery")
		}
		iv := chip.intervals(0, true)
		if len(iv) != 1 || iv[0].end.IsZero() || iv[0].len() > ExpanderCheck {
			t.Errorf("energised %v, want one interval of at most %v", iv, ExpanderCheck)
		}
	})
}

// An expander whose lock outputs a previous process left at their inert
// level is initialised without ever driving a coil, not even between two
// transactions (an all-zero latch written before the directions would
// energise every coil of an active-low relay board).
func TestNewExpanderLocksNoGlitch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chip := newFakeMCP()
		chip.poke(mcpOLATA, 0x03)  // A0, A1 latched high: off
		chip.poke(mcpIODIRA, 0xFC) // A0, A1 outputs
		r := newExpRig(t, chip)
		_ = r
		for i := range 2 {
			if iv := chip.intervals(i, true); len(iv) != 0 {
				t.Errorf("lock %d energised at start: %v", i+1, iv)
			}
			if !chip.isOff(i, true) {
				t.Errorf("lock %d not an output at its off level", i+1)
			}
		}
	})
}
