package simulator

import "strings"

// lcd decodes the pin writes as an HD44780 controller does, or as an
// ST7920 (st7920.go) when the wiring says so; guarded by Cabinet.mu.
//
// After power-on it is in 8-bit mode: each falling edge of E latches one
// byte whose low nibble (D0..D3, not wired) reads 0. A function set with
// DL=0 switches to 4-bit mode, where a byte is two nibbles, high first; a
// function set with DL=1 switches back, which is how the standard 0x3, 0x3,
// 0x3, 0x2 sequence resynchronises a controller left in either mode.
// Writes to CGRAM are accepted and ignored; display shifts are ignored.
type lcd struct {
	rows, cols int
	st7920     bool // decode as an ST7920 (st7920.go), not an HD44780
	rs         *Pin
	data       [4]*Pin // D4..D7

	fourBit  bool
	haveHigh bool // 4-bit mode: the high nibble is latched, waiting for the low one
	high     byte
	twoLine  bool // function set N
	on       bool // display control D
	inc      bool // entry mode I/D
	cgram    bool // the address counter points into CGRAM
	addr     byte // DDRAM address
	cgaddr   byte
	ddram    [128]byte

	// ST7920 only: its DDRAM is 64 16-bit words, addr a word address
	// (ddram[2*addr] the high byte).
	re      bool // function set RE: the extended instruction set
	lowByte bool // the next data byte is the low byte of word addr
}

// rowBase is the DDRAM address of the first character of each visible row.
var rowBase = [4]byte{0x00, 0x40, 0x14, 0x54}

func newLCD(rows, cols int, st7920 bool) *lcd {
	l := &lcd{rows: rows, cols: cols, st7920: st7920, inc: true}
	for i := range l.ddram {
		l.ddram[i] = ' '
	}
	return l
}

// latch takes one nibble latched by a falling edge of E and reports whether
// the visible content may have changed.
func (l *lcd) latch(rs bool, nibble byte) bool {
	nibble &= 0x0f
	if !l.fourBit {
		return l.exec(rs, nibble<<4)
	}
	if !l.haveHigh {
		l.high, l.haveHigh = nibble, true
		return false
	}
	l.haveHigh = false
	return l.exec(rs, l.high<<4|nibble)
}

// exec runs one instruction (rs false) or writes one data byte. The
// ST7920's basic instruction set is the HD44780's but for the function
// set, the data writes and the address counter (st7920.go).
func (l *lcd) exec(rs bool, b byte) bool {
	switch {
	case b&0xe0 == 0x20 && !rs && l.st7920:
		l.functionSetST7920(b)
		return false
	case l.re: // ST7920 extended instruction set: not modelled
		return false
	case rs && l.cgram:
		l.cgaddr = (l.cgaddr + 1) & 0x3f
		return false
	case rs && l.st7920:
		l.writeST7920(b)
		return l.on
	case rs:
		l.ddram[l.addr&0x7f] = b
		l.step()
		return l.on
	}
	switch {
	case b&0x80 != 0: // set DDRAM address
		l.addr, l.cgram, l.lowByte = b&0x7f, false, false
		if l.st7920 {
			l.addr &= 0x3f
		}
	case b&0x40 != 0: // set CGRAM address
		l.cgaddr, l.cgram = b&0x3f, true
	case b&0x20 != 0: // function set
		l.fourBit = b&0x10 == 0
		l.haveHigh = false
		l.twoLine = b&0x08 != 0
	case b&0x10 != 0: // cursor or display shift
		if b&0x08 == 0 && !l.cgram {
			save := l.inc
			l.inc = b&0x04 != 0
			if l.st7920 {
				l.stepWord()
			} else {
				l.step()
			}
			l.inc, l.lowByte = save, false
		}
	case b&0x08 != 0: // display control
		was := l.on
		l.on = b&0x04 != 0
		return was != l.on
	case b&0x04 != 0: // entry mode set
		l.inc = b&0x02 != 0
	case b&0x02 != 0: // return home
		l.addr, l.cgram, l.lowByte = 0, false, false
	case b&0x01 != 0: // clear display
		for i := range l.ddram {
			l.ddram[i] = ' '
		}
		l.addr, l.cgram, l.lowByte, l.inc = 0, false, false, true
		return l.on
	}
	return false
}

// step moves the DDRAM address counter after a write, wrapping as the
// controller does: in 2-line mode 0x27 → 0x40 and 0x67 → 0x00, in 1-line
// mode 0x4f → 0x00.
func (l *lcd) step() {
	a := l.addr
	switch {
	case l.inc && l.twoLine && a == 0x27:
		a = 0x40
	case l.inc && l.twoLine && a >= 0x67:
		a = 0
	case l.inc && !l.twoLine && a >= 0x4f:
		a = 0
	case l.inc:
		a++
	case l.twoLine && a == 0x40:
		a = 0x27
	case l.twoLine && a == 0:
		a = 0x67
	case a == 0:
		a = 0x4f
	default:
		a--
	}
	l.addr = a
}

// visible returns the rows as shown, trailing spaces trimmed; blank rows
// while the display is off.
func (l *lcd) visible() []string {
	out := make([]string, l.rows)
	if !l.on {
		return out
	}
	if l.st7920 {
		l.visibleST7920(out)
		return out
	}
	var sb strings.Builder
	for r := range out {
		sb.Reset()
		for i := range l.cols {
			sb.WriteRune(glyph(l.ddram[(int(rowBase[r])+i)&0x7f]))
		}
		out[r] = strings.TrimRight(sb.String(), " ")
	}
	return out
}

// glyph maps a character code to what the A00 character ROM shows, as near
// as Unicode goes: ASCII for 0x20..0x7d, arrows for 0x7e and 0x7f, and '?'
// for custom (CGRAM) and other characters.
func glyph(b byte) rune {
	switch {
	case b >= 0x20 && b <= 0x7d:
		return rune(b)
	case b == 0x7e:
		return '→'
	case b == 0x7f:
		return '←'
	}
	return '?'
}
