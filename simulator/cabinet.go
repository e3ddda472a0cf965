// Package simulator is a physical model of a locker cabinet behind real
// periph pins (gpio.PinIO): door latches that release when the daemon
// energises a solenoid long enough, doors that spring ajar, door and
// occupancy sensors, a 4x4 matrix keypad and a character display: an
// HD44780, or an ST7920 showing Chinese.
//
// The daemon's hal drives the simulated pins exactly as it drives a board:
// it finds them by name (Cabinet.ByName, or gpioreg after Cabinet.Register),
// pulses lock pins, polls sensor pins, scans the keypad rows and columns and
// writes the display in 4-bit mode. People act on the cabinet through
// CloseDoor, OpenDoor, ForceDoor, SetParcel, SetFault, PressKey and
// ReleaseKey (the HTTP API of simulator/api calls them).
//
// # Physics
//
// A closed door is held by its latch. When a lock coil is energised
// continuously for at least Options.MinPulse, the latch releases and the door
// springs ajar: it is open and no longer latched, by itself. A person pushes
// the door shut (CloseDoor), which latches it again — unless the coil is
// still energised at that moment: then the door is closed but stays
// unlatched until the coil goes off, when the bolt drops and latches it. A
// door pulled while latched stays shut (OpenDoor returns ErrLatched) unless
// it is forced (ForceDoor). An open door is never latched.
//
// Faults are injected per compartment: FaultJammedLock (the coil fires but
// the latch holds), FaultSensorStuckOpen and FaultSensorStuckClosed (the
// door sensor reads open, or closed, whatever the door does) and
// FaultSensorBounce (every change of the door's position makes its sensor
// bounce for about 15 ms before it settles). Faults act on the door sensor
// only; occupancy sensors always read the truth.
//
// Sensors drive their line actively: the configured pull resistor does not
// change what a sensor pin reads, only door_open_low and parcel_present_low
// do. Keypad columns read their pull level (high unless pulled down) unless a
// held key connects them to a row driven low.
//
// # Persistence
//
// With Options.StatePath set, each compartment's door, latch, parcel and
// fault are written atomically to that JSON file on every change and loaded
// by New, so a cabinet survives a restart of its process, even kill -9. Coils,
// held keys and the display are not kept: they are lost with the power, as on
// a real board.
package simulator

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"

	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator/rs485"
)

// Sentinel errors.
var (
	// ErrNoCompartment: the compartment number is not in the wiring.
	ErrNoCompartment = errors.New("simulator: no such compartment")
	// ErrLatched: the door is held by its latch and cannot be pulled open.
	ErrLatched = errors.New("simulator: door is latched")
	// ErrDoorClosed: the door must be open to reach into the compartment.
	ErrDoorClosed = errors.New("simulator: door is closed")
	// ErrUnknownFault: the fault name is not one of the Fault constants.
	ErrUnknownFault = errors.New("simulator: unknown fault")
	// ErrNoKeypad: the wiring has no keypad.
	ErrNoKeypad = errors.New("simulator: no keypad wired")
	// ErrNoKey: the keypad has no such key.
	ErrNoKey = errors.New("simulator: no such key")
	// ErrCorruptState: the state file cannot be read back.
	ErrCorruptState = errors.New("simulator: corrupt state file")
	// ErrBadWiring: the wiring cannot be simulated (duplicate or missing pin
	// names, a keypad layout that does not fit its rows and columns…).
	ErrBadWiring = errors.New("simulator: bad wiring")
)

// Fault is a fault injected into a compartment.
type Fault string

// Faults.
const (
	FaultNone              Fault = "none"
	FaultJammedLock        Fault = "jammed_lock"         // the coil fires but the latch holds
	FaultSensorStuckOpen   Fault = "sensor_stuck_open"   // the door sensor always reads open
	FaultSensorStuckClosed Fault = "sensor_stuck_closed" // the door sensor always reads closed
	FaultSensorBounce      Fault = "sensor_bounce"       // the door sensor bounces on every move
)

// Faults lists every fault, FaultNone first.
func Faults() []Fault {
	return []Fault{FaultNone, FaultJammedLock, FaultSensorStuckOpen, FaultSensorStuckClosed, FaultSensorBounce}
}

// ParseFault returns the fault named s, or ErrUnknownFault.
func ParseFault(s string) (Fault, error) {
	f := Fault(s)
	if slices.Contains(Faults(), f) {
		return f, nil
	}
	return "", fmt.Errorf("%w %q", ErrUnknownFault, s)
}

// Door positions as reported in State.
const (
	DoorOpen   = "open"
	DoorClosed = "closed"
)

const (
	// DefaultMinPulse is the default Options.MinPulse.
	DefaultMinPulse = 50 * time.Millisecond
	// bounceWindow and bouncePeriod shape FaultSensorBounce: after a move the
	// sensor alternates between the old and the new reading every
	// bouncePeriod, starting with the old one, and settles after bounceWindow.
	bounceWindow = 15 * time.Millisecond
	bouncePeriod = 3 * time.Millisecond
)

// Options configure a Cabinet.
type Options struct {
	// StatePath is the JSON file keeping the physical state; "" keeps it in
	// memory only.
	StatePath string
	// MinPulse is how long a coil must be energised without a break to
	// release its latch (default DefaultMinPulse).
	MinPulse time.Duration
	// Logger receives the physical events (default: discard). It is called
	// with the model's mutex held: its handler must not call the Cabinet.
	Logger *slog.Logger
	// RealDevice says whether the serial device of an RS485 bus of the
	// wiring is a real one to drive (a USB-RS485 adapter with a board, an
	// emulator) rather than boards to simulate; nil simulates every bus.
	RealDevice func(device string) bool
	// KerongSilentUnlock makes the simulated Kerong boards answer nothing
	// to an unlock, as some boards do (the effect is read from the next
	// status); by default they answer with their status, as most do.
	KerongSilentUnlock bool
}

// State is the physical truth of the whole cabinet.
type State struct {
	Compartments []CompartmentState `json:"compartments"`
	// Display holds the visible rows of the display, trailing spaces
	// trimmed; nil when no display is wired.
	Display []string `json:"display"`
}

// CompartmentState is the physical truth of one compartment.
type CompartmentState struct {
	Number  int    `json:"number"`
	Size    string `json:"size"`
	Door    string `json:"door"` // DoorOpen or DoorClosed
	Latched bool   `json:"latched"`
	Parcel  bool   `json:"parcel"`
	Fault   Fault  `json:"fault"`
}

// Stats are the counters of one compartment since New, for tests and
// invariant checks.
type Stats struct {
	Energised      bool          // the coil is energised now
	Pulses         int           // times the coil was energised
	LastPulse      time.Duration // length of the last finished pulse
	LongestPulse   time.Duration // longest finished pulse
	TotalEnergised time.Duration // sum of the finished pulses
	Releases       int           // latch releases caused by the coil
	Forced         int           // times the door was forced open while latched
}

// Cabinet is a simulated cabinet. Its methods are safe for concurrent use.
type Cabinet struct {
	w         *wiring.Wiring
	log       *slog.Logger
	minPulse  time.Duration
	statePath string
	pins      []*Pin          // board pins, fixed after New, in creation order
	byName    map[string]*Pin // board pins, fixed after New
	allPins   map[string]*Pin // board and expander pins, fixed after New
	budget    int             // the wiring's locks.max_energised
	buses     map[string]*Bus // fixed after New

	// RS485 boards (boards.go), fixed after New.
	rs485      map[string]*rs485.Bus // the simulated buses, by name
	busOrder   []string              // their names, in wiring order
	realBuses  []string              // buses on a real device
	onBoard    map[boardKey]*comp    // compartments of simulated boards
	external   map[int]bool          // compartments on real boards
	boardPulse time.Duration         // a simulated board's coil pulse

	monitors map[string]*rs485.Monitor // frame views of the real buses (boards.go)

	// persistMu serialises writes of the state file. Lock order: persistMu
	// before mu; persistMu is never taken while mu is held.
	persistMu sync.Mutex
	savedGen  uint64 // the stateGen last written; guarded by persistMu

	// mu guards the whole model: every field below, the contents of comps,
	// keypad and lcd, and the mutable fields of every Pin. Nothing is called
	// under mu but the model's own code, the logger, and non-blocking sends
	// to subscribers: no callbacks, no file writes (persist runs after mu is
	// released). The hal therefore never waits on the simulator for longer
	// than a model update, except when its own pin write changes the
	// persistent state (a latch) and that write waits for the file.
	mu         sync.Mutex
	comps      []*comp // compartment n at index n-1
	coilsOn    int
	maxCoils   int
	keypad     *keypad // nil without a keypad
	lcd        *lcd    // nil without a display
	subs       map[int]chan struct{}
	nextSub    int
	inputSubs  map[int]chan struct{} // SubscribeInputs; ids from nextSub
	violations int                   // times more than budget coils were on
	pulseLog   []Pulse               // every coil's energised intervals, by start
	devices    []i2cDevice           // on the buses
	buzzer     *Pin                  // nil without a buzzer
	beeps      int                   // times the buzzer started sounding
	stateGen   uint64                // bumped on every change of the persistent state
	lastChange time.Time
	halted     bool
}

// comp is one compartment's physical state; guarded by Cabinet.mu.
type comp struct {
	number int
	size   string

	open      bool
	latched   bool
	hasParcel bool
	fault     Fault
	movedAt   time.Time // last change of the door's position

	coilOn        bool
	coilSince     time.Time
	coilGen       uint64 // identifies the current pulse for its timer
	pulseReleased bool   // the current pulse already acted on the latch
	timer         *time.Timer
	logIndex      int  // the current pulse's entry in Cabinet.pulseLog
	led           *Pin // nil without an LED

	stats Stats
}

// New builds the cabinet of wiring w, with one simulated pin per pin name of
// the wiring, and loads its physical state from opts.StatePath when the file
// exists (compartments are matched by number; the others start closed,
// latched, empty and without fault).
func New(w *wiring.Wiring, opts Options) (*Cabinet, error) {
	if w == nil {
		return nil, fmt.Errorf("%w: no wiring", ErrBadWiring)
	}
	c := &Cabinet{
		w:         w,
		log:       opts.Logger,
		minPulse:  opts.MinPulse,
		statePath: opts.StatePath,
		byName:    map[string]*Pin{},
		allPins:   map[string]*Pin{},
		buses:     map[string]*Bus{},
		budget:    max(w.Locks.MaxEnergised, 1),
		subs:      map[int]chan struct{}{},
		inputSubs: map[int]chan struct{}{},
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.minPulse <= 0 {
		c.minPulse = DefaultMinPulse
	}
	if err := c.buildBoards(opts.RealDevice, !opts.KerongSilentUnlock); err != nil {
		return nil, err
	}
	if err := c.build(); err != nil {
		return nil, err
	}
	if c.statePath != "" {
		if err := c.load(); err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.stateGen++ // write the file now, so that it exists from the start
		c.mu.Unlock()
		if err := c.persist(); err != nil {
			return nil, err
		}
	}
	if err := c.serveBoards(); err != nil {
		return nil, err
	}
	return c, nil
}

// build creates the I²C devices, the compartments and the pins.
func (c *Cabinet) build() error {
	if err := c.buildI2C(); err != nil {
		return err
	}
	settled := time.Now().Add(-bounceWindow) // no door is bouncing at start
	sensorPull := gpio.PullUp
	switch strings.ToLower(c.w.Sensors.Pull) {
	case "down":
		sensorPull = gpio.PullDown
	case "none":
		sensorPull = gpio.Float
	}
	for i, wc := range c.w.Compartments {
		if wc.Number != i+1 {
			return fmt.Errorf("%w: compartment %d is listed at position %d (want 1..N in order)", ErrBadWiring, wc.Number, i+1)
		}
		k := &comp{number: wc.Number, size: wc.Size, latched: true, fault: FaultNone, movedAt: settled, logIndex: -1}
		c.comps = append(c.comps, k)
		if wc.Bus != "" {
			if err := c.addBoardCompartment(k, wc); err != nil {
				return err
			}
			continue
		}
		if wc.Lock == "" || wc.Door == "" {
			return fmt.Errorf("%w: compartment %d needs a lock and a door pin", ErrBadWiring, wc.Number)
		}
		if _, err := c.addPin(wc.Lock, roleLock, i, gpio.Float); err != nil {
			return err
		}
		if _, err := c.addPin(wc.Door, roleDoor, i, sensorPull); err != nil {
			return err
		}
		if wc.Parcel != "" {
			if _, err := c.addPin(wc.Parcel, roleParcel, i, sensorPull); err != nil {
				return err
			}
		}
		if wc.LED != "" {
			p, err := c.addPin(wc.LED, roleLED, i, gpio.Float)
			if err != nil {
				return err
			}
			k.led = p
		}
	}
	if kp := c.w.Keypad; kp != nil {
		k, err := newKeypad(kp)
		if err != nil {
			return err
		}
		c.keypad = k
		for i, name := range kp.Rows {
			p, err := c.addPin(name, roleRow, i, gpio.Float)
			if err != nil {
				return err
			}
			k.rows = append(k.rows, p)
		}
		for i, name := range kp.Cols {
			if _, err := c.addPin(name, roleCol, i, gpio.PullUp); err != nil {
				return err
			}
		}
		if kp.Buzzer != "" {
			p, err := c.addPin(kp.Buzzer, roleBuzzer, 0, gpio.Float)
			if err != nil {
				return err
			}
			c.buzzer = p
		}
	}
	if d := c.w.Display; d != nil {
		rows, cols := d.Rows, d.Cols
		if rows == 0 {
			rows = 2
		}
		if cols == 0 {
			cols = 16
		}
		st7920 := d.Type == wiring.DisplayST7920
		if rows < 1 || rows > 4 || cols < 1 || cols > 40 || (st7920 && cols != 16) {
			return fmt.Errorf("%w: %s display of %d rows x %d cols", ErrBadWiring, d.Type, rows, cols)
		}
		c.lcd = newLCD(rows, cols, st7920)
		if d.I2C != nil {
			return c.addDevice(d.I2C.Bus, d.I2C.Address, &pcf8574{lcd: c.lcd})
		}
		if len(d.Data) != 4 {
			return fmt.Errorf("%w: the display needs 4 data pins (D4..D7), got %d", ErrBadWiring, len(d.Data))
		}
		var err error
		if c.lcd.rs, err = c.addPin(d.RS, roleLCDRS, 0, gpio.Float); err != nil {
			return err
		}
		if _, err := c.addPin(d.E, roleLCDE, 0, gpio.Float); err != nil {
			return err
		}
		for i, name := range d.Data {
			if c.lcd.data[i], err = c.addPin(name, roleLCDData, i, gpio.Float); err != nil {
				return err
			}
		}
	}
	return nil
}

// addPin creates the pin called name: a board pin, or a pin of one of the
// wiring's expanders ("X1.A0"), which only the expander's registers drive.
func (c *Cabinet) addPin(name string, r role, index int, pull gpio.Pull) (*Pin, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: a %s pin has no name", ErrBadWiring, r)
	}
	if old, ok := c.allPins[name]; ok {
		return nil, fmt.Errorf("%w: pin %s is wired twice (%s and %s)", ErrBadWiring, name, old.role, r)
	}
	p := &Pin{c: c, name: name, number: len(c.allPins), role: r, index: index, defPull: pull, pull: pull, halt: make(chan struct{})}
	c.allPins[name] = p
	if ep, ok := c.w.ExpanderPin(name); ok {
		m := c.mcpNamed(ep.Expander.Name)
		if m == nil {
			return nil, fmt.Errorf("%w: pin %s: no expander %s", ErrBadWiring, name, ep.Expander.Name)
		}
		m.pins[ep.Index()] = p
		p.number = ep.Index()
		p.pull = gpio.Float // the chip's power-on state
		return p, nil
	}
	p.number = len(c.pins)
	c.pins = append(c.pins, p)
	c.byName[name] = p
	return p, nil
}

// Wiring returns the wiring the cabinet was built from. Do not modify it.
func (c *Cabinet) Wiring() *wiring.Wiring { return c.w }

// MinPulse returns how long a coil must be energised to release its latch.
func (c *Cabinet) MinPulse() time.Duration { return c.minPulse }

// ByName returns the simulated pin called name, or nil when the wiring names
// no such pin (the contract of gpioreg.ByName).
func (c *Cabinet) ByName(name string) gpio.PinIO {
	if p, ok := c.byName[name]; ok {
		return p
	}
	return nil
}

// Pins returns every simulated pin, in the order of the wiring.
func (c *Cabinet) Pins() []gpio.PinIO {
	out := make([]gpio.PinIO, len(c.pins))
	for i, p := range c.pins {
		out[i] = p
	}
	return out
}

// Register registers every board pin in periph's global registry gpioreg
// and every I²C bus in i2creg (see Bus), for a process that runs a single
// cabinet, so that hal finds them with its default Options. On error
// nothing stays registered.
func (c *Cabinet) Register() error {
	for i, p := range c.pins {
		if err := gpioreg.Register(p); err != nil {
			for _, q := range c.pins[:i] {
				_ = gpioreg.Unregister(q.name)
			}
			return fmt.Errorf("simulator: registering pin %s: %w", p.name, err)
		}
	}
	if err := c.registerBuses(); err != nil {
		c.Unregister()
		return err
	}
	return nil
}

// Unregister removes the cabinet's pins from gpioreg and its buses from
// i2creg.
func (c *Cabinet) Unregister() {
	c.unregisterBuses()
	for _, p := range c.pins {
		if gpioreg.ByName(p.name) == gpio.PinIO(p) {
			_ = gpioreg.Unregister(p.name)
		}
	}
}

// Halt stops the cabinet's timers, interrupts every WaitForEdge and stops
// the simulated RS485 boards (their pseudo-terminals close). A coil still
// energised releases nothing more; the physical state stays as it is.
func (c *Cabinet) Halt() error {
	c.closeBoards()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.halted = true
	for _, k := range c.comps {
		if k.timer != nil {
			k.timer.Stop()
			k.timer = nil
		}
	}
	for _, p := range c.allPins {
		p.haltLocked()
	}
	return nil
}

// compLocked returns compartment n or ErrNoCompartment.
func (c *Cabinet) compLocked(n int) (*comp, error) {
	if n < 1 || n > len(c.comps) {
		return nil, fmt.Errorf("%w: %d", ErrNoCompartment, n)
	}
	return c.comps[n-1], nil
}

// changedLocked records a change visible in Snapshot and wakes the
// subscribers; persistent says the state file must be written (the caller
// calls persist after unlocking mu).
func (c *Cabinet) changedLocked(persistent bool) {
	if persistent {
		c.stateGen++
	}
	c.lastChange = time.Now()
	for _, ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	if persistent {
		// A door, latch, parcel or fault: what the sensors read. The
		// display, the LEDs, the buzzer and the coils' own changes
		// (persistent only when a latch moves) wake nobody.
		c.inputsChangedLocked()
	}
}

// inputsChangedLocked wakes the subscribers of SubscribeInputs.
func (c *Cabinet) inputsChangedLocked() {
	for _, ch := range c.inputSubs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// SubscribeInputs is Subscribe for what the input pins read: its channel
// receives a value after every change that may change the level of a door,
// occupancy or keypad column pin: a change of the persistent state (a door,
// a latch, a parcel, a fault), a key pressed or released, and a bouncing
// door sensor once more when its bounce is over. It is hal.Options.InputChanges
// for a fleet of simulated lockers, whose pins are then read only when
// something happened.
func (c *Cabinet) SubscribeInputs() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	id := c.nextSub
	c.nextSub++
	c.inputSubs[id] = ch
	c.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.inputSubs, id)
			c.mu.Unlock()
		})
	}
}

// bouncedLocked tells the input subscribers once more when k's door sensor
// has stopped bouncing after a move: its level changes then without any
// action.
func (c *Cabinet) bouncedLocked(k *comp) {
	if k.fault != FaultSensorBounce || len(c.inputSubs) == 0 {
		return
	}
	time.AfterFunc(bounceWindow, func() {
		c.mu.Lock()
		c.inputsChangedLocked()
		c.mu.Unlock()
	})
}

// Subscribe returns a channel that receives a value after every change of
// the snapshot (bursts are coalesced: the channel holds at most one pending
// value), and a function that ends the subscription. The channel is never
// closed.
func (c *Cabinet) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	id := c.nextSub
	c.nextSub++
	c.subs[id] = ch
	c.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.subs, id)
			c.mu.Unlock()
		})
	}
}

// LastChange is when the snapshot last changed (a door, a latch, a parcel,
// a fault, a coil, the display).
func (c *Cabinet) LastChange() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastChange
}

// Settled reports whether the physics is at rest: no coil energised and no
// door sensor bouncing.
func (c *Cabinet) Settled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.coilsOn > 0 {
		return false
	}
	now := time.Now()
	for _, k := range c.comps {
		if k.fault == FaultSensorBounce && now.Sub(k.movedAt) < bounceWindow {
			return false
		}
	}
	return true
}

// Snapshot returns the physical truth of every compartment and the display.
func (c *Cabinet) Snapshot() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := State{Compartments: make([]CompartmentState, len(c.comps))}
	for i, k := range c.comps {
		s.Compartments[i] = k.stateLocked()
	}
	if c.lcd != nil {
		s.Display = c.lcd.visible()
	}
	return s
}

// Compartment returns the physical truth of compartment n.
func (c *Cabinet) Compartment(n int) (CompartmentState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, err := c.compLocked(n)
	if err != nil {
		return CompartmentState{}, err
	}
	return k.stateLocked(), nil
}

func (k *comp) stateLocked() CompartmentState {
	door := DoorClosed
	if k.open {
		door = DoorOpen
	}
	return CompartmentState{Number: k.number, Size: k.size, Door: door, Latched: k.latched, Parcel: k.hasParcel, Fault: k.fault}
}

// Display returns the visible rows of the display, trailing spaces trimmed
// (blank while the display is off); nil when no display is wired.
func (c *Cabinet) Display() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lcd == nil {
		return nil
	}
	return c.lcd.visible()
}

// Stats returns the counters of compartment n.
func (c *Cabinet) Stats(n int) (Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, err := c.compLocked(n)
	if err != nil {
		return Stats{}, err
	}
	s := k.stats
	s.Energised = k.coilOn
	return s, nil
}

// MaxCoilsAtOnce is the largest number of coils that were energised at the
// same time since New.
func (c *Cabinet) MaxCoilsAtOnce() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxCoils
}

// Pulse is one energised interval of a coil.
type Pulse struct {
	Compartment int
	Start, End  time.Time // End is zero while the coil is on
}

// PulseLog returns every coil's energised intervals since New, in the order
// they started.
func (c *Cabinet) PulseLog() []Pulse {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.pulseLog)
}

// BudgetViolations is the number of times a coil was energised while the
// wiring's locks.max_energised coils were on already.
func (c *Cabinet) BudgetViolations() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.violations
}

// pulseSlack is what CheckInvariants allows a pulse beyond wiring.MaxPulse:
// the lateness of a loaded machine's timers.
const pulseSlack = 150 * time.Millisecond

// CheckInvariants returns an error when the cabinet's physics was abused:
// more coils energised at once than the wiring's locks.max_energised, or a
// coil energised longer than wiring.MaxPulse. Every test that drives a
// simulated cabinet should end with it.
func (c *Cabinet) CheckInvariants() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	if c.violations > 0 {
		errs = append(errs, fmt.Errorf("simulator: power budget broken %d times: up to %d coils on at once, max_energised %d", c.violations, c.maxCoils, c.budget))
	}
	now := time.Now()
	for _, p := range c.pulseLog {
		end := p.End
		if end.IsZero() {
			end = now
		}
		if d := end.Sub(p.Start); d > wiring.MaxPulse+pulseSlack {
			errs = append(errs, fmt.Errorf("simulator: coil of compartment %d energised for %v (cap %v)", p.Compartment, d, wiring.MaxPulse))
		}
	}
	return errors.Join(errs...)
}

// CheckSpacing returns an error when the pulses broke the wiring's timing:
// a pulse that started less than locks.gap after another pulse started or
// ended, or a coil pulsed again less than locks.cooldown after its last
// pulse ended. (Only the daemon's lock driver keeps these; tests that
// pulse pins by hand need not.)
func (c *Cabinet) CheckSpacing() error {
	log := c.PulseLog()
	gap, cool := c.w.Locks.Gap, c.w.Locks.Cooldown
	var errs []error
	lastEnd := map[int]time.Time{}
	for i, p := range log {
		for _, q := range log[:i] {
			if d := p.Start.Sub(q.Start); d < gap {
				errs = append(errs, fmt.Errorf("simulator: pulse of %d started %v after the start of %d's (gap %v)", p.Compartment, d, q.Compartment, gap))
			}
			if !q.End.IsZero() && !q.End.After(p.Start) && p.Start.Sub(q.End) < gap {
				errs = append(errs, fmt.Errorf("simulator: pulse of %d started %v after the end of %d's (gap %v)", p.Compartment, p.Start.Sub(q.End), q.Compartment, gap))
			}
		}
		if e, ok := lastEnd[p.Compartment]; ok && p.Start.Sub(e) < cool {
			errs = append(errs, fmt.Errorf("simulator: coil of %d pulsed again %v after its last pulse (cooldown %v)", p.Compartment, p.Start.Sub(e), cool))
		}
		lastEnd[p.Compartment] = p.End
	}
	return errors.Join(errs...)
}

// LED reports whether compartment n's status LED is lit (false when none
// is wired).
func (c *Cabinet) LED(n int) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, err := c.compLocked(n)
	if err != nil || k.led == nil {
		return false, err
	}
	return k.led.driveLocked().high(), nil
}

// Buzzer reports whether the keypad buzzer sounds now and how many beeps
// it gave since New.
func (c *Cabinet) Buzzer() (on bool, beeps int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buzzer == nil {
		return false, 0
	}
	return c.buzzer.driveLocked().high(), c.beeps
}

// CoilsOn is the number of coils energised now.
func (c *Cabinet) CoilsOn() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.coilsOn
}

// CloseDoor pushes door n shut. It latches, unless the coil is energised at
// that moment: then it stays closed and unlatched until the coil goes off.
// Closing a closed door changes nothing.
func (c *Cabinet) CloseDoor(n int) error {
	return c.act(n, "close", func(k *comp, now time.Time) (bool, error) {
		changed := false
		if k.open {
			k.open = false
			k.movedAt = now
			changed = true
		}
		if !k.latched && !k.coilOn {
			k.latched = true
			changed = true
		}
		return changed, nil
	})
}

// OpenDoor pulls door n: it opens only if its latch is released, else
// ErrLatched. Pulling an open door changes nothing.
func (c *Cabinet) OpenDoor(n int) error {
	return c.act(n, "open", func(k *comp, now time.Time) (bool, error) {
		if k.open {
			return false, nil
		}
		if k.latched {
			return false, fmt.Errorf("%w: compartment %d", ErrLatched, k.number)
		}
		k.open = true
		k.movedAt = now
		return true, nil
	})
}

// ForceDoor breaks door n open, latched or not.
func (c *Cabinet) ForceDoor(n int) error {
	return c.act(n, "force", func(k *comp, now time.Time) (bool, error) {
		if k.open {
			return false, nil
		}
		if k.latched {
			k.stats.Forced++
		}
		k.open = true
		k.latched = false
		k.movedAt = now
		return true, nil
	})
}

// SetParcel puts a parcel into compartment n (present) or takes it out;
// only while the door is open, else ErrDoorClosed.
func (c *Cabinet) SetParcel(n int, present bool) error {
	return c.act(n, "parcel", func(k *comp, _ time.Time) (bool, error) {
		if !k.open {
			return false, fmt.Errorf("%w: compartment %d", ErrDoorClosed, k.number)
		}
		changed := k.hasParcel != present
		k.hasParcel = present
		return changed, nil
	})
}

// SetFault injects fault f into compartment n (FaultNone clears it).
func (c *Cabinet) SetFault(n int, f Fault) error {
	if _, err := ParseFault(string(f)); err != nil {
		return err
	}
	return c.act(n, "fault", func(k *comp, _ time.Time) (bool, error) {
		changed := k.fault != f
		k.fault = f
		return changed, nil
	})
}

// act runs one person's action on compartment n under mu, then writes the
// state file if it changed anything.
func (c *Cabinet) act(n int, what string, f func(k *comp, now time.Time) (bool, error)) error {
	c.persistMu.Lock()
	defer c.persistMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	k, err := c.compLocked(n)
	if err != nil {
		return err
	}
	changed, err := f(k, time.Now())
	if changed {
		c.changedLocked(true)
		c.bouncedLocked(k)
		c.log.Debug("simulator: person", "action", what, "compartment", n, "state", k.stateLocked())
		// A person's action is on disk before any pin shows it, as physics
		// would have it: a kill -9 of the simulator cannot undo a door the
		// daemon saw closed.
		if perr := c.saveLocked(); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// setCoilLocked energises or de-energises compartment k's coil and reports
// whether the persistent state changed.
func (c *Cabinet) setCoilLocked(k *comp, on bool, now time.Time) bool {
	if on == k.coilOn {
		return false
	}
	persistent := false
	if on {
		k.coilOn = true
		k.coilSince = now
		k.coilGen++
		k.pulseReleased = false
		k.stats.Pulses++
		c.coilsOn++
		c.maxCoils = max(c.maxCoils, c.coilsOn)
		if c.coilsOn > c.budget {
			c.violations++
			c.log.Error("simulator: power budget exceeded", "coils_on", c.coilsOn, "max_energised", c.budget)
		}
		k.logIndex = len(c.pulseLog)
		c.pulseLog = append(c.pulseLog, Pulse{Compartment: k.number, Start: now})
		if !c.halted {
			gen := k.coilGen
			k.timer = time.AfterFunc(c.minPulse, func() { c.coilTimer(k, gen) })
		}
	} else {
		d := now.Sub(k.coilSince)
		k.coilOn = false
		c.coilsOn--
		if k.logIndex >= 0 {
			c.pulseLog[k.logIndex].End = now
			k.logIndex = -1
		}
		k.stats.LastPulse = d
		k.stats.LongestPulse = max(k.stats.LongestPulse, d)
		k.stats.TotalEnergised += d
		if k.timer != nil {
			k.timer.Stop()
			k.timer = nil
		}
		if d >= c.minPulse && !k.pulseReleased {
			persistent = c.releaseLocked(k, now)
		}
		if !k.open && !k.latched {
			// The door was pushed shut while the coil held the bolt back.
			k.latched = true
			persistent = true
		}
		c.log.Debug("simulator: coil off", "compartment", k.number, "pulse", d)
	}
	c.changedLocked(persistent)
	return persistent
}

// coilTimer runs MinPulse after coil k was energised for pulse gen.
func (c *Cabinet) coilTimer(k *comp, gen uint64) {
	c.mu.Lock()
	if !k.coilOn || k.coilGen != gen || k.pulseReleased || c.halted {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if d := now.Sub(k.coilSince); d < c.minPulse {
		k.timer = time.AfterFunc(c.minPulse-d, func() { c.coilTimer(k, gen) })
		c.mu.Unlock()
		return
	}
	persistent := c.releaseLocked(k, now)
	if persistent {
		c.changedLocked(true)
	}
	c.mu.Unlock()
	if persistent {
		if err := c.persist(); err != nil {
			c.log.Error("simulator: writing state", "err", err)
		}
	}
}

// releaseLocked acts on the latch of k once its coil was energised long
// enough, and reports whether the persistent state changed.
func (c *Cabinet) releaseLocked(k *comp, now time.Time) bool {
	k.pulseReleased = true
	if k.fault == FaultJammedLock {
		c.log.Info("simulator: coil fired, latch jammed", "compartment", k.number)
		return false
	}
	if !k.latched {
		return false
	}
	k.latched = false
	k.stats.Releases++
	if !k.open {
		k.open = true // the door springs ajar
		k.movedAt = now
		c.bouncedLocked(k)
	}
	c.log.Info("simulator: latch released, door ajar", "compartment", k.number)
	return true
}

// doorReadsOpenLocked is what k's door sensor says at now.
func (k *comp) doorReadsOpenLocked(now time.Time) bool {
	switch k.fault {
	case FaultSensorStuckOpen:
		return true
	case FaultSensorStuckClosed:
		return false
	case FaultSensorBounce:
		if since := now.Sub(k.movedAt); since >= 0 && since < bounceWindow && (since/bouncePeriod)%2 == 0 {
			return !k.open // the contact has not made it yet, or bounced back
		}
	}
	return k.open
}
