package hal

import (
	"fmt"
	"sync"
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
	delays     bool // sleep the datasheet delays; false for simulated pins

	// mu serialises Show: it guards the port and the display's address
	// counter.
	mu   sync.Mutex
	port lcdPort
}

// lcdPort is how nibbles reach the display's RS, E and D4..D7 lines.
type lcdPort interface {
	// reset drives every line low.
	reset() error
	// send latches the nibbles (low 4 bits of each) in order, each with a
	// pulse on E, with RS at rs.
	send(rs bool, nibbles ...byte) error
}

// pinPort is an lcdPort over six GPIO pins.
type pinPort struct {
	rs, e  gpio.PinOut
	data   [4]gpio.PinOut // D4, D5, D6, D7
	delays bool
}

func (p *pinPort) reset() error {
	for _, q := range append([]gpio.PinOut{p.rs, p.e}, p.data[:]...) {
		if err := q.Out(gpio.Low); err != nil {
			return err
		}
	}
	return nil
}

func (p *pinPort) send(rs bool, nibbles ...byte) error {
	if err := p.rs.Out(gpio.Level(rs)); err != nil {
		return err
	}
	for _, n := range nibbles {
		for i, q := range p.data {
			if err := q.Out(gpio.Level(n&(1<<i) != 0)); err != nil {
				return err
			}
		}
		if err := p.e.Out(gpio.High); err != nil {
			return err
		}
		p.sleep(time.Microsecond) // E high ≥ 450 ns
		// The display latches the nibble on this falling edge.
		if err := p.e.Out(gpio.Low); err != nil {
			return err
		}
		p.sleep(time.Microsecond)
	}
	return nil
}

func (p *pinPort) sleep(t time.Duration) {
	if p.delays {
		time.Sleep(t)
	}
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
	return newHD44780(&pinPort{rs: rs, e: e, data: data, delays: delays}, cols, rows, delays)
}

// NewHD44780I2C initialises a display behind a PCF8574 I²C back-pack at
// addr on bus, with the common mapping P0=RS, P1=RW, P2=E, P3=backlight,
// P4..P7=D4..D7, and returns the driver. The backlight is on; R/W is kept
// low (write only). Each byte is one bus transaction of four port writes.
func NewHD44780I2C(bus i2c.Bus, addr uint16, cols, rows int, delays bool) (*HD44780, error) {
	return newHD44780(&pcf8574Port{dev: i2c.Dev{Bus: bus, Addr: addr}}, cols, rows, delays)
}

// PCF8574 back-pack bits.
const (
	pcfRS        = 1 << 0
	pcfRW        = 1 << 1 // kept low: write only
	pcfE         = 1 << 2
	pcfBacklight = 1 << 3
)

// pcf8574Port is an lcdPort through a PCF8574: every byte written to the
// chip appears on its eight outputs, in order, so one transaction carries
// E high then E low for each nibble.
type pcf8574Port struct {
	dev i2c.Dev
	buf []byte
}

func (p *pcf8574Port) reset() error { return p.dev.Tx([]byte{pcfBacklight}, nil) }

func (p *pcf8574Port) send(rs bool, nibbles ...byte) error {
	base := byte(pcfBacklight)
	if rs {
		base |= pcfRS
	}
	p.buf = p.buf[:0]
	for _, n := range nibbles {
		b := base | (n&0x0F)<<4
		p.buf = append(p.buf, b|pcfE, b) // the display latches on E falling
	}
	return p.dev.Tx(p.buf, nil)
}

func newHD44780(port lcdPort, cols, rows int, delays bool) (*HD44780, error) {
	if (cols != 16 && cols != 20) || (rows != 2 && rows != 4) {
		return nil, fmt.Errorf("hal: display: %dx%d not supported (want 16 or 20 cols, 2 or 4 rows)", cols, rows)
	}
	d := &HD44780{cols: cols, rows: rows, delays: delays, port: port}
	if err := d.init(); err != nil {
		return nil, fmt.Errorf("hal: display: %w", err)
	}
	return d, nil
}

// init runs the datasheet's "initialization by instruction" for 4-bit mode:
// three times 0x3 (8-bit mode, whatever state the display was in), then 0x2
// (4-bit mode), then full commands.
func (d *HD44780) init() error {
	if err := d.port.reset(); err != nil {
		return err
	}
	d.sleep(50 * time.Millisecond) // > 40 ms after power-on
	for _, step := range []struct {
		nibble byte
		wait   time.Duration
	}{{0x3, 5 * time.Millisecond}, {0x3, 150 * time.Microsecond}, {0x3, 150 * time.Microsecond}, {0x2, 150 * time.Microsecond}} {
		if err := d.port.send(false, step.nibble); err != nil {
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
	if err := d.port.send(data, b>>4, b&0x0F); err != nil {
		return err
	}
	if !data && (b == lcdClear || b == 0x02) { // clear, return home
		d.sleep(2 * time.Millisecond) // ≥ 1.52 ms
	} else {
		d.sleep(50 * time.Microsecond) // ≥ 37 µs
	}
	return nil
}

func (d *HD44780) sleep(t time.Duration) {
	if d.delays {
		time.Sleep(t)
	}
}
