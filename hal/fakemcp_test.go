package hal

import (
	"errors"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// fakeMCP is an MCP23017 on a fake I²C bus, for tests that need a bus that
// fails: it models the registers the driver uses (BANK = 0, sequential
// addressing), records the outputs after every write, and lets a test fail
// or drop any transaction.
type fakeMCP struct {
	mu   sync.Mutex
	regs [mcpOLATA + 2]byte
	// fault, when set, is asked about every transaction (w is what the
	// driver writes; reading is len(w) == 1): a non-nil error fails it with
	// nothing done, errDrop acknowledges it and does nothing. It is called
	// with mu held: it must not call the chip's methods.
	fault func(w []byte, c *fakeMCP) error
	// afterWrite, when set, is called after each write is applied, with mu
	// held.
	afterWrite func(c *fakeMCP)
	txs        int        // transactions tried
	failed     int        // transactions failed or dropped
	hist       []mcpState // the outputs after every write
	writes     [][]byte   // every write applied
}

// errDrop makes fakeMCP.fault acknowledge a write and ignore it: a glitch
// the driver can only see by reading back.
var errDrop = errors.New("fake i2c: write dropped")

// errBus is a failed transaction.
var errBus = errors.New("fake i2c: no acknowledge")

// mcpState is the chip's outputs at a time.
type mcpState struct {
	at          time.Time
	iodir, olat [2]byte
}

var _ i2c.Bus = (*fakeMCP)(nil)

func newFakeMCP() *fakeMCP {
	c := &fakeMCP{}
	c.regs[mcpIODIRA], c.regs[mcpIODIRA+1] = 0xFF, 0xFF
	c.recordLocked()
	return c
}

func (c *fakeMCP) String() string                  { return "fake-i2c" }
func (c *fakeMCP) SetSpeed(physic.Frequency) error { return nil }

func (c *fakeMCP) Tx(addr uint16, w, r []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.txs++
	if c.fault != nil {
		if err := c.fault(w, c); err != nil {
			c.failed++
			if errors.Is(err, errDrop) {
				return nil
			}
			return err
		}
	}
	ptr := byte(0)
	if len(w) > 0 {
		ptr = w[0]
	}
	if len(w) > 1 {
		for _, b := range w[1:] {
			reg := ptr % byte(len(c.regs))
			if reg == mcpGPIOA || reg == mcpGPIOA+1 {
				reg += mcpOLATA - mcpGPIOA
			}
			c.regs[reg] = b
			ptr++
		}
		c.writes = append(c.writes, append([]byte(nil), w...))
		c.recordLocked()
		if c.afterWrite != nil {
			c.afterWrite(c)
		}
	}
	for i := range r {
		reg := ptr % byte(len(c.regs))
		r[i] = c.regs[reg]
		if reg == mcpGPIOA || reg == mcpGPIOA+1 { // outputs read their latch, inputs high (pull-ups)
			port := reg - mcpGPIOA
			r[i] = c.regs[mcpOLATA+port]&^c.regs[mcpIODIRA+port] | c.regs[mcpIODIRA+port]
		}
		ptr++
	}
	return nil
}

func (c *fakeMCP) recordLocked() {
	c.hist = append(c.hist, mcpState{at: time.Now(),
		iodir: [2]byte{c.regs[mcpIODIRA], c.regs[mcpIODIRA+1]},
		olat:  [2]byte{c.regs[mcpOLATA], c.regs[mcpOLATA+1]}})
}

// activeLocked reports whether pin i drives its active level now.
func (c *fakeMCP) activeLocked(i int, activeLow bool) bool {
	return mcpState{iodir: [2]byte{c.regs[mcpIODIRA], c.regs[mcpIODIRA+1]},
		olat: [2]byte{c.regs[mcpOLATA], c.regs[mcpOLATA+1]}}.active(i, activeLow)
}

// active reports whether pin i is an output at its active level in s.
func (s mcpState) active(i int, activeLow bool) bool {
	port, mask := i/8, byte(1)<<(i%8)
	return s.iodir[port]&mask == 0 && (s.olat[port]&mask != 0) != activeLow
}

// isActive reports whether pin i drives its active level now.
func (c *fakeMCP) isActive(i int, activeLow bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.activeLocked(i, activeLow)
}

// isOff reports whether pin i is an output at its inactive level now.
func (c *fakeMCP) isOff(i int, activeLow bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	port, mask := i/8, byte(1)<<(i%8)
	return c.regs[mcpIODIRA+port]&mask == 0 && (c.regs[mcpOLATA+port]&mask != 0) == activeLow
}

// intervals returns the times pin i drove its active level; an interval
// still open has a zero end.
func (c *fakeMCP) intervals(i int, activeLow bool) []interval {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []interval
	on := false
	for _, s := range c.hist {
		switch a := s.active(i, activeLow); {
		case a && !on:
			out = append(out, interval{start: s.at})
		case !a && on:
			out[len(out)-1].end = s.at
		}
		on = s.active(i, activeLow)
	}
	return out
}

// setFault replaces the fault function.
func (c *fakeMCP) setFault(f func(w []byte, c *fakeMCP) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fault = f
}

// counts returns the transactions tried and failed so far.
func (c *fakeMCP) counts() (txs, failed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.txs, c.failed
}

// poke writes a register behind the driver's back.
func (c *fakeMCP) poke(reg, v byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.regs[reg] = v
	c.recordLocked()
}

// failWritesAfterOn returns a fault that, once pin i has gone active,
// fails (or, with drop, silently drops) the next n writes; n < 0: every
// write until the returned repair is called.
func failWritesAfterOn(i int, activeLow bool, n int, how error) (fault func([]byte, *fakeMCP) error, repair func()) {
	var mu sync.Mutex
	armed, left, repaired := false, n, false
	fault = func(w []byte, c *fakeMCP) error {
		mu.Lock()
		defer mu.Unlock()
		if !armed && c.activeLocked(i, activeLow) {
			armed = true
		}
		if !armed || repaired || len(w) < 2 || left == 0 {
			return nil
		}
		if left > 0 {
			left--
		}
		return how
	}
	return fault, func() { mu.Lock(); repaired = true; mu.Unlock() }
}
