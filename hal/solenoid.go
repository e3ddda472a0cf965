package hal

import (
	"context"
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
// Wiring note: while the board boots, and possibly for a moment inside the
// first Out(), the pin floats; give active-low relay inputs a pull-up (and
// active-high ones a pull-down) so that a floating pin means "off".
type Solenoid struct {
	name      string
	pin       gpio.PinOut
	activeLow bool

	// mu guards the fields below and serialises every write to pin, so that
	// the guard timer, Pulse and Halt never interleave their writes.
	mu     sync.Mutex
	on     bool          // the coil is (being) energised
	halted bool          // Halt was called; the coil stays off
	guard  *time.Timer   // switches the coil off at the end of the pulse
	done   chan struct{} // closed when the running pulse ends; nil when none
}

var _ conn.Resource = (*Solenoid)(nil)

// NewSolenoid drives pin to the inactive level (coil off) and returns the
// driver. name is used in String and errors ("lock of compartment 3").
func NewSolenoid(name string, pin gpio.PinOut, activeLow bool) (*Solenoid, error) {
	s := &Solenoid{name: name, pin: pin, activeLow: activeLow}
	if err := pin.Out(s.level(false)); err != nil {
		return nil, fmt.Errorf("hal: %s: switch off: %w", name, err)
	}
	return s, nil
}

// String implements conn.Resource.
func (s *Solenoid) String() string { return s.name }

// level is the pin level that switches the coil on (or off).
func (s *Solenoid) level(on bool) gpio.Level {
	return gpio.Level(on != s.activeLow)
}

// On reports whether the coil is energised.
func (s *Solenoid) On() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.on
}

// Pulse energises the coil for d, capped at wiring.MaxPulse, and returns when
// the coil is off again. It returns early, with the coil off, when ctx is done
// (ctx.Err()) or the solenoid is halted (ErrHalted). Pulses on one Solenoid
// do not overlap: a Pulse while another runs is an error.
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
		if e := s.off(); e != nil && err == nil {
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
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// start arms the guard timer and then switches the coil on.
func (s *Solenoid) start(d time.Duration) (chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.halted:
		return nil, ErrHalted
	case s.on:
		return nil, fmt.Errorf("hal: %s: pulse already running", s.name)
	}
	done := make(chan struct{})
	s.done, s.on = done, true
	s.guard = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
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
	defer s.mu.Unlock()
	return s.offLocked()
}

// offLocked is off with s.mu held. It writes the inactive level even when the
// coil is thought to be off: a write too many is harmless, one too few burns
// a coil.
func (s *Solenoid) offLocked() error {
	err := s.pin.Out(s.level(false))
	s.on = err != nil // a failed write may have left it on: refuse new pulses
	if s.guard != nil {
		s.guard.Stop()
		s.guard = nil
	}
	if s.done != nil {
		close(s.done)
		s.done = nil
	}
	if err != nil {
		return fmt.Errorf("hal: %s: switch off: %w", s.name, err)
	}
	return nil
}

// Halt switches the coil off at once, ends a running pulse (which returns
// ErrHalted) and refuses further pulses. It implements conn.Resource and is
// safe to call more than once and from any goroutine.
func (s *Solenoid) Halt() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.halted = true
	return s.offLocked()
}
