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
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"

	"github.com/openlocker/locker/hal/wiring"
)

// PinSource finds a pin by its name in the wiring; it returns nil when there
// is no such pin. Production passes gpioreg.ByName (after host.Init); the
// simulator passes its own lookup.
type PinSource func(name string) gpio.PinIO

// BusSource opens an I²C bus by the name the wiring gives it ("1").
type BusSource func(name string) (i2c.Bus, error)

// Options tune a Hardware. The zero value is right for a real board.
type Options struct {
	// Logger receives the hardware's log; nil discards it.
	Logger *slog.Logger
	// Buses opens the I²C buses of the wiring's expanders and display
	// back-pack; nil means periph's registry (i2creg.Open, after
	// host.Init). The simulator passes its Cabinet.Bus.
	Buses BusSource
	// ScanInterval is the keypad scan period; 0 means the default, 5ms.
	ScanInterval time.Duration
	// NoDisplayDelays skips the display's datasheet delays: for simulated
	// pins, never for a real display.
	NoDisplayDelays bool
	// EventBuffer is the capacity of the Events channel; 0 means the
	// default, 256.
	EventBuffer int
	// OpenSerial opens the serial devices of the wiring's RS485 buses;
	// nil means the termios opener (hal/rs485/serial). The simulator
	// passes one that hands out its pseudo-terminals.
	OpenSerial SerialOpener
	// ObserveRS485, when set, is asked once per RS485 bus of the wiring
	// for an observer of its frames (rs485.Config.Observe): a frame view
	// of a real bus. Nil, or a nil observer, leaves it off.
	ObserveRS485 BusObserver
	// InputChanges, when set, promises that no sensor and no keypad key
	// changes without a value on the channel it returns (it is called
	// once by the poller and once by the scanner; the function ends the
	// subscription): a simulated cabinet's SubscribeInputs. While every
	// sensor rests the poller samples at the next change (RestPoll at the
	// latest) instead of every poll period, and the keypad scanner alike
	// while no key is down: an idle fleet of simulated lockers does not
	// read 48 pins ten times a second each. Never for real pins, which
	// change without telling: nil keeps the sampling every period.
	InputChanges func() (<-chan struct{}, func())
}

// Defaults of Options and other timings.
const (
	DefaultScanInterval = 5 * time.Millisecond
	DefaultEventBuffer  = 256
	// BeepLength is the key-press beep; MaxBeep caps any beep.
	BeepLength = 40 * time.Millisecond
	MaxBeep    = 200 * time.Millisecond
	// ExpanderRetry is how often an expander that stopped answering is
	// tried again; ExpanderCheck how often a working one's configuration
	// is read back (a chip that lost its power comes back as all inputs).
	ExpanderRetry = 100 * time.Millisecond
	ExpanderCheck = 500 * time.Millisecond
)

// Hardware is a cabinet built from pins: it implements Cabinet and
// Indicators.
//
// New configures the pins; Run drives them until its context is done.
// Releases are pulsed by a lock worker within the wiring's power budget and
// confirmed by the door sensors (see locks.go). Sensors are polled every
// sensors.poll — the inputs of each expander in one bus transaction per
// poll — and a new level counts once it has read the same for
// sensors.debounce; an event's At is the time of the reading that
// confirmed it.
type Hardware struct {
	log      *slog.Logger
	name     string
	pulse    time.Duration // release pulse length
	gap      time.Duration // least time between coil switchings
	cooldown time.Duration // least time between two pulses of one coil
	confirm  time.Duration // time for the door to read open after a pulse
	maxOn    int           // power budget: coils at once
	poll     time.Duration // sensor sampling period
	limits   sensorLimits
	scan     time.Duration // keypad scan period
	// inputs is Options.InputChanges.
	inputs func() (<-chan struct{}, func())

	// Fixed after New; index n-1 for compartment n.
	comps     []Compartment
	clog      []*slog.Logger // log.With("compartment", n)
	coils     []*Solenoid
	doors     []*sensor
	parcels   []*sensor          // nil where no occupancy sensor is wired
	leds      []gpio.PinOut      // nil where no LED is wired
	expanders []*expander        // in wiring order
	keypad    *Keypad            // nil when none
	buzzer    *buzzer            // nil when none
	display   Display            // nil when none
	buses     map[string]*busRun // RS485 buses by name; fixed after New

	events chan Event
	wake   chan struct{} // capacity 1: the lock worker has something to do
	haltCh chan struct{} // closed by the first Halt
	pulses sync.WaitGroup

	// mu guards the fields below. Lock order: mu is never held while
	// calling into a Solenoid, a pin or the display (each has its own
	// mutex); a Solenoid calls back into mu only after releasing its own.
	mu      sync.Mutex
	locks   lockState
	halted  bool
	running bool

	pollNanos atomic.Int64 // duration of the last sensor poll cycle
}

// expander is an I²C expander as the poller sees it.
type expander struct {
	chip   *MCP23017
	inputs bool // sensors are wired to it: sample it every poll

	// Owned by the poller (and by New before Run).
	ok        bool   // answering; false: its sensors are not read
	levels    uint16 // the last sample
	nextTry   time.Time
	nextCheck time.Time
}

var (
	_ Cabinet       = (*Hardware)(nil)
	_ Indicators    = (*Hardware)(nil)
	_ conn.Resource = (*Hardware)(nil)
)

// New opens the I²C buses and initialises the expanders of the wiring,
// resolves every pin through pins (or an expander), and configures them:
// lock outputs first, to the coil-off level; then LEDs and buzzer (off),
// the display and the keypad; then the sensor inputs (the wiring's pull,
// no edge detection: they are polled), whose first readings become the
// initial DoorOpen and ParcelPresent states. On any error New halts what it
// configured; an expander that does not answer is an error.
func New(w *wiring.Wiring, pins PinSource, opts Options) (h *Hardware, err error) {
	if err := checkArgs(w, pins); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	buses := opts.Buses
	if buses == nil {
		buses = func(name string) (i2c.Bus, error) { return i2creg.Open(name) }
	}
	h = &Hardware{
		log:      log,
		name:     w.Name,
		pulse:    min(w.Locks.Pulse, wiring.MaxPulse),
		gap:      w.Locks.Gap,
		cooldown: w.Locks.Cooldown,
		confirm:  w.Locks.Confirm,
		maxOn:    max(w.Locks.MaxEnergised, 1),
		poll:     w.Sensors.Poll,
		limits: sensorLimits{debounce: w.Sensors.Debounce, chatterWindow: w.Sensors.ChatterWindow,
			chatterLimit: w.Sensors.ChatterChanges},
		scan:   orDefault(opts.ScanInterval, DefaultScanInterval),
		inputs: opts.InputChanges,
		events: make(chan Event, orDefault(opts.EventBuffer, DefaultEventBuffer)),
		wake:   make(chan struct{}, 1),
		haltCh: make(chan struct{}),
	}
	wcs := slices.Clone(w.Compartments)
	slices.SortFunc(wcs, func(a, b wiring.Compartment) int { return a.Number - b.Number })

	// The buses and expanders first: their pins are resolved below.
	openBus := map[string]i2c.Bus{}
	bus := func(name string) (i2c.Bus, error) {
		if b, ok := openBus[name]; ok {
			return b, nil
		}
		b, err := buses(name)
		if err != nil {
			return nil, fmt.Errorf("hal: i2c bus %q: %w", name, err)
		}
		openBus[name] = b
		return b, nil
	}
	byName := map[string]*expander{}
	presets := lockPresets(w)
	for _, we := range w.Expanders {
		b, err := bus(we.Bus)
		if err != nil {
			return nil, fmt.Errorf("hal: expander %s: %w", we.Name, err)
		}
		pre := presets[we.Name]
		chip, err := newMCP23017(we.Name, b, we.Address, pre.olat, pre.outs)
		if err != nil {
			return nil, err
		}
		e := &expander{chip: chip, ok: true}
		h.expanders = append(h.expanders, e)
		byName[we.Name] = e
	}

	defer func(hw *Hardware) { // h is nil by the time this runs
		if err != nil {
			for _, b := range hw.buses {
				b.bus.Close()
			}
		}
	}(h)
	if err := h.openBuses(w, opts.OpenSerial, opts.ObserveRS485); err != nil {
		return nil, err
	}

	// Resolve every pin before touching any.
	r := resolver{w: w, pins: pins, exps: byName, buses: h.buses, activeLow: w.Locks.ActiveLow}
	type compPins struct{ lock, door, parcel, led gpio.PinIO }
	cps := make([]compPins, len(wcs))
	for i, c := range wcs {
		of := " of compartment " + strconv.Itoa(c.Number)
		if c.Bus != "" {
			cps[i].lock, cps[i].door, cps[i].parcel = r.board(w, c)
			if c.LED != "" {
				cps[i].led = r.get(c.LED, "led"+of)
			}
			continue
		}
		cps[i].lock = r.get(c.Lock, "lock"+of)
		cps[i].door = r.get(c.Door, "door"+of)
		if c.Parcel != "" {
			cps[i].parcel = r.get(c.Parcel, "parcel"+of)
		}
		if c.LED != "" {
			cps[i].led = r.get(c.LED, "led"+of)
		}
	}
	var rows [4]gpio.PinOut
	var cols [4]gpio.PinIn
	var buzz gpio.PinOut
	if k := w.Keypad; k != nil {
		for i := range 4 {
			rows[i] = r.get(k.Rows[i], "keypad row "+strconv.Itoa(i+1))
			cols[i] = r.get(k.Cols[i], "keypad col "+strconv.Itoa(i+1))
		}
		if k.Buzzer != "" {
			buzz = r.get(k.Buzzer, "keypad buzzer")
		}
	}
	var rs, e gpio.PinOut
	var data [4]gpio.PinOut
	if d := w.Display; d != nil && d.I2C == nil {
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
	h.locks.coilOn = make([]bool, len(wcs))
	h.locks.coolUntil = make([]time.Time, len(wcs))
	h.locks.endsAt = make([]time.Time, len(wcs))
	h.locks.stuck = make([]bool, len(wcs))
	for i, c := range wcs {
		h.comps = append(h.comps, Compartment{Number: c.Number, Size: c.Size, HasOccupancy: cps[i].parcel != nil})
		h.clog = append(h.clog, log.With("compartment", c.Number))
		s, err := NewSolenoid("lock of compartment "+strconv.Itoa(c.Number), cps[i].lock, w.Locks.ActiveLow)
		if err != nil {
			return nil, err
		}
		s.setReport(func(err error) { h.coilReport(i, err) })
		h.coils = append(h.coils, s)
	}
	for i, c := range wcs {
		var led gpio.PinOut
		if cps[i].led != nil {
			led = cps[i].led
			if err := led.Out(gpio.Low); err != nil {
				return nil, fmt.Errorf("hal: led of compartment %d: pin %s: %w", c.Number, c.LED, err)
			}
		}
		h.leds = append(h.leds, led)
	}
	if buzz != nil {
		if err := buzz.Out(gpio.Low); err != nil {
			return nil, fmt.Errorf("hal: keypad buzzer: pin %s: %w", w.Keypad.Buzzer, err)
		}
		h.buzzer = &buzzer{pin: buzz}
	}
	if d := w.Display; d != nil {
		var lb *lcdBus
		if d.I2C != nil {
			b, err := bus(d.I2C.Bus)
			if err != nil {
				return nil, fmt.Errorf("hal: display: %w", err)
			}
			lb = newI2CBus(b, d.I2C.Address, !opts.NoDisplayDelays)
		} else {
			lb = newPinBus(rs, e, data, !opts.NoDisplayDelays)
		}
		if h.display, err = newDisplay(d.Type, lb, d.Cols, d.Rows); err != nil {
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
	newSensor := func(kind EventKind, n int, name string, pin gpio.PinIO, activeLow bool) (*sensor, error) {
		s := &sensor{kind: kind, n: n, pin: pin, activeLow: activeLow}
		if ep, ok := w.ExpanderPin(name); ok {
			s.exp, s.bit = byName[ep.Expander.Name], ep.Index()
			s.exp.inputs = true
		}
		if _, ok := pin.(*boardInput); ok {
			s.activeLow = false // the bus applies the board's polarity
		}
		if err := pin.In(pull, gpio.NoEdge); err != nil {
			return nil, fmt.Errorf("hal: %s of compartment %d: pin %s: %w", kind, n, name, err)
		}
		return s, nil
	}
	for i, c := range wcs {
		door, err := newSensor(DoorChanged, c.Number, c.Door, cps[i].door, w.Sensors.DoorOpenLow)
		if err != nil {
			return nil, err
		}
		h.doors = append(h.doors, door)
		var parcel *sensor
		if cps[i].parcel != nil {
			if parcel, err = newSensor(ParcelChanged, c.Number, c.Parcel, cps[i].parcel, w.Sensors.ParcelPresentLow); err != nil {
				return nil, err
			}
		}
		h.parcels = append(h.parcels, parcel)
	}
	for _, e := range h.expanders {
		if !e.inputs {
			continue
		}
		if e.levels, err = e.chip.Sample(); err != nil {
			return nil, err
		}
	}
	for i := range h.doors {
		h.doors[i].init()
		if p := h.parcels[i]; p != nil {
			p.init()
		}
	}
	log.Info("hardware ready", "cabinet", w.Name, "compartments", len(wcs), "expanders", len(h.expanders), "rs485_buses", len(h.buses),
		"keypad", h.keypad != nil, "display", h.display != nil)
	return h, nil
}

// expanderPreset is what the first transactions to an expander make of its
// lock pins: outputs (outs), latched at the coil-off level (olat).
type expanderPreset struct{ olat, outs [2]byte }

// lockPresets returns, by expander name, the lock outputs of the wiring at
// their coil-off level.
func lockPresets(w *wiring.Wiring) map[string]expanderPreset {
	out := map[string]expanderPreset{}
	for _, c := range w.Compartments {
		ep, ok := w.ExpanderPin(c.Lock)
		if !ok {
			continue
		}
		pre := out[ep.Expander.Name]
		i := ep.Index()
		pre.outs[i/8] |= 1 << (i % 8)
		if w.Locks.ActiveLow {
			pre.olat[i/8] |= 1 << (i % 8)
		}
		out[ep.Expander.Name] = pre
	}
	return out
}

// newDisplay initialises the display driver of the wiring's display type
// on lb.
func newDisplay(typ string, lb *lcdBus, cols, rows int) (Display, error) {
	switch typ {
	case wiring.DisplayST7920:
		d, err := newST7920(lb, cols, rows)
		if err != nil {
			return nil, err
		}
		return d, nil
	case wiring.DisplayHD44780:
		d, err := newHD44780(lb, cols, rows)
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	return nil, fmt.Errorf("hal: display: type %q not supported", typ)
}

// orDefault returns v, or def when v is not positive.
func orDefault[T ~int | ~int64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// resolver looks pins up, on the board or an expander, and keeps the first
// failure.
type resolver struct {
	w         *wiring.Wiring
	pins      PinSource
	exps      map[string]*expander
	buses     map[string]*busRun
	activeLow bool // locks.active_low: the level a Solenoid energises with
	err       error
}

// board returns the pins of a compartment wired to an RS485 board: its
// lock, its door feedback and, with the bus's IR, its occupancy sensor
// (else nil).
func (r *resolver) board(w *wiring.Wiring, c wiring.Compartment) (lock, door, parcel gpio.PinIO) {
	b := r.buses[c.Bus].bus
	name := fmt.Sprintf("%s/%d/%d", c.Bus, c.Board, c.Channel)
	bp := boardPin{bus: b, addr: c.Board, ch: c.Channel}
	lp := &boardLock{boardPin: bp, activeLow: r.activeLow}
	lp.name = "lock " + name
	dp := &boardInput{boardPin: bp}
	dp.name = "door " + name
	lock, door = lp, dp
	if wb, _ := w.Bus(c.Bus); wb.HasIR() {
		pp := &boardInput{boardPin: bp, ir: true}
		pp.name = "ir " + name
		parcel = pp
	}
	return lock, door, parcel
}

func (r *resolver) get(name, role string) gpio.PinIO {
	if r.err != nil {
		return nil
	}
	if ep, ok := r.w.ExpanderPin(name); ok {
		return r.exps[ep.Expander.Name].chip.Pin(ep.Index())
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
	for _, b := range h.buses {
		wg.Go(func() { h.protect(func() { _ = b.bus.Run(ctx) }) })
	}
	if h.keypad != nil {
		wg.Go(func() { h.protect(func() { h.scanKeypad(ctx) }) })
	}
	select {
	case <-ctx.Done():
	case <-h.haltCh:
	}
	cancel()
	wg.Wait()
	h.pulses.Wait()
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

// Halt switches every coil off at once, then the LEDs and the buzzer,
// drops the queued releases and stops Run. It implements conn.Resource and
// is safe to call more than once and concurrently with a pulse. After Halt,
// Release, SetLED and Show return ErrHalted.
func (h *Hardware) Halt() error {
	// The queue goes first, then the coils: a coil halted while releases
	// were still queued ended its pulse and woke the release worker, which
	// could energise the next queued coil before the loop reached it (a
	// zero-length pulse after Halt, TestHardwareHaltMidPulse).
	h.mu.Lock()
	first := !h.halted
	h.halted = true
	dropped := len(h.locks.reqs)
	h.locks.reqs = nil
	h.mu.Unlock()
	var errs []error
	for _, c := range h.coils { // then the coils: nothing else matters as much
		errs = append(errs, c.Halt())
	}
	if first {
		for _, l := range h.leds {
			if l != nil {
				errs = append(errs, l.Out(gpio.Low))
			}
		}
		if h.buzzer != nil {
			errs = append(errs, h.buzzer.halt())
		}
	}
	err := errors.Join(errs...)
	for _, b := range h.buses { // a port primed but never run
		b.bus.Close()
	}
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

// Release implements Cabinet: it queues a release of compartment n's lock
// and returns at once. While Run runs, the lock worker pulses it within the
// power budget and confirms it by the door sensor; one LockReleased event
// follows per call (see locks.go).
func (h *Hardware) Release(n int) error {
	if err := h.check(n); err != nil {
		return err
	}
	h.mu.Lock()
	if h.halted {
		h.mu.Unlock()
		return ErrHalted
	}
	h.locks.reqs = append(h.locks.reqs, &releaseReq{n: n, phase: phaseQueued})
	queued := len(h.locks.reqs)
	h.mu.Unlock()
	h.poke()
	h.clog[n-1].Debug("release queued", "queued", queued)
	return nil
}

// Busy reports whether a release is queued, being pulsed or waiting for its
// door to open, or has ended and its LockReleased event is not yet in the
// Events channel.
func (h *Hardware) Busy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.locks.reqs) > 0 || h.locks.unsent > 0
}

// SetLED implements Indicators: it lights (or puts out) compartment n's
// status LED; without an LED wired it does nothing.
func (h *Hardware) SetLED(n int, on bool) error {
	if err := h.check(n); err != nil {
		return err
	}
	led := h.leds[n-1]
	if led == nil {
		return nil
	}
	h.mu.Lock()
	halted := h.halted
	h.mu.Unlock()
	if halted {
		return ErrHalted
	}
	if err := led.Out(gpio.Level(on)); err != nil {
		return fmt.Errorf("hal: led of compartment %d: %w", n, err)
	}
	return nil
}

// DoorOpen implements Cabinet.
func (h *Hardware) DoorOpen(n int) (bool, error) {
	if err := h.check(n); err != nil {
		return false, err
	}
	return h.doors[n-1].state.Load(), nil
}

// Readable implements Readiness: whether compartment n's sensors have been
// read since start. Only a board that did not answer at start leaves them
// unread; DoorOpen and ParcelPresent report "off" for them meanwhile.
func (h *Hardware) Readable(n int) bool {
	if h.check(n) != nil {
		return false
	}
	if p := h.parcels[n-1]; p != nil && !p.known.Load() {
		return false
	}
	return h.doors[n-1].known.Load()
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

// pollSensors samples every sensor each poll period and emits the changes.
func (h *Hardware) pollSensors(ctx context.Context) {
	p := newPacer(h.poll, h.inputs)
	defer p.stop()
	var evs []Event
	for rest := false; p.wait(ctx, rest); rest = h.sensorsAtRest() {
		start := time.Now()
		evs = h.pollOnce(start, evs[:0])
		h.pollNanos.Store(int64(time.Since(start)))
		for _, ev := range evs {
			if ev.Compartment > 0 {
				h.clog[ev.Compartment-1].Debug("sensor", "event", ev.Kind.String(), "on", ev.On, "err", ev.Err)
			}
			if !h.emit(ctx, ev) {
				return
			}
			if ev.Kind == DoorChanged && ev.On {
				h.doorOpened(ev.Compartment)
			}
		}
	}
}

// LastPollCycle is how long the last sensor poll cycle took: the expander
// transactions and the debouncing of every sensor.
func (h *Hardware) LastPollCycle() time.Duration { return time.Duration(h.pollNanos.Load()) }

// pollOnce samples the expanders (one transaction each) and then every
// sensor, and appends the events to out. Every ExpanderCheck it reads each
// expander's registers back (Check): directions, pull-ups and output
// latches, so that a latch left at a level the driver did not ask for (a
// coil left energised) is found. An expander that fails is reported once
// (SensorFault, Compartment 0) and tried again — at the next poll when
// Check failed, else every ExpanderRetry — by re-initialising it from the
// driver's register copy, then reported again (SensorRecovered). Its
// sensors keep their state meanwhile.
func (h *Hardware) pollOnce(now time.Time, out []Event) []Event {
	for _, e := range h.expanders {
		src := "expander " + e.chip.Name()
		if !e.ok {
			if now.Before(e.nextTry) {
				continue
			}
			if err := e.chip.Reinit(); err != nil {
				e.nextTry = now.Add(ExpanderRetry)
				continue
			}
			e.ok, e.nextCheck = true, now.Add(ExpanderCheck)
			h.log.Warn("expander answers again: re-initialised", "expander", e.chip.String())
			out = append(out, Event{Kind: SensorRecovered, Source: src, At: now})
		}
		var err error
		if e.inputs {
			e.levels, err = e.chip.Sample()
		}
		retry := ExpanderRetry
		if err == nil && !now.Before(e.nextCheck) {
			err = e.chip.Check()
			e.nextCheck = now.Add(ExpanderCheck)
			retry = 0 // it answers: restore its registers at the next poll
		}
		if err != nil {
			e.ok, e.nextTry = false, now.Add(retry)
			h.log.Error("expander", "expander", e.chip.String(), "err", err)
			out = append(out, Event{Kind: SensorFault, Source: src, Err: err, At: now})
		}
	}
	out = h.pollBoards(now, out)
	for i, d := range h.doors {
		out = d.poll(now, h.limits, out)
		if p := h.parcels[i]; p != nil {
			out = p.poll(now, h.limits, out)
		}
	}
	return out
}

// scanKeypad scans the keypad each scan period and emits the key presses.
func (h *Hardware) scanKeypad(ctx context.Context) {
	p := newPacer(h.scan, h.inputs)
	defer p.stop()
	var lastErr string
	quiet := 0 // scans in a row that found the keypad at rest
	for p.wait(ctx, quiet >= 2) {
		key, pressed, err := h.keypad.Scan()
		if err == nil && h.keypad.atRest() {
			quiet++
		} else {
			quiet = 0
		}
		if err != nil {
			if err.Error() != lastErr { // do not log the same failure 200 times a second
				h.log.Error("keypad scan", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		if !pressed {
			continue
		}
		if h.buzzer != nil {
			h.buzzer.beep(BeepLength)
		}
		if !h.emit(ctx, Event{Kind: KeyPressed, Key: key, At: time.Now()}) {
			return
		}
	}
}

// buzzer sounds the keypad buzzer; safe for concurrent use.
type buzzer struct {
	pin gpio.PinOut

	mu     sync.Mutex // guards the fields below and the pin
	gen    uint64     // the current beep, for its timer
	halted bool
}

// beep sounds the buzzer for d (at most MaxBeep) and returns at once: a
// timer ends it. A beep during a beep starts it again.
func (b *buzzer) beep(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.halted {
		return
	}
	b.gen++
	gen := b.gen
	if err := b.pin.Out(gpio.High); err != nil {
		_ = b.pin.Out(gpio.Low)
		return
	}
	time.AfterFunc(min(d, MaxBeep), func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.gen == gen && !b.halted {
			_ = b.pin.Out(gpio.Low)
		}
	})
}

// halt silences the buzzer for good.
func (b *buzzer) halt() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.halted = true
	return b.pin.Out(gpio.Low)
}

// checkArgs checks what New and LocksOff are given.
func checkArgs(w *wiring.Wiring, pins PinSource) error {
	switch {
	case w == nil:
		return errors.New("hal: no wiring")
	case pins == nil:
		return errors.New("hal: no pin source")
	}
	if err := w.Validate(); err != nil {
		return fmt.Errorf("hal: wiring: %w", err)
	}
	return nil
}
