package simulator

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/simplifiedchinese"
)

// The ST7920 mode of the lcd: the same bus, 8-bit mode after power-on and
// the same nibble handling (lcd.latch), but the ST7920's instructions and
// DDRAM, decoded as its text mode shows them.
//
// Function set (001 DL x RE xx) selects the bus width (DL) and the
// instruction set (RE). The datasheet forbids changing DL and RE in one
// instruction: here such a function set changes DL only. With RE=1 (the
// extended set: graphics, scrolling, standby) every instruction but the
// function set, and every data byte, is ignored: graphics are not modelled.
//
// In the basic set, DDRAM is 64 16-bit words; set DDRAM address (0x80|AC)
// takes a word address, a data write fills the word's high byte then its
// low byte, and the address counter moves one word after the low byte. A
// word whose high byte is 0xA1..0xF7 and low byte 0xA1..0xFE is a Chinese
// character of the GB2312 font (two columns); otherwise its bytes are two
// half-width characters, ASCII for 0x20..0x7e, '?' for anything else (a
// custom CGRAM character too). So a Chinese character split across two
// words shows as garbage, as on the module: '?' or a wrong character. Rows 1..4 start at words 0x00, 0x10, 0x08, 0x18 (a
// 128x64 module); each shows 8 words. The other instructions of the basic
// set are the HD44780's (lcd.exec); the cursor moves a word at a time.

// st7920Row is the DDRAM word of the first column of each visible row.
var st7920Row = [4]int{0x00, 0x10, 0x08, 0x18}

// functionSetST7920 runs a function set: DL, then RE.
func (l *lcd) functionSetST7920(b byte) {
	dl, re := b&0x10 != 0, b&0x04 != 0
	if dl == l.fourBit { // DL changes: RE must wait for the next one
		l.fourBit = !dl
		l.haveHigh = false
		return
	}
	l.re = re
}

// writeST7920 writes a data byte to DDRAM: the high byte of word addr,
// then its low byte, then the next word.
func (l *lcd) writeST7920(b byte) {
	i := int(l.addr&0x3f) * 2
	if l.lowByte {
		i++
		l.stepWord()
	}
	l.lowByte = !l.lowByte
	l.ddram[i] = b
}

// stepWord moves the address counter one word, within the 64 words.
func (l *lcd) stepWord() {
	if l.inc {
		l.addr = (l.addr + 1) & 0x3f
	} else {
		l.addr = (l.addr - 1) & 0x3f
	}
}

// visibleST7920 fills out with the visible rows, trailing spaces trimmed.
func (l *lcd) visibleST7920(out []string) {
	dec := simplifiedchinese.GBK.NewDecoder()
	var sb strings.Builder
	for r := range out {
		sb.Reset()
		for w := range l.cols / 2 {
			i := (st7920Row[r] + w) * 2
			hi, lo := l.ddram[i], l.ddram[i+1]
			switch {
			case hi >= 0xa1 && hi <= 0xf7 && lo >= 0xa1 && lo <= 0xfe:
				s, err := dec.Bytes([]byte{hi, lo})
				if rs := []rune(string(s)); err == nil && len(rs) == 1 && rs[0] != utf8.RuneError {
					sb.WriteRune(rs[0])
				} else {
					sb.WriteRune('?')
				}
			case hi >= 0x80: // a two-column code outside the GB2312 font
				sb.WriteRune('?')
			default:
				sb.WriteRune(halfWidth(hi))
				sb.WriteRune(halfWidth(lo))
			}
		}
		out[r] = strings.TrimRight(sb.String(), " ")
	}
}

// halfWidth maps a byte of a half-width word to what the ST7920's
// half-width font shows, as near as Unicode goes: ASCII for 0x20..0x7e,
// '?' for anything else.
func halfWidth(b byte) rune {
	if b >= 0x20 && b <= 0x7e {
		return rune(b)
	}
	return '?'
}
