package hal

import (
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
)

// The HD44780 and the ST7920 share a bus: RS, E and D4..D7 (R/W tied to
// ground: write only), a byte as two nibbles, high nibble first, each
// latched on the falling edge of E. lcdBus is that bus, over six GPIO pins
// or a PCF8574 I²C back-pack; each display driver adds its own
// instructions, timings and character codes.

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
		p.sleep(time.Microsecond) // E high ≥ 450 ns (HD44780), ≥ 140 ns (ST7920)
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

// PCF8574 back-pack bits.
const (
	pcfRS        = 1 << 0
	pcfRW        = 1 << 1 // kept low: write only
	pcfE         = 1 << 2
	pcfBacklight = 1 << 3
)

// pcf8574Port is an lcdPort through a PCF8574 with the common mapping
// P0=RS, P1=RW, P2=E, P3=backlight, P4..P7=D4..D7: every byte written to
// the chip appears on its eight outputs, in order, so one transaction
// carries E high then E low for each nibble. The backlight stays on.
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

// Instructions both controllers share (the ST7920's basic set).
const (
	lcdClear     = 0x01
	lcdHome      = 0x02
	lcdEntryMode = 0x06 // increment the address, no shift
	lcdDisplayOn = 0x0C // display on, cursor off, blink off
	lcdSetDDRAM  = 0x80
)

// lcdBus writes instructions and data bytes to a display; it serialises
// Show.
type lcdBus struct {
	delays   bool          // sleep the datasheet delays; false for simulated pins
	execTime time.Duration // the longest an instruction or data write takes, bar clear and home

	// mu serialises show: it guards the port and the display's address
	// counter.
	mu   sync.Mutex
	port lcdPort
}

// newPinBus and newI2CBus return a bus whose execTime the display driver
// sets.
func newPinBus(rs, e gpio.PinOut, data [4]gpio.PinOut, delays bool) *lcdBus {
	return &lcdBus{delays: delays, port: &pinPort{rs: rs, e: e, data: data, delays: delays}}
}

func newI2CBus(bus i2c.Bus, addr uint16, delays bool) *lcdBus {
	return &lcdBus{delays: delays, port: &pcf8574Port{dev: i2c.Dev{Bus: bus, Addr: addr}}}
}

// wake resets the lines, waits for the controller's power-on reset and runs
// the "initialization by instruction" that puts a controller in 4-bit mode
// from any state: three times 0x3 (8-bit mode, one nibble each, D0..D3
// unwired), then 0x2 (4-bit mode). From then on every byte is two nibbles:
// the caller's function set comes next.
func (b *lcdBus) wake() error {
	if err := b.port.reset(); err != nil {
		return err
	}
	b.sleep(50 * time.Millisecond) // > 40 ms after power-on (both datasheets)
	for _, step := range []struct {
		nibble byte
		wait   time.Duration
	}{{0x3, 5 * time.Millisecond}, {0x3, 150 * time.Microsecond}, {0x3, 150 * time.Microsecond}, {0x2, 150 * time.Microsecond}} {
		if err := b.port.send(false, step.nibble); err != nil {
			return err
		}
		b.sleep(step.wait)
	}
	return nil
}

// commands writes instructions, in order.
func (b *lcdBus) commands(cs ...byte) error {
	for _, c := range cs {
		if err := b.write(c, false); err != nil {
			return err
		}
	}
	return nil
}

// write sends one byte: an instruction (data false) or a data byte, and
// waits for the controller to execute it.
func (b *lcdBus) write(v byte, data bool) error {
	if err := b.port.send(data, v>>4, v&0x0F); err != nil {
		return err
	}
	if !data && (v == lcdClear || v == lcdHome) {
		b.sleep(2 * time.Millisecond) // HD44780 ≥ 1.52 ms, ST7920 ≥ 1.6 ms
	} else {
		b.sleep(b.execTime)
	}
	return nil
}

// show writes lines to the display's rows, each row as one set-DDRAM
// instruction (addr(row)) and the data bytes render makes of its text;
// missing rows are blank and extra lines are ignored. It never clears the
// display, so updates do not flicker. Safe for concurrent use.
func (b *lcdBus) show(lines []string, rows int, addr func(row int) byte, render func(text string) []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for row := range rows {
		text := ""
		if row < len(lines) {
			text = lines[row]
		}
		if err := b.write(addr(row), false); err != nil {
			return fmt.Errorf("hal: display: %w", err)
		}
		for _, c := range render(text) {
			if err := b.write(c, true); err != nil {
				return fmt.Errorf("hal: display: %w", err)
			}
		}
	}
	return nil
}

func (b *lcdBus) sleep(t time.Duration) {
	if b.delays {
		time.Sleep(t)
	}
}
