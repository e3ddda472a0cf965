package hal

import (
	"fmt"
	"sync/atomic"

	"periph.io/x/conn/v3/gpio"
)

// Keypad scans a 4x4 matrix keypad. Rows are outputs, driven low one at a
// time (the others high); columns are inputs with pull-ups, so a pressed key
// pulls its column low while its row is driven low.
//
// A key counts as pressed once two scans in a row see it down, and as
// released once two scans in a row see it up; each press is reported once.
// A scan that sees more than one key down is ignored: on a matrix without
// diodes three pressed keys can make a fourth, ghost, key appear.
//
// Scan must be called from one goroutine; Scans may be called from any.
//
// Wiring note: the rows not being scanned are driven high, so two keys
// pressed in one column connect a high row to a low row through the
// switches. Put a series resistor (about 1 kΩ) in each row line, or diodes.
type Keypad struct {
	rows   [4]gpio.PinOut
	cols   [4]gpio.PinIn
	layout [4]string

	// Scanner state, owned by the goroutine that calls Scan.
	down  int // key index 0..15 counted as pressed, or -1
	cand  int // key index (or -1: none) seen in the last scans …
	count int // … this many scans in a row

	scans atomic.Uint64
}

// NewKeypad drives every row high (idle), sets the columns as inputs with
// pull-ups and returns the scanner. layout gives the key at [row][col].
func NewKeypad(rows [4]gpio.PinOut, cols [4]gpio.PinIn, layout [4]string) (*Keypad, error) {
	for r, l := range layout {
		if len(l) != 4 {
			return nil, fmt.Errorf("hal: keypad: layout row %d %q: want 4 keys", r+1, l)
		}
	}
	k := &Keypad{rows: rows, cols: cols, layout: layout, down: -1, cand: -1}
	for i, p := range rows {
		if err := p.Out(gpio.High); err != nil {
			return nil, fmt.Errorf("hal: keypad row %d: %w", i+1, err)
		}
	}
	for i, p := range cols {
		if err := p.In(gpio.PullUp, gpio.NoEdge); err != nil {
			return nil, fmt.Errorf("hal: keypad col %d: %w", i+1, err)
		}
	}
	return k, nil
}

// Scans is the number of completed scans, for tests and the simulator.
func (k *Keypad) Scans() uint64 { return k.scans.Load() }

// Scan reads the matrix once and returns the key that went down, if one did.
func (k *Keypad) Scan() (key byte, pressed bool, err error) {
	seen, n, err := k.read()
	k.scans.Add(1)
	if err != nil || n > 1 {
		return 0, false, err // a failed or ambiguous scan changes nothing
	}
	if seen == k.down {
		k.cand, k.count = seen, 0
		return 0, false, nil
	}
	if seen == k.cand {
		k.count++
	} else {
		k.cand, k.count = seen, 1
	}
	if k.count < 2 {
		return 0, false, nil
	}
	// Two scans agree on a new state: a release (seen == -1) or a press.
	k.down, k.count = seen, 0
	if seen < 0 {
		return 0, false, nil
	}
	return k.layout[seen/4][seen%4], true, nil
}

// read drives each row low in turn and returns one key index that is down
// and how many are down.
func (k *Keypad) read() (key, n int, err error) {
	key = -1
	for r, row := range k.rows {
		if err := row.Out(gpio.Low); err != nil {
			_ = row.Out(gpio.High)
			return -1, 0, fmt.Errorf("hal: keypad row %d: %w", r+1, err)
		}
		for c, col := range k.cols {
			if col.Read() == gpio.Low {
				key, n = r*4+c, n+1
			}
		}
		if err := row.Out(gpio.High); err != nil {
			return -1, 0, fmt.Errorf("hal: keypad row %d: %w", r+1, err)
		}
	}
	return key, n, nil
}
