package simulator

import (
	"errors"
	"testing"

	"github.com/openlocker/locker/hal/wiring"
)

// st7920Wiring is testWiring(1) with a 4-row ST7920 on the same pins.
func st7920Wiring() *wiring.Wiring {
	w := testWiring(1)
	w.Display = &wiring.Display{Type: "st7920", Cols: 16, Rows: 4, RS: "RS", E: "E", Data: []string{"D4", "D5", "D6", "D7"}}
	return w
}

// initST7920 runs the hal's initialisation: 4-bit mode, basic instruction
// set, display on, clear, entry mode.
func (w *lcdWriter) initST7920() {
	for _, n := range []byte{0x3, 0x3, 0x3, 0x2} {
		w.nibble(false, n)
	}
	for _, b := range []byte{0x20, 0x20, 0x0c, 0x01, 0x06} {
		w.byte(false, b)
	}
}

// data writes bytes to DDRAM at the word address addr.
func (w *lcdWriter) data(addr byte, s string) {
	w.byte(false, 0x80|addr)
	for i := range len(s) {
		w.byte(true, s[i])
	}
}

func TestST7920(t *testing.T) {
	c := newCabinet(t, st7920Wiring(), Options{})
	w := newLCDWriter(t, c)
	wantDisplay(t, c, "", "", "", "") // off at power-on
	w.initST7920()
	wantDisplay(t, c, "", "", "", "")

	// GB2312 in words: 请输入取件码 on row 1, rows 2..4 at words 0x10,
	// 0x08, 0x18.
	w.data(0x00, "\xc7\xeb\xca\xe4\xc8\xeb\xc8\xa1\xbc\xfe\xc2\xeb")
	w.data(0x10, "\xb0\xb4# \xc8\xb7\xc8\xcf")
	w.data(0x08, "Door 07 \xd2\xd1\xbf\xaa")
	w.data(0x18, "3")
	wantDisplay(t, c, "请输入取件码", "按# 确认", "Door 07 已开", "3")

	// A Chinese character that starts on an odd byte straddles two words:
	// garbage, which is why the hal pads.
	w.data(0x10, "\xb0\xb4#\xc8\xb7\xc8\xcf ")
	wantDisplay(t, c, "请输入取件码", "按#?啡?", "Door 07 已开", "3")

	// The address counter moves a word at a time: 16 words from 0x00 fill
	// row 1, then row 3 (which continues it in DDRAM).
	w.data(0x00, "0123456789abcdefghijklmnopqrstuv")
	wantDisplay(t, c, "0123456789abcdef", "按#?啡?", "ghijklmnopqrstuv", "3")

	// Setting the address starts a new word: the lone high byte 'X' is
	// overwritten.
	w.data(0x18, "X")
	w.data(0x18, "YZ")
	wantDisplay(t, c, "0123456789abcdef", "按#?啡?", "ghijklmnopqrstuv", "YZ")

	// Extended instruction set (RE=1): data is not text; back to basic.
	w.byte(false, 0x24)
	w.data(0x18, "no")
	wantDisplay(t, c, "0123456789abcdef", "按#?啡?", "ghijklmnopqrstuv", "YZ")
	w.byte(false, 0x20)
	w.data(0x18, "ok")
	wantDisplay(t, c, "0123456789abcdef", "按#?啡?", "ghijklmnopqrstuv", "ok")

	// Half-width codes outside ASCII (0x01, 0x7f, 0x80), a GBK code outside
	// the GB2312 font (E946), a lone lead byte (A1 then a space).
	w.data(0x10, "a\x01\x7f\x80\xe9\x46\xa1")
	wantDisplay(t, c, "0123456789abcdef", "a?????", "ghijklmnopqrstuv", "ok")

	// Display off and on keeps DDRAM; clear blanks it.
	w.byte(false, 0x08)
	wantDisplay(t, c, "", "", "", "")
	w.byte(false, 0x0c)
	wantDisplay(t, c, "0123456789abcdef", "a?????", "ghijklmnopqrstuv", "ok")
	w.byte(false, 0x01)
	wantDisplay(t, c, "", "", "", "")
}

func TestST7920Wiring(t *testing.T) {
	w := st7920Wiring()
	w.Display.Cols = 20
	if _, err := New(w, Options{}); !errors.Is(err, ErrBadWiring) {
		t.Fatalf("New with a 20-column ST7920: %v, want ErrBadWiring", err)
	}
	// The example wiring for Chinese loads and builds its display.
	zh, err := wiring.Load("../testdata/wiring/gpio-24-zh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := newCabinet(t, zh, Options{})
	wantDisplay(t, c, "", "", "", "")
}
