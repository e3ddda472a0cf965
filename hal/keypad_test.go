package hal

import (
	"testing"

	"periph.io/x/conn/v3/gpio"
)

func newTestKeypad(t *testing.T) (*Keypad, *matrix) {
	t.Helper()
	pins := newPinSet()
	m := newMatrix(pins)
	var rows [4]gpio.PinOut
	var cols [4]gpio.PinIn
	for i := range 4 {
		rows[i] = pins.get("R" + string(rune('1'+i)))
		cols[i] = pins.get("C" + string(rune('1'+i)))
	}
	k, err := NewKeypad(rows, cols, [4]string{"123A", "456B", "789C", "*0#D"})
	if err != nil {
		t.Fatal(err)
	}
	return k, m
}

// scan runs one scan and returns the key pressed, or 0.
func scan(t *testing.T, k *Keypad) byte {
	t.Helper()
	key, pressed, err := k.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if !pressed {
		return 0
	}
	return key
}

func TestKeypad(t *testing.T) {
	type step struct {
		down string // keys held during the scan
		want byte   // key reported, or 0
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"press after two scans, once", []step{{"", 0}, {"5", 0}, {"5", '5'}, {"5", 0}, {"5", 0}, {"", 0}, {"", 0}}},
		{"every corner", []step{{"1", 0}, {"1", '1'}, {"", 0}, {"", 0}, {"A", 0}, {"A", 'A'}, {"", 0}, {"", 0}, {"*", 0}, {"*", '*'}, {"", 0}, {"", 0}, {"D", 0}, {"D", 'D'}}},
		{"same key twice", []step{{"7", 0}, {"7", '7'}, {"", 0}, {"", 0}, {"7", 0}, {"7", '7'}}},
		{"release needs two scans", []step{{"7", 0}, {"7", '7'}, {"", 0}, {"7", 0}, {"7", 0}, {"", 0}, {"", 0}, {"7", 0}, {"7", '7'}}},
		{"bounce", []step{{"3", 0}, {"", 0}, {"3", 0}, {"", 0}, {"3", 0}, {"3", '3'}}},
		{"two keys ignored", []step{{"15", 0}, {"15", 0}, {"15", 0}, {"", 0}}},
		{"ghost square ignored", []step{{"125", 0}, {"125", 0}, {"125", 0}}},
		{"second key while held", []step{{"2", 0}, {"2", '2'}, {"28", 0}, {"28", 0}, {"8", 0}, {"8", '8'}, {"8", 0}}},
		{"two-key scan does not reset", []step{{"0", 0}, {"0#", 0}, {"0", '0'}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, m := newTestKeypad(t)
			for i, s := range tc.steps {
				m.press([]byte(s.down)...)
				if got := scan(t, k); got != s.want {
					t.Errorf("scan %d with %q down: key %q, want %q", i, s.down, got, s.want)
				}
			}
			if k.Scans() != uint64(len(tc.steps)) {
				t.Errorf("Scans = %d, want %d", k.Scans(), len(tc.steps))
			}
			if m.badScans.Load() != 0 {
				t.Errorf("%d column reads with more than one row low", m.badScans.Load())
			}
			for i, r := range m.rows {
				if r.get() != gpio.High {
					t.Errorf("row %d left low after the scans", i+1)
				}
			}
		})
	}
}

func TestKeypadLayout(t *testing.T) {
	pins := newPinSet()
	m := newMatrix(pins)
	var rows [4]gpio.PinOut
	var cols [4]gpio.PinIn
	for i := range 4 {
		rows[i] = pins.get("R" + string(rune('1'+i)))
		cols[i] = pins.get("C" + string(rune('1'+i)))
	}
	// A custom layout: the key in the default layout's position of '5'
	// (row 2, col 2) is 'X' here.
	k, err := NewKeypad(rows, cols, [4]string{"0123", "4X67", "89*#", "ABCD"})
	if err != nil {
		t.Fatal(err)
	}
	m.press('5')
	scan(t, k)
	if got := scan(t, k); got != 'X' {
		t.Errorf("key %q, want 'X'", got)
	}
	if _, err := NewKeypad(rows, cols, [4]string{"012", "4567", "89*#", "ABCD"}); err == nil {
		t.Error("NewKeypad accepted a short layout row")
	}
}
