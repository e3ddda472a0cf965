package hal

import (
	"errors"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
)

// fakePin is a gpio.PinIO for tests. It records every Out with its time (and
// on a shared bus, when it has one, so that the order of writes across pins
// can be checked); Read returns the level set by set, or readFn's.
type fakePin struct {
	name   string
	bus    *bus              // optional
	readFn func() gpio.Level // optional, for the keypad's columns

	mu       sync.Mutex
	level    gpio.Level
	isOut    bool
	pull     gpio.Pull
	edge     gpio.Edge
	ins      int // In calls
	outs     []outRec
	failOut  error            // Out fails with it
	failOuts int              // the next failOuts Out calls fail (errBroken)
	outFails int              // Out calls that failed
	failIn   error            // In fails with it
	onOut    func(gpio.Level) // optional: called after each Out, without mu
}

var _ gpio.PinIO = (*fakePin)(nil)

type outRec struct {
	l  gpio.Level
	at time.Time
}

// bus records the writes of several pins in order.
type bus struct {
	mu  sync.Mutex
	log []busRec
}

type busRec struct {
	pin string
	in  bool // an In call; else Out of l
	l   gpio.Level
}

func (b *bus) add(r busRec) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = append(b.log, r)
}

func (b *bus) records() []busRec {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]busRec(nil), b.log...)
}

func (p *fakePin) String() string         { return p.name }
func (p *fakePin) Halt() error            { return nil }
func (p *fakePin) Name() string           { return p.name }
func (p *fakePin) Number() int            { return -1 }
func (p *fakePin) Function() string       { return "" }
func (p *fakePin) DefaultPull() gpio.Pull { return gpio.PullNoChange }

func (p *fakePin) In(pull gpio.Pull, edge gpio.Edge) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failIn != nil {
		return p.failIn
	}
	p.isOut, p.pull, p.edge = false, pull, edge
	p.ins++
	if p.bus != nil {
		p.bus.add(busRec{pin: p.name, in: true})
	}
	return nil
}

func (p *fakePin) Read() gpio.Level {
	if p.readFn != nil {
		return p.readFn()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.level
}

func (p *fakePin) WaitForEdge(time.Duration) bool { return false }

func (p *fakePin) Pull() gpio.Pull {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pull
}

func (p *fakePin) Out(l gpio.Level) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failOut != nil {
		p.outFails++
		return p.failOut
	}
	if p.failOuts > 0 {
		p.failOuts--
		p.outFails++
		return errBroken
	}
	p.isOut, p.level = true, l
	p.outs = append(p.outs, outRec{l, time.Now()})
	if p.bus != nil {
		p.bus.add(busRec{pin: p.name, l: l})
	}
	if f := p.onOut; f != nil {
		p.mu.Unlock()
		defer p.mu.Lock()
		f(l)
	}
	return nil
}

func (p *fakePin) PWM(gpio.Duty, physic.Frequency) error { return errors.New("fake: no PWM") }

// errBroken is the error of fakePin.failOuts.
var errBroken = errors.New("fake: pin write failed")

// fail makes the next n Out calls fail; with n < 0 every one until fail(0).
func (p *fakePin) fail(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failOut, p.failOuts = nil, 0
	if n < 0 {
		p.failOut = errBroken
	} else {
		p.failOuts = n
	}
}

// failures is the number of Out calls that failed.
func (p *fakePin) failures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outFails
}

// set sets the level an input reads.
func (p *fakePin) set(l gpio.Level) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.level = l
}

// get returns the pin's level.
func (p *fakePin) get() gpio.Level {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.level
}

func (p *fakePin) writes() []outRec {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]outRec(nil), p.outs...)
}

// interval is a time the pin was at its active level.
type interval struct{ start, end time.Time }

func (i interval) len() time.Duration { return i.end.Sub(i.start) }

// active returns the intervals during which the pin was written active; an
// interval still open has a zero end.
func (p *fakePin) active(activeLevel gpio.Level) []interval {
	var out []interval
	on := false
	for _, w := range p.writes() {
		switch {
		case w.l == activeLevel && !on:
			out = append(out, interval{start: w.at})
			on = true
		case w.l != activeLevel && on:
			out[len(out)-1].end = w.at
			on = false
		}
	}
	return out
}

// pinSet hands out fake pins by name, creating them on first use, except
// for the names in missing.
type pinSet struct {
	mu      sync.Mutex
	pins    map[string]*fakePin
	bus     *bus
	missing map[string]bool
}

func newPinSet() *pinSet {
	return &pinSet{pins: map[string]*fakePin{}, bus: &bus{}, missing: map[string]bool{}}
}

func (s *pinSet) get(name string) *fakePin {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pins[name]
	if p == nil {
		p = &fakePin{name: name, bus: s.bus}
		s.pins[name] = p
	}
	return p
}

// source is the PinSource over the set.
func (s *pinSet) source(name string) gpio.PinIO {
	if s.missing[name] {
		return nil
	}
	return s.get(name)
}
