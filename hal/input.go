package hal

import (
	"fmt"
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// debouncer turns raw samples of a contact into a stable level: a new level
// counts once it has been read continuously for the hold time. It is not
// safe for concurrent use; the input poller owns it.
type debouncer struct {
	stable  bool      // the debounced level
	pending bool      // a sample differed from stable …
	since   time.Time // … first at this time, and every sample since did too
}

// update feeds one sample taken at now and reports whether the stable level
// changed with it.
func (d *debouncer) update(v bool, now time.Time, hold time.Duration) bool {
	switch {
	case v == d.stable:
		d.pending = false // a bounce back: start over
		return false
	case !d.pending:
		d.pending, d.since = true, now
		return false
	case now.Sub(d.since) >= hold:
		d.stable, d.pending = v, false
		return true
	}
	return false
}

// chatter detects a contact that changes far more often than a door moves
// or a parcel comes and goes.
// Raw changes closer together than merge count as one (contact bounce is
// not chatter); more than limit counted changes within window make a
// fault, which ends once the raw level has been steady for window. Owned
// by the poller.
type chatter struct {
	raw     bool
	changed time.Time   // last raw change
	counted time.Time   // last counted change
	times   []time.Time // counted changes within the window, oldest first
	faulty  bool
}

// update feeds one raw sample; it reports a new fault (with the count) or
// the end of one.
func (c *chatter) update(v bool, now time.Time, merge, window time.Duration, limit int) (fault bool, count int, recovered bool) {
	if v != c.raw {
		c.raw, c.changed = v, now
		if c.counted.IsZero() || now.Sub(c.counted) >= merge {
			c.counted = now
			c.times = append(c.times, now)
		}
	}
	drop := 0
	for drop < len(c.times) && now.Sub(c.times[drop]) > window {
		drop++
	}
	c.times = c.times[drop:]
	switch {
	case !c.faulty && len(c.times) > limit:
		c.faulty = true
		return true, len(c.times), false
	case c.faulty && now.Sub(c.changed) >= window:
		c.faulty = false
		c.times = c.times[:0]
		return false, 0, true
	}
	return false, 0, false
}

// sensor is one debounced input: a door or occupancy sensor, on a GPIO pin
// or on an expander.
type sensor struct {
	kind      EventKind // DoorChanged or ParcelChanged
	n         int       // compartment
	pin       gpio.PinIn
	exp       *expander // the expander the pin is on; nil for a board pin
	bit       int       // the pin's index on exp
	activeLow bool      // the pin reads low when the sensor is on (open, present)

	// Owned by the poller.
	deb      debouncer
	chat     chatter
	reported bool // the level of the last event (or the first reading)

	state atomic.Bool // reported, for readers on other goroutines
	// known: the sensor has been read once. A board that did not answer
	// at start leaves its sensors unknown until its first status: their
	// "off" is no reading, and must not be taken for one.
	known atomic.Bool
}

// read samples the sensor: true when it is on; ok is false when it cannot
// be read (its expander is not answering).
func (s *sensor) read() (on, ok bool) {
	if b, ok := s.pin.(*boardInput); ok {
		return b.read()
	}
	if s.exp == nil {
		return (s.pin.Read() == gpio.High) != s.activeLow, true
	}
	if !s.exp.ok {
		return false, false
	}
	return (s.exp.levels>>s.bit&1 == 1) != s.activeLow, true
}

// init takes the first reading as the stable state, without debouncing;
// a sensor that cannot be read stays unknown until it can.
func (s *sensor) init() {
	v, ok := s.read()
	s.settle(v)
	s.known.Store(ok)
}

// settle takes v as the stable, reported state.
func (s *sensor) settle(v bool) {
	s.deb = debouncer{stable: v}
	s.reported = v
	s.chat.raw = v
	s.state.Store(v)
}

// source names the sensor in SensorFault and SensorRecovered events:
// "door" or "parcel".
func (s *sensor) source() string {
	if s.kind == ParcelChanged {
		return "parcel"
	}
	return "door"
}

// what names the sensor in errors: "door sensor" or "occupancy sensor".
func (s *sensor) what() string {
	if s.kind == ParcelChanged {
		return "occupancy sensor"
	}
	return "door sensor"
}

// sensorLimits are the wiring's debounce and chatter settings.
type sensorLimits struct {
	debounce      time.Duration
	chatterWindow time.Duration
	chatterLimit  int
}

// poll samples the sensor once and returns the events it gives: a debounced
// change (none while the sensor chatters), a SensorFault when it starts to
// chatter, a SensorRecovered (and the change it hid, if any) when it stops.
// Door and occupancy sensors are judged alike. Unreadable, it keeps its
// state and forgets a change in progress.
func (s *sensor) poll(now time.Time, l sensorLimits, out []Event) []Event {
	v, ok := s.read()
	if !ok {
		s.deb.pending = false
		return out
	}
	if !s.known.Load() {
		// The first reading of a sensor unknown at start is its state,
		// with no event: it changed nothing anyone saw (Readable tells
		// the controller that it can now judge the compartment).
		s.settle(v)
		s.known.Store(true)
		return out
	}
	fault, count, recovered := s.chat.update(v, now, l.debounce, l.chatterWindow, l.chatterLimit)
	switch {
	case fault:
		out = append(out, Event{Kind: SensorFault, Compartment: s.n, Source: s.source(), At: now,
			Err: fmt.Errorf("%w: %s: %d changes within %v", ErrChatter, s.what(), count, l.chatterWindow)})
	case recovered:
		out = append(out, Event{Kind: SensorRecovered, Compartment: s.n, Source: s.source(), At: now})
	}
	s.deb.update(v, now, l.debounce)
	if s.chat.faulty || s.deb.stable == s.reported {
		return out
	}
	s.reported = s.deb.stable
	s.state.Store(s.reported)
	return append(out, Event{Kind: s.kind, Compartment: s.n, On: s.reported, At: now})
}
