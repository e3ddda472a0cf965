package hal

import (
	"fmt"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
)

// HD44780 drives an HD44780 character LCD in 4-bit mode, either over six
// output pins — RS, E and D4..D7 (R/W tied to ground: write only) — or
// through a PCF8574 I²C back-pack (NewHD44780I2C).
//
// A byte goes as two nibbles, high nibble first; the display latches a nibble
// on the falling edge of E. Show writes whole rows, padded with spaces, and
// never clears the screen, so updates do not flicker.
type HD44780 struct {
	cols, rows int
	bus        *lcdBus
}

var _ Display = (*HD44780)(nil)

// lcdFunction4x2 is the HD44780's function set: 4-bit bus, 2 lines (also
// for 4-line displays), 5x8 dots.
const lcdFunction4x2 = 0x28

// hd44780ExecTime is how long the HD44780 takes for an instruction or a data
// write (≥ 37 µs), bar clear and home.
const hd44780ExecTime = 50 * time.Microsecond

// NewHD44780 initialises the display (4-bit init sequence, clear) and returns
// the driver. cols is 16 or 20, rows 2 or 4. With delays false every sleep
// is skipped: for simulated pins only.
func NewHD44780(rs, e gpio.PinOut, data [4]gpio.PinOut, cols, rows int, delays bool) (*HD44780, error) {
	return newHD44780(newPinBus(rs, e, data, delays), cols, rows)
}

// NewHD44780I2C initialises a display behind a PCF8574 I²C back-pack at
// addr on bus, with the common mapping P0=RS, P1=RW, P2=E, P3=backlight,
// P4..P7=D4..D7, and returns the driver. The backlight is on; R/W is kept
// low (write only). Each byte is one bus transaction of four port writes.
func NewHD44780I2C(bus i2c.Bus, addr uint16, cols, rows int, delays bool) (*HD44780, error) {
	return newHD44780(newI2CBus(bus, addr, delays), cols, rows)
}

func newHD44780(bus *lcdBus, cols, rows int) (*HD44780, error) {
	if (cols != 16 && cols != 20) || (rows != 2 && rows != 4) {
		return nil, fmt.Errorf("hal: display: %dx%d not supported (want 16 or 20 cols, 2 or 4 rows)", cols, rows)
	}
	bus.execTime = hd44780ExecTime
	d := &HD44780{cols: cols, rows: rows, bus: bus}
	if err := d.init(); err != nil {
		return nil, fmt.Errorf("hal: display: %w", err)
	}
	return d, nil
}

// init runs the datasheet's "initialization by instruction" for 4-bit mode:
// three times 0x3 (8-bit mode, whatever state the display was in), then 0x2
// (4-bit mode), then full commands.
func (d *HD44780) init() error {
	if err := d.bus.wake(); err != nil {
		return err
	}
	return d.bus.commands(lcdFunction4x2, lcdDisplayOn, lcdClear, lcdEntryMode)
}

// rowAddr is the set-DDRAM instruction for the first character of each row.
// Rows 2 and 3 continue rows 0 and 1: 0x14/0x54 on 20-column displays,
// 0x10/0x50 on 16-column ones.
func (d *HD44780) rowAddr(row int) byte {
	return lcdSetDDRAM | [4]byte{0x00, 0x40, byte(d.cols), 0x40 + byte(d.cols)}[row]
}

// Show writes lines to the display, one per row: each is truncated or padded
// with spaces to the width, characters outside printable ASCII show as '?',
// missing rows are blank and extra lines are ignored. Safe for concurrent
// use.
func (d *HD44780) Show(lines ...string) error {
	return d.bus.show(lines, d.rows, d.rowAddr, d.cells)
}

// cells renders text as exactly cols character codes.
func (d *HD44780) cells(text string) []byte {
	out := make([]byte, 0, d.cols)
	for _, r := range text {
		if len(out) == d.cols {
			break
		}
		// 0x20..0x7D match ASCII in the usual A00 character ROM; 0x7E, 0x7F
		// are arrows there and are not ASCII, nor is anything else.
		if r < 0x20 || r > 0x7D {
			r = '?'
		}
		out = append(out, byte(r))
	}
	for len(out) < d.cols {
		out = append(out, ' ')
	}
	return out
}
