package hal

import (
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

// sensor is one debounced input: a door or occupancy sensor.
type sensor struct {
	kind      EventKind // DoorChanged or ParcelChanged
	n         int       // compartment
	pin       gpio.PinIn
	activeLow bool // the pin reads low when the sensor is on (open, present)

	deb   debouncer   // owned by the poller
	state atomic.Bool // deb.stable, for readers on other goroutines
}

// read samples the pin: true when the sensor is on.
func (s *sensor) read() bool {
	return (s.pin.Read() == gpio.High) != s.activeLow
}

// init takes the first reading as the stable state, without debouncing.
func (s *sensor) init() {
	v := s.read()
	s.deb = debouncer{stable: v}
	s.state.Store(v)
}

// poll samples the pin once; it returns an event when the debounced state
// changed.
func (s *sensor) poll(now time.Time, hold time.Duration) (Event, bool) {
	if !s.deb.update(s.read(), now, hold) {
		return Event{}, false
	}
	s.state.Store(s.deb.stable)
	return Event{Kind: s.kind, Compartment: s.n, On: s.deb.stable, At: now}, true
}
