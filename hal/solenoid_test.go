package hal

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/openlocker/locker/hal/wiring"
)

func newTestSolenoid(t *testing.T, activeLow bool) (*Solenoid, *fakePin) {
	t.Helper()
	p := &fakePin{name: "L1"}
	s, err := NewSolenoid("lock 1", p, activeLow)
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}

// The solenoid tests run in a synctest bubble: time is the bubble's fake
// clock, so a pulse lasts exactly what it should and costs no real time.

func TestSolenoidPulse(t *testing.T) {
	for _, activeLow := range []bool{false, true} {
		t.Run(map[bool]string{false: "active high", true: "active low"}[activeLow], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, p := newTestSolenoid(t, activeLow)
				on, off := gpio.High, gpio.Low
				if activeLow {
					on, off = off, on
				}
				if w := p.writes(); len(w) != 1 || w[0].l != off {
					t.Fatalf("NewSolenoid wrote %v, want just %v", w, off)
				}
				const d = 50 * time.Millisecond
				start := time.Now()
				if err := s.Pulse(context.Background(), d); err != nil {
					t.Fatal(err)
				}
				if took := time.Since(start); took != d {
					t.Errorf("Pulse returned after %v, want %v", took, d)
				}
				iv := p.active(on)
				if len(iv) != 1 || iv[0].end.IsZero() {
					t.Fatalf("energised %v, want one closed interval", iv)
				}
				if got := iv[0].len(); got != d {
					t.Errorf("energised for %v, want %v", got, d)
				}
				if p.get() != off || s.On() {
					t.Errorf("after Pulse the pin is %v (On %v), want %v", p.get(), s.On(), off)
				}
			})
		})
	}
}

func TestSolenoidCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, p := newTestSolenoid(t, false)
		start := time.Now()
		if err := s.Pulse(context.Background(), time.Hour); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != wiring.MaxPulse {
			t.Errorf("Pulse(1h) took %v, want the cap %v", took, wiring.MaxPulse)
		}
		iv := p.active(gpio.High)
		if len(iv) != 1 || iv[0].len() != wiring.MaxPulse {
			t.Errorf("energised %v, want one pulse of %v", iv, wiring.MaxPulse)
		}
	})
}

// The guard timer switches the coil off even when the goroutine that
// started the pulse never comes back (start without the rest of Pulse).
func TestSolenoidGuardWithoutCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, p := newTestSolenoid(t, true)
		if _, err := s.start(30 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if p.get() != gpio.Low {
			t.Fatal("coil not on")
		}
		time.Sleep(30*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		if p.get() != gpio.Low {
			t.Fatal("coil off before the end of the pulse")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if p.get() != gpio.High {
			t.Fatal("the guard did not switch the coil off at the end of the pulse")
		}
		if got := p.active(gpio.Low)[0].len(); got != 30*time.Millisecond {
			t.Errorf("energised for %v, want 30ms", got)
		}
		// A stale guard must not cut a later pulse short.
		if err := s.Pulse(context.Background(), 40*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if got := p.active(gpio.Low)[1].len(); got != 40*time.Millisecond {
			t.Errorf("second pulse lasted %v, want 40ms", got)
		}
	})
}

func TestSolenoidHaltMidPulse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, p := newTestSolenoid(t, true)
		res := make(chan error, 1)
		go func() { res <- s.Pulse(context.Background(), 500*time.Millisecond) }()
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if !s.On() {
			t.Fatal("coil not on 100 ms into a 500 ms pulse")
		}
		var wg sync.WaitGroup
		for range 3 { // concurrently, and more than once
			wg.Go(func() {
				if err := s.Halt(); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if p.get() != gpio.High {
			t.Fatal("coil still on after Halt returned")
		}
		synctest.Wait() // Pulse has returned, or is blocked for good
		select {
		case err := <-res:
			if !errors.Is(err, ErrHalted) {
				t.Errorf("Pulse = %v, want ErrHalted", err)
			}
		default:
			t.Fatal("Pulse did not return after Halt")
		}
		if err := s.Pulse(context.Background(), time.Millisecond); !errors.Is(err, ErrHalted) {
			t.Errorf("Pulse after Halt = %v, want ErrHalted", err)
		}
		if iv := p.active(gpio.Low); len(iv) != 1 || iv[0].len() != 100*time.Millisecond {
			t.Errorf("energised %v, want one interval of 100ms, cut by Halt", iv)
		}
	})
}

func TestSolenoidContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, p := newTestSolenoid(t, false)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := s.Pulse(ctx, 500*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Pulse = %v", err)
		}
		if p.get() != gpio.Low {
			t.Error("coil on after a cancelled pulse")
		}
		if iv := p.active(gpio.High); len(iv) != 1 || iv[0].len() != 20*time.Millisecond {
			t.Errorf("energised %v, want one interval of 20ms, cut by the context", iv)
		}
		if err := s.Pulse(context.Background(), 10*time.Millisecond); err != nil {
			t.Errorf("Pulse after a cancelled one: %v", err)
		}
	})
}

func TestSolenoidErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, p := newTestSolenoid(t, false)
		if err := s.Pulse(context.Background(), 0); err == nil {
			t.Error("Pulse(0) succeeded")
		}
		go func() { _ = s.Pulse(context.Background(), 100*time.Millisecond) }()
		synctest.Wait()
		if !s.On() {
			t.Fatal("coil not on")
		}
		if err := s.Pulse(context.Background(), time.Millisecond); err == nil {
			t.Error("overlapping Pulse succeeded")
		}
		_ = s.Halt()

		p.mu.Lock()
		p.failOut = errors.New("broken")
		p.mu.Unlock()
		if _, err := NewSolenoid("lock 2", p, false); err == nil {
			t.Error("NewSolenoid on a broken pin succeeded")
		}
	})
}

// A panic in a worker goroutine halts the hardware: coils off.
func TestProtectHaltsOnPanic(t *testing.T) {
	r := newRig(t, rigWiring, Options{})
	coil := r.pins.get("L1")
	if _, err := r.hw.coils[0].start(time.Second); err != nil {
		t.Fatal(err)
	}
	if coil.get() != gpio.Low { // active low
		t.Fatal("coil not on")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("protect swallowed the panic")
			}
		}()
		r.hw.protect(func() { panic("boom") })
	}()
	if coil.get() != gpio.High {
		t.Error("coil left on after a panic")
	}
	if err := r.hw.Release(1); !errors.Is(err, ErrHalted) {
		t.Errorf("Release after the panic = %v, want ErrHalted", err)
	}
}
