package hal

import (
	"fmt"
	"time"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/simplifiedchinese"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
)

// ST7920 drives the text mode of an ST7920 LCD controller: the "12864"
// (128x64 dots, 4 rows) and "12832" (2 rows) modules with a GB2312 Chinese
// font in ROM. It uses the 4-bit parallel bus, over the same six pins as the
// HD44780 — RS, E and D4..D7 (R/W tied to ground: write only; the module's
// PSB pin high selects the parallel bus) — or through a PCF8574 back-pack
// (NewST7920I2C), and the basic instruction set, which matches the
// HD44780's but for the function set and the DDRAM addresses.
//
// Text goes to DDRAM as GB2312 codes: one byte for a half-width (ASCII)
// character, two for a Chinese one. A row is 16 half-width columns, eight
// 16-bit words, and DDRAM is addressed in words; a Chinese character fills
// a whole word, so it must start on an even byte, and Show pads with a
// space before one that would start on an odd byte. The rows start at words
// 0x00, 0x10, 0x08 and 0x18: on a 128x64 module rows 3 and 4 continue rows
// 1 and 2 in DDRAM. Show writes whole rows, padded with spaces, and never
// clears the screen, so updates do not flicker.
type ST7920 struct {
	rows int
	bus  *lcdBus
}

var _ Display = (*ST7920)(nil)

// ST7920Cols is the width of an ST7920 text row in half-width columns; a
// Chinese character takes two.
const ST7920Cols = 16

// st7920Function is the ST7920's function set: 4-bit bus (DL=0), basic
// instruction set (RE=0).
const st7920Function = 0x20

// st7920ExecTime is how long the ST7920 takes for an instruction or a data
// write (72 µs at its nominal 540 kHz), bar clear.
const st7920ExecTime = 80 * time.Microsecond

// st7920RowWord is the DDRAM word address of the first column of each row.
var st7920RowWord = [4]byte{0x00, 0x10, 0x08, 0x18}

// NewST7920 initialises the display (4-bit init sequence, basic
// instruction set, clear) and returns the driver. cols must be 16, rows is
// 2 or 4. With delays false every sleep is skipped: for simulated pins
// only.
func NewST7920(rs, e gpio.PinOut, data [4]gpio.PinOut, cols, rows int, delays bool) (*ST7920, error) {
	return newST7920(newPinBus(rs, e, data, delays), cols, rows)
}

// NewST7920I2C initialises a display behind a PCF8574 I²C back-pack at
// addr on bus, wired as for NewHD44780I2C, and returns the driver.
func NewST7920I2C(bus i2c.Bus, addr uint16, cols, rows int, delays bool) (*ST7920, error) {
	return newST7920(newI2CBus(bus, addr, delays), cols, rows)
}

func newST7920(bus *lcdBus, cols, rows int) (*ST7920, error) {
	if cols != ST7920Cols || (rows != 2 && rows != 4) {
		return nil, fmt.Errorf("hal: display: st7920 %dx%d not supported (want 16 cols, 2 or 4 rows)", cols, rows)
	}
	bus.execTime = st7920ExecTime
	d := &ST7920{rows: rows, bus: bus}
	if err := d.init(); err != nil {
		return nil, fmt.Errorf("hal: display: %w", err)
	}
	return d, nil
}

// init puts the controller in 4-bit mode (lcdBus.wake), then selects the
// basic instruction set: the nibbles written in 8-bit mode leave RE at
// whatever the unwired D0..D3 read, and the ST7920 cannot change DL and RE
// in one instruction, so the full function set goes twice, as in the
// datasheet's initialisation. Then display on, clear (the datasheet's
// initialisation waits 10 ms after it) and entry mode.
func (d *ST7920) init() error {
	if err := d.bus.wake(); err != nil {
		return err
	}
	if err := d.bus.commands(st7920Function, st7920Function, lcdDisplayOn, lcdClear); err != nil {
		return err
	}
	d.bus.sleep(10 * time.Millisecond)
	return d.bus.commands(lcdEntryMode)
}

func (d *ST7920) rowAddr(row int) byte { return lcdSetDDRAM | st7920RowWord[row] }

// Show writes lines to the display, one per row: each is encoded in GB2312
// and padded with spaces or truncated to 16 columns, a Chinese character
// starting on an even column (a space pads it when needed) and never split
// by the truncation; control characters and characters outside the ROM's
// GB2312 set show as '?'. Missing rows are blank and extra lines are
// ignored. Safe for concurrent use.
func (d *ST7920) Show(lines ...string) error {
	return d.bus.show(lines, d.rows, d.rowAddr, st7920Cells)
}

// st7920Cells renders text as exactly ST7920Cols bytes of DDRAM.
func st7920Cells(text string) []byte {
	enc := simplifiedchinese.GBK.NewEncoder()
	out := make([]byte, 0, ST7920Cols)
	for _, r := range text {
		code := gb2312(enc, r)
		if len(code) == 2 && len(out)%2 == 1 {
			code = append([]byte{' '}, code...) // word boundary
		}
		if len(out)+len(code) > ST7920Cols {
			break
		}
		out = append(out, code...)
	}
	for len(out) < ST7920Cols {
		out = append(out, ' ')
	}
	return out
}

// gb2312 returns the character code of r in the ST7920's ROMs: one byte
// for printable ASCII (the half-width font), two for a character of
// GB2312 (GBK restricted to its GB2312 rows, A1A1..F7FE: the Chinese font),
// else '?'.
func gb2312(enc *encoding.Encoder, r rune) []byte {
	switch {
	case r >= 0x20 && r < 0x7F:
		return []byte{byte(r)}
	case r < 0x80:
		return []byte{'?'}
	}
	b, err := enc.Bytes([]byte(string(r)))
	if err != nil || len(b) != 2 || b[0] < 0xA1 || b[0] > 0xF7 || b[1] < 0xA1 || b[1] > 0xFE {
		return []byte{'?'}
	}
	return b
}
