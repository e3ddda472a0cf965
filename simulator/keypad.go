package simulator

import (
	"fmt"
	"strings"

	"github.com/openlocker/locker/hal/wiring"
)

// keypad is the matrix; guarded by Cabinet.mu.
type keypad struct {
	layout []string
	held   [][]bool // [row][col]
	rows   []*Pin
	scans  uint64 // times row 0 started being driven low
}

func newKeypad(kp *wiring.Keypad) (*keypad, error) {
	layout := kp.Layout
	if len(layout) == 0 && len(kp.Rows) == 4 && len(kp.Cols) == 4 {
		layout = wiring.DefaultLayout
	}
	if len(kp.Rows) == 0 || len(kp.Cols) == 0 || len(layout) != len(kp.Rows) {
		return nil, fmt.Errorf("%w: keypad of %d rows, %d columns and %d layout rows", ErrBadWiring, len(kp.Rows), len(kp.Cols), len(layout))
	}
	k := &keypad{layout: layout}
	for _, l := range layout {
		if len(l) != len(kp.Cols) {
			return nil, fmt.Errorf("%w: keypad layout row %q does not have %d keys", ErrBadWiring, l, len(kp.Cols))
		}
		k.held = append(k.held, make([]bool, len(kp.Cols)))
	}
	return k, nil
}

// find returns the row and column of key.
func (k *keypad) find(key byte) (int, int, bool) {
	for r, l := range k.layout {
		if c := strings.IndexByte(l, key); c >= 0 {
			return r, c, true
		}
	}
	return 0, 0, false
}

// PressKey holds key down in the matrix until ReleaseKey.
func (c *Cabinet) PressKey(key byte) error { return c.setKey(key, true) }

// ReleaseKey lets key go.
func (c *Cabinet) ReleaseKey(key byte) error { return c.setKey(key, false) }

func (c *Cabinet) setKey(key byte, down bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keypad == nil {
		return ErrNoKeypad
	}
	r, col, ok := c.keypad.find(key)
	if !ok {
		return fmt.Errorf("%w: %q", ErrNoKey, key)
	}
	c.keypad.held[r][col] = down
	c.inputsChangedLocked()
	return nil
}

// HasKey reports whether the keypad has key.
func (c *Cabinet) HasKey(key byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keypad == nil {
		return false
	}
	_, _, ok := c.keypad.find(key)
	return ok
}

// Scans counts the keypad scan cycles seen on the row pins: each time the
// first row starts being driven low.
func (c *Cabinet) Scans() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keypad == nil {
		return 0
	}
	return c.keypad.scans
}
