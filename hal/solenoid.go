package hal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3"
	"periph.io/x/conn/v3/gpio"

	"github.com/openlocker/locker/hal/wiring"
)

// Solenoid drives one lock coil through a relay output pin.
//
// A pulse can never last longer than wiring.MaxPulse: the coil is switched
// off by a runtime timer armed before it is switched on, so a caller that is
// stuck, slow or gone cannot hold it on. Halt switches it off at once and for
// good.
//
// A switch-off that fails (the pin's write returns an error, or an expander
// pin does not read back off) does not end there: the coil may still be
// energised, so the Solenoid keeps trying on a timer of its own, with a
// back-off from CoilRetryMin up to CoilRetryMax and for as long as it takes,
// even after Halt. An expander pin is re-initialised (its whole register
// copy written again) on every retry and read back every time. Until a
// switch-off succeeds the Solenoid refuses new pulses, and its report
// function (see setReport) hears of the failure and of the end of it.
//
// Wiring note: while the board boots, and possibly for a moment inside the
// first Out(), the pin floats; give active-low relay inputs a pull-up (and
// active-high ones a pull-down) so that a floating pin means "off".
type Solenoid struct {
	name      string
	pin       gpio.PinOut
	activeLow bool

	// mu guards the fields below and serialises every write to pin, so that
	// the guard timer, the retry timer, Pulse and Halt never interleave
	// their writes. Lock order: mu, then reportMu.
	mu      sync.Mutex
	on      bool          // the coil is (being) energised, or may be: a switch-off failed
	halted  bool          // Halt was called; the coil stays off
	guard   *time.Timer   // switches the coil off at the end of the pulse
	done    chan struct{} // closed when the running pulse ends; nil when none
	stuck   error         // the last switch-off failed with it; nil when the coil is off
	retries int           // switch-off attempts since the first failure
	retry   *time.Timer   // the next switch-off attempt while stuck
	report  func(error)   // hears stuck (the error) and off again (nil)
	notes   []error       // reports to deliver once mu is released

	// reportMu keeps reports in the order of the changes they report: it
	// is taken before mu is released and held while report runs.
	reportMu sync.Mutex
}

var _ conn.Resource = (*Solenoid)(nil)

// ErrCoilStuck: a coil could not be switched off (the write failed or did
// not read back); it may still be energised. The driver keeps trying.
var ErrCoilStuck = errors.New("hal: coil may be energised: switch-off failed")

// Back-off of the switch-off retries of a coil that is stuck: the first
// retry after CoilRetryMin, each later one after twice the previous delay,
// at most CoilRetryMax.
const (
	CoilRetryMin = 2 * time.Millisecond
	CoilRetryMax = 100 * time.Millisecond
)

// verifiedOut is an output pin that can be driven with more care than Out:
// an ExpanderPin rewrites its chip's registers (reinit) and reads its latch
// back.
type verifiedOut interface {
	outVerified(l gpio.Level, reinit bool) error
}

// NewSolenoid drives pin to the inactive level (coil off; an expander pin
// is read back) and returns the driver. name is used in String and errors
// ("lock of compartment 3").
func NewSolenoid(name string, pin gpio.PinOut, activeLow bool) (*Solenoid, error) {
	s := &Solenoid{name: name, pin: pin, activeLow: activeLow}
	if err := s.writeOff(false); err != nil {
		return nil, fmt.Errorf("hal: %s: switch off: %w", name, err)
	}
	return s, nil
}

// setReport sets the function that hears of a switch-off that failed (with
// the error, once per failure) and of the coil being off again after one
// (nil). It is called without the Solenoid's mutex held, one call at a
// time, in order.
func (s *Solenoid) setReport(f func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.report = f
}

// String implements conn.Resource.
func (s *Solenoid) String() string { return s.name }

// level is the pin level that switches the coil on (or off).
func (s *Solenoid) level(on bool) gpio.Level {
	return gpio.Level(on != s.activeLow)
}

// On reports whether the coil is energised, or may be (a switch-off failed
// and is being retried).
func (s *Solenoid) On() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.on
}

// Stuck returns the error of the switch-off being retried, or nil when the
// coil is known to be off or in a pulse.
func (s *Solenoid) Stuck() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stuck
}

// Pulse energises the coil for d, capped at wiring.MaxPulse, and returns when
// the coil is off again. It returns early, with the coil off, when ctx is done
// (ctx.Err()) or the solenoid is halted (ErrHalted). Pulses on one Solenoid
// do not overlap: a Pulse while another runs is an error. When the
// switch-off fails, Pulse returns an ErrCoilStuck error at the end of the
// pulse and the Solenoid goes on trying to switch the coil off.
func (s *Solenoid) Pulse(ctx context.Context, d time.Duration) error {
	return s.pulse(ctx, d, nil)
}

// pulse is Pulse; started, if not nil, is called with the time just after
// the coil was switched on.
func (s *Solenoid) pulse(ctx context.Context, d time.Duration, started func(time.Time)) (err error) {
	if d <= 0 {
		return fmt.Errorf("hal: %s: pulse of %v", s.name, d)
	}
	done, err := s.start(min(d, wiring.MaxPulse))
	if err != nil {
		return err
	}
	if started != nil {
		started(time.Now())
	}
	// Whatever ends the wait, even a panic, the coil goes off here too.
	defer func() {
		if e := s.off(); e != nil && (err == nil || errors.Is(err, ErrHalted)) {
			err = e
		}
	}()
	select {
	case <-done:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.halted {
			return ErrHalted
		}
		return nil // the deferred switch-off tells whether the coil is off
	case <-ctx.Done():
		return ctx.Err()
	}
}

// start arms the guard timer and then switches the coil on.
func (s *Solenoid) start(d time.Duration) (chan struct{}, error) {
	s.mu.Lock()
	defer s.unlock()
	switch {
	case s.halted:
		return nil, ErrHalted
	case s.stuck != nil:
		return nil, fmt.Errorf("hal: %s: refused: %w", s.name, s.stuck)
	case s.on:
		return nil, fmt.Errorf("hal: %s: pulse already running", s.name)
	}
	done := make(chan struct{})
	s.done, s.on = done, true
	s.guard = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.unlock()
		if s.done == done { // still this pulse, not a later one
			_ = s.offLocked()
		}
	})
	if err := s.pin.Out(s.level(true)); err != nil {
		_ = s.offLocked()
		return nil, fmt.Errorf("hal: %s: switch on: %w", s.name, err)
	}
	// Count the pulse from when the coil is on. (Should the timer have
	// fired during a very slow Out, its func is waiting for mu and switches
	// the coil off as soon as we return.)
	s.guard.Reset(d)
	return done, nil
}

// off switches the coil off and ends a running pulse; it may be called any
// number of times.
func (s *Solenoid) off() error {
	s.mu.Lock()
	defer s.unlock()
	return s.offLocked()
}

// writeOff writes the inactive level once: an expander pin the careful way
// (reinit: its chip's registers all written again), read back.
func (s *Solenoid) writeOff(reinit bool) error {
	if v, ok := s.pin.(verifiedOut); ok {
		return v.outVerified(s.level(false), reinit)
	}
	return s.pin.Out(s.level(false))
}

// offLocked is off with s.mu held. It writes the inactive level even when the
// coil is thought to be off: a write too many is harmless, one too few burns
// a coil. When the write fails the coil counts as on (no new pulse) and the
// retry timer tries again until a write succeeds.
func (s *Solenoid) offLocked() error {
	err := s.writeOff(s.stuck != nil)
	if s.guard != nil {
		s.guard.Stop()
		s.guard = nil
	}
	if s.done != nil {
		close(s.done)
		s.done = nil
	}
	if err != nil {
		err = fmt.Errorf("%w: %s: %w", ErrCoilStuck, s.name, err)
		if s.stuck == nil {
			s.notes = append(s.notes, err)
		}
		s.on, s.stuck = true, err
		if s.retry == nil {
			delay := min(CoilRetryMin<<min(s.retries, 16), CoilRetryMax)
			var t *time.Timer
			t = time.AfterFunc(delay, func() {
				s.mu.Lock()
				defer s.unlock()
				if s.retry != t {
					return
				}
				s.retry = nil
				s.retries++
				_ = s.offLocked()
			})
			s.retry = t
		}
		return err
	}
	s.on = false
	if s.stuck != nil {
		s.stuck, s.retries = nil, 0
		s.notes = append(s.notes, nil)
	}
	if s.retry != nil {
		s.retry.Stop()
		s.retry = nil
	}
	return nil
}

// unlock releases s.mu and then delivers the reports queued under it, in
// order and without mu held. It returns only once every report of a change
// made before it has been delivered, by whichever goroutine made it: a
// Pulse that returns has been reported as stuck, if it is.
func (s *Solenoid) unlock() {
	notes, report := s.notes, s.report
	s.notes = nil
	s.reportMu.Lock()
	s.mu.Unlock()
	defer s.reportMu.Unlock()
	if report == nil {
		return
	}
	for _, n := range notes {
		report(n)
	}
}

// Halt switches the coil off at once, ends a running pulse (which returns
// ErrHalted) and refuses further pulses. It implements conn.Resource and is
// safe to call more than once and from any goroutine. When the switch-off
// fails, Halt returns the ErrCoilStuck error and the retries go on.
func (s *Solenoid) Halt() error {
	s.mu.Lock()
	defer s.unlock()
	s.halted = true
	return s.offLocked()
}
