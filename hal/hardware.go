package hal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"periph.io/x/conn/v3"
	"periph.io/x/conn/v3/gpio"

	"github.com/openlocker/locker/hal/wiring"
)

// PinSource finds a pin by its name in the wiring; it returns nil when there
// is no such pin. Production passes gpioreg.ByName (after host.Init); the
// simulator passes its own lookup.
type PinSource func(name string) gpio.PinIO

// Options tune a Hardware. The zero value is right for a real board.
type Options struct {
	// Logger receives the hardware's log; nil discards it.
	Logger *slog.Logger
	// PulseGap is the least time between the end of one release pulse and
	// the start of the next (power budget); 0 means the default, 100ms.
	PulseGap time.Duration
	// ScanInterval is the keypad scan period; 0 means the default, 5ms.
	ScanInterval time.Duration
	// NoDisplayDelays skips the HD44780 datasheet delays: for simulated pins,
	// never for a real display.
	NoDisplayDelays bool
	// EventBuffer is the capacity of the Events channel; 0 means the
	// default, 256.
	EventBuffer int
}

// Defaults of Options.
const (
	DefaultPulseGap     = 100 * time.Millisecond
	DefaultScanInterval = 5 * time.Millisecond
	DefaultEventBuffer  = 256
)

// Hardware is a cabinet built from pins: it implements Cabinet.
//
// New configures the pins; Run drives them until its context is done. Only
// one coil is energised at a time: releases are queued and pulsed in order,
// PulseGap apart, by one worker. Sensors are polled every sensors.poll; a
// new level counts once it has read the same for sensors.debounce, and its
// event's At is the time of the reading that confirmed it.
type Hardware struct {
	log      *slog.Logger
	name     string
	pulse    time.Duration // release pulse length
	gap      time.Duration // Options.PulseGap
	poll     time.Duration // sensor sampling period
	debounce time.Duration // sensor hold time
	scan     time.Duration // keypad scan period

	// Fixed after New; index n-1 for compartment n.
	comps   []Compartment
	clog    []*slog.Logger // log.With("compartment", n)
	coils   []*Solenoid
	doors   []*sensor
	parcels []*sensor // nil where no occupancy sensor is wired
	keypad  *Keypad   // nil when none
	display *HD44780  // nil when none

	events chan Event
	wake   chan struct{} // capacity 1: a release was queued
	haltCh chan struct{} // closed by the first Halt

	// mu guards the fields below. Lock order: mu is never held while
	// calling into a Solenoid or the display (each has its own mutex).
	mu      sync.Mutex
	queue   []int // compartments waiting for a release pulse, FIFO
	busy    int   // releases queued or being pulsed
	halted  bool
	running bool
}

var (
	_ Cabinet       = (*Hardware)(nil)
	_ conn.Resource = (*Hardware)(nil)
)

// New resolves every pin of the wiring through pins and configures them:
// lock outputs first, to the coil-off level; then the display and keypad;
// then the sensor inputs (the wiring's pull, no edge detection: they are
// polled), whose first readings become the initial DoorOpen and
// ParcelPresent states. On any error New halts what it configured.
func New(w *wiring.Wiring, pins PinSource, opts Options) (h *Hardware, err error) {
	switch {
	case w == nil:
		return nil, errors.New("hal: no wiring")
	case pins == nil:
		return nil, errors.New("hal: no pin source")
	}
	if err := w.Validate(); err != nil {
		return nil, fmt.Errorf("hal: wiring: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h = &Hardware{
		log:      log,
		name:     w.Name,
		pulse:    min(w.Locks.Pulse, wiring.MaxPulse),
		gap:      orDefault(opts.PulseGap, DefaultPulseGap),
		poll:     w.Sensors.Poll,
		debounce: w.Sensors.Debounce,
		scan:     orDefault(opts.ScanInterval, DefaultScanInterval),
		events:   make(chan Event, orDefault(opts.EventBuffer, DefaultEventBuffer)),
		wake:     make(chan struct{}, 1),
		haltCh:   make(chan struct{}),
	}
	wcs := slices.Clone(w.Compartments)
	slices.SortFunc(wcs, func(a, b wiring.Compartment) int { return a.Number - b.Number })

	// Resolve every pin before touching any.
	r := resolver{pins: pins}
	type compPins struct{ lock, door, parcel gpio.PinIO }
	cps := make([]compPins, len(wcs))
	for i, c := range wcs {
		of := " of compartment " + strconv.Itoa(c.Number)
		cps[i].lock = r.get(c.Lock, "lock"+of)
		cps[i].door = r.get(c.Door, "door"+of)
		if c.Parcel != "" {
			cps[i].parcel = r.get(c.Parcel, "parcel"+of)
		}
	}
	var rows [4]gpio.PinOut
	var cols [4]gpio.PinIn
	if k := w.Keypad; k != nil {
		for i := range 4 {
			rows[i] = r.get(k.Rows[i], "keypad row "+strconv.Itoa(i+1))
			cols[i] = r.get(k.Cols[i], "keypad col "+strconv.Itoa(i+1))
		}
	}
	var rs, e gpio.PinOut
	var data [4]gpio.PinOut
	if d := w.Display; d != nil {
		rs, e = r.get(d.RS, "display rs"), r.get(d.E, "display e")
		for i := range 4 {
			data[i] = r.get(d.Data[i], "display d"+strconv.Itoa(i+4))
		}
	}
	if r.err != nil {
		return nil, r.err
	}

	defer func(hw *Hardware) { // h is nil by the time this runs
		if err != nil {
			_ = hw.Halt()
		}
	}(h)
	// Outputs first, locks before anything else: coils off.
	for i, c := range wcs {
		h.comps = append(h.comps, Compartment{Number: c.Number, Size: c.Size, HasOccupancy: c.Parcel != ""})
		h.clog = append(h.clog, log.With("compartment", c.Number))
		s, err := NewSolenoid("lock of compartment "+strconv.Itoa(c.Number), cps[i].lock, w.Locks.ActiveLow)
		if err != nil {
			return nil, err
		}
		h.coils = append(h.coils, s)
	}
	if d := w.Display; d != nil {
		if h.display, err = NewHD44780(rs, e, data, d.Cols, d.Rows, !opts.NoDisplayDelays); err != nil {
			return nil, err
		}
	}
	if k := w.Keypad; k != nil {
		if h.keypad, err = NewKeypad(rows, cols, [4]string(k.Layout)); err != nil {
			return nil, err
		}
	}
	// Then the sensors.
	pull := map[string]gpio.Pull{"up": gpio.PullUp, "down": gpio.PullDown, "none": gpio.Float}[w.Sensors.Pull]
	for i, c := range wcs {
		door := &sensor{kind: DoorChanged, n: c.Number, pin: cps[i].door, activeLow: w.Sensors.DoorOpenLow}
		if err := door.pin.In(pull, gpio.NoEdge); err != nil {
			return nil, fmt.Errorf("hal: door of compartment %d: pin %s: %w", c.Number, c.Door, err)
		}
		door.init()
		h.doors = append(h.doors, door)
		var parcel *sensor
		if cps[i].parcel != nil {
			parcel = &sensor{kind: ParcelChanged, n: c.Number, pin: cps[i].parcel, activeLow: w.Sensors.ParcelPresentLow}
			if err := parcel.pin.In(pull, gpio.NoEdge); err != nil {
				return nil, fmt.Errorf("hal: parcel of compartment %d: pin %s: %w", c.Number, c.Parcel, err)
			}
			parcel.init()
		}
		h.parcels = append(h.parcels, parcel)
	}
	log.Info("hardware ready", "cabinet", w.Name, "compartments", len(wcs),
		"keypad", h.keypad != nil, "display", h.display != nil)
	return h, nil
}

// orDefault returns v, or def when v is not positive.
func orDefault[T ~int | ~int64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// resolver looks pins up and keeps the first failure.
type resolver struct {
	pins PinSource
	err  error
}

func (r *resolver) get(name, role string) gpio.PinIO {
	if r.err != nil {
		return nil
	}
	p := r.pins(name)
	if p == nil {
		r.err = fmt.Errorf("%w %q (%s)", ErrNoPin, name, role)
	}
	return p
}

// String implements conn.Resource.
func (h *Hardware) String() string { return "hal(" + h.name + ")" }

// Run polls the sensors, scans the keypad and pulses the queued releases
// until ctx is done or Hardware is halted; then it halts the hardware and
// returns nil. It returns ErrHalted at once on halted hardware. A panic in
// one of its goroutines halts the hardware (coils off) before it crashes the
// program.
func (h *Hardware) Run(ctx context.Context) error {
	h.mu.Lock()
	if h.halted {
		h.mu.Unlock()
		return ErrHalted
	}
	if h.running {
		h.mu.Unlock()
		return errors.New("hal: Run called twice")
	}
	h.running = true
	h.mu.Unlock()
	defer h.Halt()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { h.protect(func() { h.pollSensors(ctx) }) })
	wg.Go(func() { h.protect(func() { h.releaseLoop(ctx) }) })
	if h.keypad != nil {
		wg.Go(func() { h.protect(func() { h.scanKeypad(ctx) }) })
	}
	select {
	case <-ctx.Done():
	case <-h.haltCh:
	}
	cancel()
	wg.Wait()
	h.log.Info("hardware stopped")
	return nil
}

// protect runs f; if f panics, it halts the hardware and panics on.
func (h *Hardware) protect(f func()) {
	defer func() {
		if r := recover(); r != nil {
			_ = h.Halt()
			panic(r)
		}
	}()
	f()
}

// Halt switches every coil off at once, drops the queued releases and stops
// Run. It implements conn.Resource and is safe to call more than once and
// concurrently with a pulse. After Halt, Release and Show return ErrHalted.
func (h *Hardware) Halt() error {
	var errs []error
	for _, c := range h.coils { // coils first: nothing else matters as much
		errs = append(errs, c.Halt())
	}
	h.mu.Lock()
	first := !h.halted
	h.halted = true
	dropped := len(h.queue)
	h.queue, h.busy = nil, 0
	h.mu.Unlock()
	err := errors.Join(errs...)
	if first {
		close(h.haltCh)
		h.log.Info("hardware halted", "dropped_releases", dropped)
	}
	if err != nil {
		h.log.Error("halt", "err", err)
	}
	return err
}

// Compartments implements Cabinet.
func (h *Hardware) Compartments() []Compartment { return slices.Clone(h.comps) }

// Events implements Cabinet. The channel is never closed. Senders wait for
// room (until Run stops) rather than drop an event: keep draining it.
func (h *Hardware) Events() <-chan Event { return h.events }

// check returns an ErrNoCompartment error unless n is wired.
func (h *Hardware) check(n int) error {
	if n < 1 || n > len(h.comps) {
		return fmt.Errorf("%w: %d", ErrNoCompartment, n)
	}
	return nil
}

// Release implements Cabinet: it queues one release pulse of compartment n's
// solenoid and returns at once. Pulses follow in the order of the calls,
// one coil at a time, while Run runs; each is followed by a LockReleased
// event.
func (h *Hardware) Release(n int) error {
	if err := h.check(n); err != nil {
		return err
	}
	h.mu.Lock()
	if h.halted {
		h.mu.Unlock()
		return ErrHalted
	}
	h.queue = append(h.queue, n)
	h.busy++
	queued := len(h.queue)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default: // already signalled
	}
	h.clog[n-1].Debug("release queued", "queued", queued)
	return nil
}

// Busy reports whether a release is queued or being pulsed.
func (h *Hardware) Busy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.busy > 0
}

// DoorOpen implements Cabinet.
func (h *Hardware) DoorOpen(n int) (bool, error) {
	if err := h.check(n); err != nil {
		return false, err
	}
	return h.doors[n-1].state.Load(), nil
}

// ParcelPresent implements Cabinet.
func (h *Hardware) ParcelPresent(n int) (present, ok bool, err error) {
	if err := h.check(n); err != nil {
		return false, false, err
	}
	s := h.parcels[n-1]
	if s == nil {
		return false, false, nil
	}
	return s.state.Load(), true, nil
}

// Show implements Cabinet; without a display it does nothing.
func (h *Hardware) Show(lines ...string) error {
	if h.display == nil {
		return nil
	}
	h.mu.Lock()
	halted := h.halted
	h.mu.Unlock()
	if halted {
		return ErrHalted
	}
	return h.display.Show(lines...)
}

// KeypadScans is the number of keypad scans so far (0 without a keypad): the
// simulator waits on it to know that a key press has been seen.
func (h *Hardware) KeypadScans() uint64 {
	if h.keypad == nil {
		return 0
	}
	return h.keypad.Scans()
}

// emit delivers ev, waiting for room while ctx lasts; false when ctx ended
// first.
func (h *Hardware) emit(ctx context.Context, ev Event) bool {
	select {
	case h.events <- ev:
		return true
	default:
	}
	h.log.Warn("event buffer full: waiting for the controller", "event", ev.Kind.String())
	select {
	case h.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// pollSensors samples every sensor each poll period and emits the debounced
// changes.
func (h *Hardware) pollSensors(ctx context.Context) {
	t := time.NewTicker(h.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for i := range h.doors {
			for _, s := range []*sensor{h.doors[i], h.parcels[i]} {
				if s == nil {
					continue
				}
				ev, ok := s.poll(now, h.debounce)
				if !ok {
					continue
				}
				h.clog[i].Debug("sensor changed", "sensor", ev.Kind.String(), "on", ev.On)
				if !h.emit(ctx, ev) {
					return
				}
			}
		}
	}
}

// scanKeypad scans the keypad each scan period and emits the key presses.
func (h *Hardware) scanKeypad(ctx context.Context) {
	t := time.NewTicker(h.scan)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		key, pressed, err := h.keypad.Scan()
		if err != nil {
			if err.Error() != lastErr { // do not log the same failure 200 times a second
				h.log.Error("keypad scan", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		if pressed && !h.emit(ctx, Event{Kind: KeyPressed, Key: key, At: time.Now()}) {
			return
		}
	}
}

// releaseLoop is the lock worker: it pulses the queued releases one at a
// time, PulseGap apart, and emits a LockReleased event after each.
func (h *Hardware) releaseLoop(ctx context.Context) {
	var last time.Time // end of the last pulse
	for {
		n, ok := h.nextRelease()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-h.wake:
				continue
			}
		}
		if wait := h.gap - time.Since(last); !last.IsZero() && wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		start := time.Now()
		err := h.coils[n-1].Pulse(ctx, h.pulse)
		last = time.Now()
		h.releaseDone()
		if err != nil {
			h.clog[n-1].Error("release pulse", "err", err)
		} else {
			h.clog[n-1].Info("released", "pulse", last.Sub(start).Round(time.Millisecond))
		}
		if !h.emit(ctx, Event{Kind: LockReleased, Compartment: n, Err: err, At: last}) {
			return
		}
	}
}

// nextRelease pops the next queued release.
func (h *Hardware) nextRelease() (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.halted || len(h.queue) == 0 {
		return 0, false
	}
	n := h.queue[0]
	h.queue = h.queue[1:]
	return n, true
}

// releaseDone counts a release as finished.
func (h *Hardware) releaseDone() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.busy > 0 {
		h.busy--
	}
}
