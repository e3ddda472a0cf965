package hal

// FuzzKeypadScan drives the matrix scanner (Keypad.Scan) with arbitrary
// sequences of switch states, on the fake matrix of hardware_test.go (a
// column reads low when a row driven low has its switch in that column
// closed), with at most one failed row write on the way. A model of the
// scanner as its doc comment describes it runs beside it:
//
//   - a key is reported when two scans in a row that count (one key or none
//     seen, no failure) agree on a new state and that state is a key; a scan
//     that sees two keys or more, or fails, changes nothing;
//   - every reported key is a key of the layout whose switch is closed in
//     that scan, and no key is reported while two or more switches are
//     closed (a ghost rectangle of three among them);
//   - a failed row write is returned, and only then; after every scan each
//     row is high again, but one whose write of high failed, and no column
//     is read with two rows low unless such a row was left low.
//
// Each two bytes of scans are one scan's switches (bit r*4+c: row r,
// column c, closed). At scan failAt the write of row failRow&3 fails: the
// write of low when failRow&4 is 0, else the write of high (the row is then
// left low until its next turn); when failRow&8 is set, the failed write
// changes the pin all the same.
//
//	go test -run '^$' -fuzz '^FuzzKeypadScan$' -fuzztime 20s ./hal

import (
	"errors"
	"fmt"
	"math/bits"
	"testing"

	"periph.io/x/conn/v3/gpio"

	"github.com/openlocker/locker/hal/wiring"
)

// flakyRow is a row pin whose next write of level fails, once, when armed;
// with takes, the write changes the pin all the same (an I²C write whose
// acknowledgement was lost).
type flakyRow struct {
	*fakePin
	armed bool
	level gpio.Level
	takes bool
}

var errFlaky = errors.New("fake: row write failed")

func (p *flakyRow) Out(l gpio.Level) error {
	if p.armed && l == p.level {
		p.armed = false
		if p.takes {
			_ = p.fakePin.Out(l)
		}
		return errFlaky
	}
	return p.fakePin.Out(l)
}

// scanModel is the scanner's expected state.
type scanModel struct {
	prev  int // the last scan that counted: key index or -1; -2 before any
	down  int // the state counted as pressed: key index or -1
	stuck int // a row left low by a failed write, or -1
}

// scan returns what Scan should return for one scan with switches closed,
// the failure (row, level, whether the write takes; or row -1) armed for it.
func (m *scanModel) scan(switches uint16, failRow int, failLevel gpio.Level, takes bool) (key byte, pressed, fails bool) {
	seen, n := -1, 0
	for r := 0; r < 4; r++ {
		if r == failRow && failLevel == gpio.Low {
			return 0, false, true // the row is set high again; the others were never low
		}
		for c := 0; c < 4; c++ {
			low := switches&(1<<(r*4+c)) != 0 || (m.stuck >= 0 && m.stuck != r && switches&(1<<(m.stuck*4+c)) != 0)
			if low {
				seen, n = r*4+c, n+1
			}
		}
		if r == failRow {
			if !takes {
				m.stuck = r // its write of high failed: it stays low
			}
			return 0, false, true
		}
		if r == m.stuck {
			m.stuck = -1 // driven high again in its turn
		}
	}
	if n > 1 {
		return 0, false, false
	}
	prev := m.prev
	m.prev = seen
	if seen != prev || seen == m.down {
		return 0, false, false
	}
	m.down = seen
	if seen < 0 {
		return 0, false, false
	}
	return wiring.DefaultLayout[seen/4][seen%4], true, false
}

const maxFuzzScans = 256

func FuzzKeypadScan(f *testing.F) {
	for _, s := range keypadScanSeeds {
		f.Add(scanBytes(s.scans...), s.failAt, s.failRow)
	}
	f.Fuzz(func(t *testing.T, scans []byte, failAt, failRow uint8) {
		if len(scans) > 2*maxFuzzScans {
			scans = scans[:2*maxFuzzScans]
		}
		pins := newPinSet()
		mx := newMatrix(pins)
		var rows [4]gpio.PinOut
		var flaky [4]*flakyRow
		var cols [4]gpio.PinIn
		for i := range 4 {
			flaky[i] = &flakyRow{fakePin: pins.get("R" + string(rune('1'+i)))}
			rows[i] = flaky[i]
			cols[i] = pins.get("C" + string(rune('1'+i)))
		}
		k, err := NewKeypad(rows, cols, [4]string(wiring.DefaultLayout))
		if err != nil {
			t.Fatal(err)
		}
		m := &scanModel{prev: -2, down: -1, stuck: -1}
		var log []string
		for i := 0; i+1 < len(scans); i += 2 {
			switches := uint16(scans[i]) | uint16(scans[i+1])<<8
			var closed []byte
			for b := 0; b < 16; b++ {
				if switches&(1<<b) != 0 {
					closed = append(closed, wiring.DefaultLayout[b/4][b%4])
				}
			}
			mx.press(closed...)
			fr, fl := -1, gpio.Low
			if int(failAt) == i/2 {
				fr = int(failRow & 3)
				if failRow&4 != 0 {
					fl = gpio.High
				}
				flaky[fr].armed, flaky[fr].level, flaky[fr].takes = true, fl, failRow&8 != 0
			}
			stuckBefore := m.stuck
			wantKey, wantPressed, wantErr := m.scan(switches, fr, fl, failRow&8 != 0)
			key, pressed, err := k.Scan()
			if fr >= 0 {
				flaky[fr].armed = false
			}
			log = append(log, fmt.Sprintf("%q", closed))
			if fr >= 0 {
				log[len(log)-1] += fmt.Sprintf(" (row %d write of %v fails)", fr+1, fl)
			}
			switch {
			case (err != nil) != wantErr:
				t.Fatalf("scans %v: error %v, want one: %v", log, err, wantErr)
			case pressed != wantPressed || key != wantKey:
				t.Fatalf("scans %v: key %q pressed %v, want %q %v", log, key, pressed, wantKey, wantPressed)
			case pressed && (bits.OnesCount16(switches) != 1 || closed[0] != key):
				t.Fatalf("scans %v: key %q reported with switches %q closed", log, key, closed)
			}
			for r, p := range flaky {
				if p.get() != gpio.High && r != m.stuck {
					t.Fatalf("scans %v: row %d left low", log, r+1)
				}
			}
			if stuckBefore < 0 && !wantErr && mx.badScans.Load() != 0 {
				t.Fatalf("scans %v: a column read with two rows low", log)
			}
			mx.badScans.Store(0)
		}
		if want := uint64(len(scans) / 2); k.Scans() != want {
			t.Fatalf("Scans() = %d after %d scans", k.Scans(), want)
		}
	})
}

// keypadScanSeeds: the shapes of TestKeypad, a ghost rectangle, bounces and
// failed writes.
var keypadScanSeeds = []struct {
	scans   []string // the keys held at each scan
	failAt  uint8
	failRow uint8
}{
	{[]string{"", "5", "5", "5", "", ""}, 255, 0},
	{[]string{"1", "1", "", "", "D", "D", "", "*", "*"}, 255, 0},
	{[]string{"3", "", "3", "", "3", "3"}, 255, 0},
	{[]string{"125", "125", "125", "12", "1", "1"}, 255, 0}, // a ghost square, then two keys, then one
	{[]string{"2", "2", "28", "28", "8", "8"}, 255, 0},
	{[]string{"0", "0#", "0"}, 255, 0},
	{[]string{"5", "5", "5"}, 1, 1},           // row 2's write of low fails
	{[]string{"4", "4", "1", "1", "1"}, 1, 5}, // row 2 is left low: key 4 reads on row 1 too
	{[]string{"A", "A", "", ""}, 0, 7},
	{[]string{"7", "7", "7"}, 0, 10},         // row 3's write of low fails, but the row went low
	{[]string{"#", "#", "", "", "#"}, 3, 15}, // row 4's write of high fails, but the row went high
}

// scanBytes encodes the keys held at each scan as the fuzz input.
func scanBytes(scans ...string) []byte {
	var out []byte
	for _, keys := range scans {
		var sw uint16
		for _, key := range []byte(keys) {
			for r, row := range wiring.DefaultLayout {
				for c := range 4 {
					if row[c] == key {
						sw |= 1 << (r*4 + c)
					}
				}
			}
		}
		out = append(out, byte(sw), byte(sw>>8))
	}
	return out
}
