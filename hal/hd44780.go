package hal

import (
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// HD44780 drives an HD44780 character LCD in 4-bit mode over six output
// pins: RS, E and D4..D7 (R/W tied to ground: write only).
//
// A byte goes as two nibbles, high nibble first; the display latches a nibble
// on the falling edge of E. Show writes whole rows, padded with spaces, and
// never clears the screen, so updates do not flicker.
type HD44780 struct {
	cols, rows int
	delays     bool // sleep the datasheet delays; false for simulated pins

	// mu serialises Show: it guards the pins and the display's address
	// counter.
	mu   sync.Mutex
	rs   gpio.PinOut
	e    gpio.PinOut
	data [4]gpio.PinOut // D4, D5, D6, D7
}

// HD44780 commands.
const (
	lcdClear       = 0x01
	lcdEntryMode   = 0x06 // increment the address, no shift
	lcdDisplayOn   = 0x0C // display on, cursor off, blink off
	lcdFunction4x2 = 0x28 // 4-bit bus, 2 lines (also for 4-line displays), 5x8 dots
	lcdSetDDRAM    = 0x80
)

// NewHD44780 initialises the display (4-bit init sequence, clear) and returns
// the driver. cols is 16 or 20, rows 2 or 4. With delays false every sleep
// is skipped: for simulated pins only.
func NewHD44780(rs, e gpio.PinOut, data [4]gpio.PinOut, cols, rows int, delays bool) (*HD44780, error) {
	if (cols != 16 && cols != 20) || (rows != 2 && rows != 4) {
		return nil, fmt.Errorf("hal: display: %dx%d not supported (want 16 or 20 cols, 2 or 4 rows)", cols, rows)
	}
	d := &HD44780{cols: cols, rows: rows, delays: delays, rs: rs, e: e, data: data}
	if err := d.init(); err != nil {
		return nil, fmt.Errorf("hal: display: %w", err)
	}
	return d, nil
}

// init runs the datasheet's "initialization by instruction" for 4-bit mode:
// three times 0x3 (8-bit mode, whatever state the display was in), then 0x2
// (4-bit mode), then full commands.
func (d *HD44780) init() error {
	for _, p := range append([]gpio.PinOut{d.rs, d.e}, d.data[:]...) {
		if err := p.Out(gpio.Low); err != nil {
			return err
		}
	}
	d.sleep(50 * time.Millisecond) // > 40 ms after power-on
	for _, step := range []struct {
		nibble byte
		wait   time.Duration
	}{{0x3, 5 * time.Millisecond}, {0x3, 150 * time.Microsecond}, {0x3, 150 * time.Microsecond}, {0x2, 150 * time.Microsecond}} {
		if err := d.nibble(step.nibble); err != nil {
			return err
		}
		d.sleep(step.wait)
	}
	for _, c := range []byte{lcdFunction4x2, lcdDisplayOn, lcdClear, lcdEntryMode} {
		if err := d.write(c, false); err != nil {
			return err
		}
	}
	return nil
}

// rowAddr is the DDRAM address of the first character of each row. Rows 2
// and 3 continue rows 0 and 1: 0x14/0x54 on 20-column displays, 0x10/0x50 on
// 16-column ones.
func (d *HD44780) rowAddr(row int) byte {
	return [4]byte{0x00, 0x40, byte(d.cols), 0x40 + byte(d.cols)}[row]
}

// Show writes lines to the display, one per row: each is truncated or padded
// with spaces to the width, characters outside printable ASCII show as '?',
// missing rows are blank and extra lines are ignored. Safe for concurrent
// use.
func (d *HD44780) Show(lines ...string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for row := 0; row < d.rows; row++ {
		text := ""
		if row < len(lines) {
			text = lines[row]
		}
		if err := d.write(lcdSetDDRAM|d.rowAddr(row), false); err != nil {
			return fmt.Errorf("hal: display: %w", err)
		}
		for _, c := range d.cells(text) {
			if err := d.write(c, true); err != nil {
				return fmt.Errorf("hal: display: %w", err)
			}
		}
	}
	return nil
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

// write sends one byte: an instruction (data false) or a character.
func (d *HD44780) write(b byte, data bool) error {
	if err := d.rs.Out(gpio.Level(data)); err != nil {
		return err
	}
	if err := d.nibble(b >> 4); err != nil {
		return err
	}
	if err := d.nibble(b & 0x0F); err != nil {
		return err
	}
	if !data && (b == lcdClear || b == 0x02) { // clear, return home
		d.sleep(2 * time.Millisecond) // ≥ 1.52 ms
	} else {
		d.sleep(50 * time.Microsecond) // ≥ 37 µs
	}
	return nil
}

// nibble puts 4 bits on D4..D7 and latches them with a pulse on E.
func (d *HD44780) nibble(n byte) error {
	for i, p := range d.data {
		if err := p.Out(gpio.Level(n&(1<<i) != 0)); err != nil {
			return err
		}
	}
	if err := d.e.Out(gpio.High); err != nil {
		return err
	}
	d.sleep(time.Microsecond) // E high ≥ 450 ns
	// The display latches the nibble on this falling edge.
	if err := d.e.Out(gpio.Low); err != nil {
		return err
	}
	d.sleep(time.Microsecond)
	return nil
}

func (d *HD44780) sleep(t time.Duration) {
	if d.delays {
		time.Sleep(t)
	}
}
