package hal

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"periph.io/x/conn/v3/gpio"
)

// lcd is an HD44780 model fed with recorded pin writes: it latches a nibble
// on each falling edge of E, starts in 8-bit mode (one nibble per
// instruction, D0..D3 unconnected) and pairs nibbles, high first, once a
// function set selects 4-bit mode.
type lcd struct {
	t        *testing.T
	init     []byte // nibbles latched in 8-bit mode
	commands []byte // instructions in 4-bit mode
	ddram    [128]byte
	addr     int
	mode4    bool
	half     int  // a high nibble waiting for its low nibble, or -1
	halfRS   bool // RS of that high nibble
}

// decodeLCD replays the writes of the display pins.
func decodeLCD(t *testing.T, recs []busRec, rs, e string, data [4]string) *lcd {
	t.Helper()
	l := &lcd{t: t, half: -1}
	for i := range l.ddram {
		l.ddram[i] = '.' // power-on garbage until cleared
	}
	level := map[string]gpio.Level{}
	for _, r := range recs {
		if r.in {
			continue
		}
		if r.pin == e && level[e] == gpio.High && r.l == gpio.Low {
			var n byte
			for i, d := range data {
				if level[d] == gpio.High {
					n |= 1 << i
				}
			}
			l.latch(n, bool(level[rs]))
		}
		level[r.pin] = r.l
	}
	if l.half >= 0 {
		t.Errorf("a nibble without its pair at the end")
	}
	return l
}

func (l *lcd) latch(n byte, rs bool) {
	if !l.mode4 {
		if rs {
			l.t.Errorf("data written in 8-bit mode")
		}
		l.init = append(l.init, n)
		if n == 0x2 { // function set, DL=0: 4-bit bus from now on
			l.mode4 = true
		}
		return
	}
	if l.half < 0 {
		l.half, l.halfRS = int(n), rs
		return
	}
	if rs != l.halfRS {
		l.t.Errorf("RS changed between the nibbles of one byte")
	}
	b := byte(l.half)<<4 | n
	l.half = -1
	if rs {
		l.ddram[l.addr] = b
		l.addr = (l.addr + 1) % len(l.ddram)
		return
	}
	l.commands = append(l.commands, b)
	switch {
	case b&0x80 != 0:
		l.addr = int(b & 0x7F)
	case b == 0x01:
		for i := range l.ddram {
			l.ddram[i] = ' '
		}
		l.addr = 0
	}
}

// row returns the cols characters at a row's DDRAM address.
func (l *lcd) row(r, cols int) string {
	start := []int{0x00, 0x40, cols, 0x40 + cols}[r]
	return string(l.ddram[start : start+cols])
}

type lcdRig struct {
	d    *HD44780
	bus  *bus
	data [4]string
}

func newLCD(t *testing.T, cols, rows int) lcdRig {
	t.Helper()
	pins := newPinSet()
	var data [4]gpio.PinOut
	names := [4]string{"DB4", "DB5", "DB6", "DB7"}
	for i, n := range names {
		data[i] = pins.get(n)
	}
	d, err := NewHD44780(pins.get("RS"), pins.get("E"), data, cols, rows, false)
	if err != nil {
		t.Fatal(err)
	}
	return lcdRig{d, pins.bus, names}
}

func (r lcdRig) decode(t *testing.T) *lcd {
	return decodeLCD(t, r.bus.records(), "RS", "E", r.data)
}

func TestHD44780Init(t *testing.T) {
	r := newLCD(t, 16, 2)
	l := r.decode(t)
	if got := fmt.Sprintf("% x", l.init); got != "03 03 03 02" {
		t.Errorf("init nibbles %s, want 03 03 03 02", got)
	}
	if got := fmt.Sprintf("% x", l.commands); got != "28 0c 01 06" {
		t.Errorf("init commands %s, want 28 0c 01 06", got)
	}
	if l.row(0, 16) != strings.Repeat(" ", 16) {
		t.Errorf("not cleared: %q", l.row(0, 16))
	}
}

func TestHD44780Show(t *testing.T) {
	for _, tc := range []struct {
		cols, rows int
		lines      []string
		want       []string
	}{
		{16, 2, []string{"Enter code", "> 12"}, []string{"Enter code      ", "> 12            "}},
		{16, 2, []string{"A line longer than sixteen"}, []string{"A line longer th", "                "}},
		{16, 2, []string{"Größe: 5€", "tab\there~"}, []string{"Gr??e: 5?       ", "tab?here?       "}},
		{16, 2, []string{"one", "two", "three"}, []string{"one             ", "two             "}},
		{16, 2, nil, []string{"                ", "                "}},
		{20, 4, []string{"row zero", "row one", "row two", "row three of twenty!!"},
			[]string{"row zero            ", "row one             ", "row two             ", "row three of twenty!"}},
		{16, 4, []string{"a", "b", "c", "d"}, []string{"a               ", "b               ", "c               ", "d               "}},
	} {
		t.Run(fmt.Sprintf("%dx%d %q", tc.cols, tc.rows, tc.lines), func(t *testing.T) {
			r := newLCD(t, tc.cols, tc.rows)
			if err := r.d.Show("garbage to overwrite", "xxxxxxxxxxxxxxxxxxxxxxxx", "yyyyyyyyyyyyyyyyyyyyyy", "zzzzzzzzzzzzzzzzzzzzzzz"); err != nil {
				t.Fatal(err)
			}
			if err := r.d.Show(tc.lines...); err != nil {
				t.Fatal(err)
			}
			l := r.decode(t)
			for i, want := range tc.want {
				if got := l.row(i, tc.cols); got != want {
					t.Errorf("row %d = %q, want %q", i, got, want)
				}
			}
			// Show never clears (no flicker): the only clear is the init's.
			clears := 0
			for _, c := range l.commands {
				if c == 0x01 {
					clears++
				}
			}
			if clears != 1 {
				t.Errorf("%d clear commands, want only the one of the init", clears)
			}
		})
	}
}

func TestHD44780Concurrent(t *testing.T) {
	r := newLCD(t, 16, 2)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20 {
				line := fmt.Sprintf("writer %d #%02d", g, i)
				if err := r.d.Show(line, line); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	l := r.decode(t)
	// Each Show wrote both rows whole: they come from the same call.
	if a, b := l.row(0, 16), l.row(1, 16); a != b || !strings.HasPrefix(a, "writer ") {
		t.Errorf("rows %q and %q: interleaved writes", a, b)
	}
}

func TestHD44780Bad(t *testing.T) {
	pins := newPinSet()
	var data [4]gpio.PinOut
	for i := range data {
		data[i] = pins.get(fmt.Sprint("DB", i+4))
	}
	if _, err := NewHD44780(pins.get("RS"), pins.get("E"), data, 40, 2, false); err == nil {
		t.Error("NewHD44780 accepted 40 columns")
	}
}
