// Package hal is the locker's hardware abstraction: door solenoids, door and
// occupancy sensors, the keypad and the display, built from named periph
// pins (gpio.PinIO) so that the same code drives a real board and the
// simulated cabinet.
//
// Data flows one way: pins → hal events → controller. hal knows nothing of
// grants, parcels or MQTT.
package hal

import (
	"errors"
	"time"
)

// EventKind says what a hardware Event reports.
type EventKind int

const (
	// DoorChanged: the debounced door sensor of Compartment changed; On is
	// true when the door is open.
	DoorChanged EventKind = iota + 1
	// ParcelChanged: the debounced occupancy sensor of Compartment changed;
	// On is true when a parcel is present.
	ParcelChanged
	// KeyPressed: a key of the keypad went down (Key is one of
	// "0123456789*#ABCD").
	KeyPressed
	// LockReleased: a release of Compartment's lock ended. Err is nil when
	// the door sensor reported the door open within the confirmation time
	// (after at most one retry pulse), or when the door was open already;
	// otherwise Err wraps ErrLockFault (the door did not open) or says why
	// the pulse could not be given.
	LockReleased
	// SensorFault: a sensor of Compartment cannot be trusted: its door or
	// occupancy sensor chatters (Err wraps ErrChatter; no DoorChanged or
	// ParcelChanged of it until it recovers), or the expander behind it
	// cannot be read (ErrExpander). Compartment is 0 for a fault that is
	// not one compartment's (a whole expander). With Source "lock" it is
	// the compartment's coil: its switch-off failed (Err wraps
	// ErrCoilStuck), it may be energised, and the driver keeps trying.
	SensorFault
	// SensorRecovered: the sensor (or expander, or coil) of a SensorFault
	// reads sanely again (the coil is off). A sensor whose level changed
	// meanwhile reports the settled level just after it.
	SensorRecovered
)

// String returns a short name of the kind: "door", "parcel", "key", "lock".
func (k EventKind) String() string {
	switch k {
	case DoorChanged:
		return "door"
	case ParcelChanged:
		return "parcel"
	case KeyPressed:
		return "key"
	case LockReleased:
		return "lock"
	case SensorFault:
		return "sensor-fault"
	case SensorRecovered:
		return "sensor-recovered"
	}
	return "unknown"
}

// Event is one fact reported by the hardware.
type Event struct {
	Kind        EventKind
	Compartment int  // DoorChanged, ParcelChanged, LockReleased
	On          bool // door open / parcel present
	Key         byte // KeyPressed
	Err         error
	// Source names the sensor of a SensorFault or SensorRecovered: "door",
	// "parcel" (the occupancy sensor), "lock" (the coil), or "expander X1"
	// for a whole expander (Compartment 0).
	Source string
	At     time.Time
}

// Compartment describes one compartment's hardware.
type Compartment struct {
	Number       int
	Size         string // S, M, L, XL
	HasOccupancy bool   // an occupancy sensor is wired
}

// Cabinet is what the controller needs from the hardware. *Hardware
// implements it over pins; the controller's unit tests use a fake.
type Cabinet interface {
	// Compartments lists the wired compartments in ascending number.
	Compartments() []Compartment
	// Release queues one release pulse for compartment n and returns at once;
	// a LockReleased event follows when the pulse is done.
	Release(n int) error
	// DoorOpen is the current debounced reading of compartment n's door sensor.
	DoorOpen(n int) (bool, error)
	// ParcelPresent is the current debounced reading of compartment n's
	// occupancy sensor; ok is false when none is wired.
	ParcelPresent(n int) (present, ok bool, err error)
	// Show writes the lines to the display (missing lines are blank).
	Show(lines ...string) error
	// Events delivers hardware events in the order they happened.
	Events() <-chan Event
}

// Readiness is implemented by cabinets whose sensors may be unread at
// start (a lock board that did not answer): the controller leaves such a
// compartment as it was stored until Readable says its readings are real,
// instead of taking "off" for "door closed, nothing inside".
type Readiness interface {
	Readable(n int) bool
}

// Sentinel errors.
var (
	// ErrNoCompartment: the compartment number is not wired.
	ErrNoCompartment = errors.New("hal: no such compartment")
	// ErrNoPin: the wiring names a pin that the board does not have.
	ErrNoPin = errors.New("hal: no such pin")
	// ErrHalted: the hardware was halted; nothing more is driven.
	ErrHalted = errors.New("hal: halted")
	// ErrLockFault: the door did not open after a release and one retry.
	// The hardware cannot tell a jammed latch from a door sensor stuck at
	// "closed": both give this error.
	ErrLockFault = errors.New("hal: door did not open after release")
	// ErrChatter: a door or occupancy sensor changes too often to be a
	// door or a parcel; the error says which sensor.
	ErrChatter = errors.New("hal: sensor chatters")
)

// Display is a text display: *HD44780 and *ST7920 implement it. Show
// writes one line per row, padded or truncated to the width, and is safe
// for concurrent use.
type Display interface {
	Show(lines ...string) error
}

// Indicators is implemented by cabinets with a status LED per compartment.
// The controller lights a compartment's LED while its door is released for
// someone, so that they find it.
type Indicators interface {
	SetLED(n int, on bool) error
}
