// Package wiring reads and validates a cabinet wiring file: which pins drive
// which lock and which sensors belong to which compartment.
package wiring

import (
	"strings"
	"time"
)

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
	// Expanders are the I²C GPIO expanders whose pins the other sections
	// name as "NAME.A0" … "NAME.B7".
	Expanders []Expander `yaml:"expanders,omitempty"`
	// RS485 are the serial buses of lock-control boards; compartments name
	// a bus, a board and a channel instead of lock and door pins.
	RS485 []RS485Bus `yaml:"rs485,omitempty"`
	// Compartments in ascending number, numbered 1..N without gaps.
	Compartments []Compartment `yaml:"compartments"`
}

// Locks describes the solenoid relay board.
type Locks struct {
	// ActiveLow: the relay board energises the coil when the pin is low.
	ActiveLow bool `yaml:"active_low"`
	// Pulse is the release pulse length (default 300ms, at most MaxPulse).
	Pulse time.Duration `yaml:"pulse"`
	// Cooldown is the least time between the end of one pulse of a coil and
	// the start of its next one (default 1s; 0 allows back-to-back pulses).
	// A release that comes sooner waits; it is not dropped.
	Cooldown time.Duration `yaml:"cooldown"`
	// MaxEnergised is the power budget: how many coils may be energised at
	// once (default 1).
	MaxEnergised int `yaml:"max_energised"`
	// Gap is the least time between two switchings of coil power: a pulse
	// starts at least Gap after any other pulse started or ended (default
	// 100ms), so that the supply recovers between coils.
	Gap time.Duration `yaml:"gap"`
	// Confirm is how long the door sensor has, after a pulse, to report the
	// door open; then the pulse is given once more, and if the door still
	// does not open the release fails with a lock fault (default 2s).
	Confirm time.Duration `yaml:"confirm"`
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
	// ChatterChanges and ChatterWindow define a chattering door or occupancy
	// sensor: its raw level changed more than ChatterChanges times within
	// ChatterWindow (defaults 8 and 2s), changes closer together than
	// Debounce counting as one (contact bounce is not chatter). The sensor counts as sane
	// again once its level has been steady for ChatterWindow.
	ChatterChanges int           `yaml:"chatter_changes"`
	ChatterWindow  time.Duration `yaml:"chatter_window"`
}

// Keypad is a 4x4 matrix keypad: rows are driven, columns are read.
type Keypad struct {
	Rows []string `yaml:"rows"` // 4 output pins
	Cols []string `yaml:"cols"` // 4 input pins (pull-up; a pressed key pulls its column low while its row is driven low)
	// Layout gives the key at [row][col]; default "123A","456B","789C","*0#D".
	Layout []string `yaml:"layout"`
	// Buzzer is an output pin that sounds a buzzer while high: a short beep
	// on each key press. Empty when none is wired.
	Buzzer string `yaml:"buzzer"`
}

// Display is a character LCD, wired either directly in 4-bit mode (RS, E,
// Data) or through a PCF8574 I²C back-pack (I2C).
type Display struct {
	// Type is the controller: DisplayHD44780 (the default) or
	// DisplayST7920.
	Type string `yaml:"type"`
	// Cols is 16 or 20 for an HD44780, 16 for an ST7920 (half-width
	// columns: a Chinese character takes two).
	Cols int `yaml:"cols"`
	// Rows is 2 or 4 (4 for a 128x64 ST7920 module, 2 for a 128x32 one).
	Rows int      `yaml:"rows"`
	RS   string   `yaml:"rs"`
	E    string   `yaml:"e"`
	Data []string `yaml:"data,omitempty"` // D4, D5, D6, D7
	// I2C is the PCF8574 back-pack (P0=RS, P1=RW, P2=E, P3=backlight,
	// P4..P7=D4..D7); nil for a display wired to pins.
	I2C *I2C `yaml:"i2c,omitempty"`
}

// Display types.
const (
	// DisplayHD44780 is an HD44780 (or compatible) character LCD with the
	// A00 (ASCII) character ROM: text other than ASCII shows as '?'.
	DisplayHD44780 = "hd44780"
	// DisplayST7920 is an ST7920 LCD module ("12864", "12832") in text
	// mode, with its GB2312 Chinese font: 16 half-width columns, a Chinese
	// character taking two.
	DisplayST7920 = "st7920"
)

// I2C is a device on an I²C bus.
type I2C struct {
	// Bus names the bus as the board's I²C registry knows it: "1" for
	// /dev/i2c-1 on a Raspberry Pi.
	Bus string `yaml:"bus"`
	// Address is the 7-bit device address (0x27 is common for PCF8574
	// back-packs, 0x3F for PCF8574A ones).
	Address uint16 `yaml:"address"`
}

// Expander is a GPIO expander on an I²C bus.
type Expander struct {
	// Name prefixes its pins: "X1" gives pins X1.A0 … X1.A7, X1.B0 … X1.B7.
	Name string `yaml:"name"`
	// Type is "mcp23017" (the default, and the only one).
	Type string `yaml:"type"`
	// Bus names the I²C bus, as I2C.Bus.
	Bus string `yaml:"bus"`
	// Address is 0x20..0x27 (A2 A1 A0 strapped), unique on its bus.
	Address uint16 `yaml:"address"`
}

// Compartment is one door.
type Compartment struct {
	Number int    `yaml:"number"`
	Size   string `yaml:"size"`   // S, M, L, XL
	Lock   string `yaml:"lock"`   // solenoid relay output pin
	Door   string `yaml:"door"`   // door sensor input pin
	Parcel string `yaml:"parcel"` // occupancy sensor input pin; empty when none
	LED    string `yaml:"led"`    // status LED output pin (lit while high); empty when none
	// Bus names an RS485 bus: the lock, the door feedback and (Kerong, with
	// ir) the occupancy sensor are the board's channel; Lock, Door and
	// Parcel stay empty. Empty for a compartment wired to pins.
	Bus     string `yaml:"bus,omitempty"`
	Board   int    `yaml:"board,omitempty"`   // the board's address on Bus
	Channel int    `yaml:"channel,omitempty"` // the lock on the board, 1..channels
}

// RS485Bus is a serial bus of lock-control boards (a USB-RS485 adapter or a
// UART).
type RS485Bus struct {
	// Name is how compartments name the bus ("BUS1").
	Name string `yaml:"name"`
	// Device is the serial device path ("/dev/ttyUSB0").
	Device string `yaml:"device"`
	// Protocol is ProtocolKerong or Protocol8A80.
	Protocol string `yaml:"protocol"`
	// Baud: default 19200 for kerong, 9600 for 8a80; 8N1 always.
	Baud int `yaml:"baud"`
	// LockOpenBit is the level (0 or 1) of a lock/door feedback bit that
	// means open (default 1); boards differ.
	LockOpenBit *int `yaml:"lock_open_bit"`
	// IR: the boards' infrared sensors give each compartment's occupancy
	// (default true for kerong; 8a80 boards have none).
	IR *bool `yaml:"ir"`
	// Boards on the bus, each at its own address.
	Boards []RS485Board `yaml:"boards"`
	// ReplyTimeout is how long a status query waits for its reply's first
	// byte, beyond the frames' time on the wire (0: 50ms, the product's
	// timing). ReplySilence is how long a quiet line ends or cuts short a
	// reply (0: 25ms); it must outlast the gaps between a USB adapter's
	// bursts. Longer values suit a slow adapter, or simulated boards on a
	// loaded test machine; a board is down after 3 failed polls either way.
	ReplyTimeout time.Duration `yaml:"reply_timeout,omitempty"`
	ReplySilence time.Duration `yaml:"reply_silence,omitempty"`
}

// RS485Board is one board on a bus.
type RS485Board struct {
	// Address: kerong 0..15 (rotary switch), 8a80 1..31 (DIP switches).
	Address int `yaml:"address"`
	// Channels is the number of locks: kerong up to 16 (default 16),
	// 8a80 1..64 (required; boards are sold with 8 to 24).
	Channels int `yaml:"channels"`
}

// RS485 protocols.
const (
	ProtocolKerong = "kerong"
	Protocol8A80   = "8a80"
)

// OpenBit is the bus's lock_open_bit as a bool (default true).
func (b *RS485Bus) OpenBit() bool { return b.LockOpenBit == nil || *b.LockOpenBit == 1 }

// HasIR reports whether the boards' infrared sensors are used.
func (b *RS485Bus) HasIR() bool {
	if b.IR != nil {
		return *b.IR
	}
	return b.Protocol == ProtocolKerong
}

// Bus returns the RS485 bus named name.
func (w *Wiring) Bus(name string) (*RS485Bus, bool) {
	for i := range w.RS485 {
		if w.RS485[i].Name == name {
			return &w.RS485[i], true
		}
	}
	return nil, false
}

// MaxPulse is the hard cap on a release pulse: no configuration and no bug
// can hold a coil on longer.
const MaxPulse = time.Second

// Expander pins: an expander named X has pins X.A0 … X.A7 and X.B0 … X.B7.
const (
	MinExpanderAddress = 0x20
	MaxExpanderAddress = 0x27
)

// ExpanderPin is a pin of an expander, parsed from its name.
type ExpanderPin struct {
	Expander *Expander
	Port     int // 0 for A, 1 for B
	Bit      int // 0..7
}

// Index is the pin's number on the expander: A0..A7 are 0..7, B0..B7 8..15.
func (p ExpanderPin) Index() int { return p.Port*8 + p.Bit }

// ExpanderPin reports whether name is a pin of one of w's expanders
// ("X1.B3"), and which. A name that is not is a plain pin of the board.
func (w *Wiring) ExpanderPin(name string) (ExpanderPin, bool) {
	prefix, suffix, ok := strings.Cut(name, ".")
	if !ok {
		return ExpanderPin{}, false
	}
	for i := range w.Expanders {
		e := &w.Expanders[i]
		if e.Name != prefix {
			continue
		}
		port, bit, ok := expanderSuffix(suffix)
		if !ok {
			return ExpanderPin{}, false
		}
		return ExpanderPin{Expander: e, Port: port, Bit: bit}, true
	}
	return ExpanderPin{}, false
}

// expanderSuffix parses "A0".."A7", "B0".."B7".
func expanderSuffix(s string) (port, bit int, ok bool) {
	if len(s) != 2 || (s[0] != 'A' && s[0] != 'B') || s[1] < '0' || s[1] > '7' {
		return 0, 0, false
	}
	return int(s[0] - 'A'), int(s[1] - '0'), true
}
