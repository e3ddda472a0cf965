// Package wiring reads and validates a cabinet wiring file: which pins drive
// which lock and which sensors belong to which compartment.
package wiring

import "time"

// Wiring is a validated cabinet wiring.
type Wiring struct {
	// Name is a free label for the cabinet ("24-door GPIO cabinet").
	Name string `yaml:"name"`
	// Locks: how the solenoid relays are driven.
	Locks Locks `yaml:"locks"`
	// Sensors: how door and occupancy sensors read.
	Sensors Sensors `yaml:"sensors"`
	// Keypad is the 4x4 matrix keypad; nil when none is wired.
	Keypad *Keypad `yaml:"keypad"`
	// Display is the character display; nil when none is wired.
	Display *Display `yaml:"display"`
	// Compartments in ascending number, numbered 1..N without gaps.
	Compartments []Compartment `yaml:"compartments"`
}

// Locks describes the solenoid relay board.
type Locks struct {
	// ActiveLow: the relay board energises the coil when the pin is low.
	ActiveLow bool `yaml:"active_low"`
	// Pulse is the release pulse length (default 300ms, at most MaxPulse).
	Pulse time.Duration `yaml:"pulse"`
}

// Sensors describes the sensor inputs.
type Sensors struct {
	// DoorOpenLow: the door sensor reads low when the door is open (default:
	// high when open, i.e. a reed contact to ground that closes with the door,
	// with a pull-up).
	DoorOpenLow bool `yaml:"door_open_low"`
	// ParcelPresentLow: the occupancy sensor reads low when a parcel is there.
	ParcelPresentLow bool `yaml:"parcel_present_low"`
	// Pull is the input pull resistor: "up" (default), "down" or "none".
	Pull string `yaml:"pull"`
	// Debounce: a reading must be stable this long to count (default 30ms).
	Debounce time.Duration `yaml:"debounce"`
	// Poll is the sampling interval of the inputs (default 5ms).
	Poll time.Duration `yaml:"poll"`
}

// Keypad is a 4x4 matrix keypad: rows are driven, columns are read.
type Keypad struct {
	Rows []string `yaml:"rows"` // 4 output pins
	Cols []string `yaml:"cols"` // 4 input pins (pull-up; a pressed key pulls its column low while its row is driven low)
	// Layout gives the key at [row][col]; default "123A","456B","789C","*0#D".
	Layout []string `yaml:"layout"`
}

// Display is an HD44780 character LCD wired in 4-bit mode.
type Display struct {
	Type string   `yaml:"type"` // "hd44780"
	Cols int      `yaml:"cols"` // 16 or 20
	Rows int      `yaml:"rows"` // 2 or 4
	RS   string   `yaml:"rs"`
	E    string   `yaml:"e"`
	Data []string `yaml:"data"` // D4, D5, D6, D7
}

// Compartment is one door.
type Compartment struct {
	Number int    `yaml:"number"`
	Size   string `yaml:"size"`   // S, M, L, XL
	Lock   string `yaml:"lock"`   // solenoid relay output pin
	Door   string `yaml:"door"`   // door sensor input pin
	Parcel string `yaml:"parcel"` // occupancy sensor input pin; empty when none
}

// MaxPulse is the hard cap on a release pulse: no configuration and no bug
// can hold a coil on longer.
const MaxPulse = time.Second
