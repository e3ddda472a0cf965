package hal

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"periph.io/x/conn/v3"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// ErrExpander: an I²C GPIO expander did not answer (or answered wrongly).
// Sensor readings behind it are not trusted until it answers again.
var ErrExpander = errors.New("hal: expander not responding")

// ErrLatch: an expander's output latch does not hold the level the driver
// wrote to it. It wraps ErrExpander: the chip is re-initialised.
var ErrLatch = fmt.Errorf("%w: output latch wrong", ErrExpander)

// MCP23017 register addresses with IOCON.BANK = 0, the power-on mapping.
// Each "A" register is followed by its "B" twin, so one transaction of two
// bytes covers both ports.
const (
	mcpIODIRA = 0x00 // 1 = input (power-on 0xFF)
	mcpIOCON  = 0x0A // BANK=0, SEQOP=0 (sequential addressing): 0x00
	mcpGPPUA  = 0x0C // 1 = 100 kΩ pull-up on an input
	mcpGPIOA  = 0x12 // read: the port's levels
	mcpOLATA  = 0x14 // the output latches
)

// MCP23017 drives a Microchip MCP23017 16-bit I²C GPIO expander: pins
// A0..A7 and B0..B7, each an input (with an optional pull-up) or an output.
//
// It keeps a copy of the direction, pull-up and output-latch registers: a
// pin change writes through (one transaction), and Reinit writes the whole
// copy back after the chip lost its power. Inputs are meant to be read for
// the whole chip at once with Sample (one transaction for both ports) by
// the sensor poller; a pin's own Read costs a transaction of its own.
//
// The chip has no pull-downs and this driver uses no interrupts (poll).
// It assumes the chip is in its power-on register mapping (IOCON.BANK = 0),
// which Reinit keeps.
type MCP23017 struct {
	name string
	dev  i2c.Dev

	// mu guards the register copies and serialises every transaction, so
	// that a write-through never interleaves with a Sample or a Reinit.
	mu    sync.Mutex
	iodir [2]byte // 1 = input
	gppu  [2]byte
	olat  [2]byte
	pins  [16]*ExpanderPin
}

var _ conn.Resource = (*MCP23017)(nil)

// NewMCP23017 initialises the chip at addr on bus: every pin an input
// without pull-up (the power-on state), output latches low. name prefixes
// the pins' names ("X1" gives "X1.A0").
func NewMCP23017(name string, bus i2c.Bus, addr uint16) (*MCP23017, error) {
	return newMCP23017(name, bus, addr, [2]byte{}, [2]byte{})
}

// newMCP23017 is NewMCP23017 with the pins of outs (bit i: pin i) made
// outputs at the levels of olat by the first transactions: the latches are
// written before the directions, so a lock output that a previous process
// left driven at its inert level never shows another level, not even for
// the length of one transaction (an all-zero latch on an active-low relay
// board energises every coil).
func newMCP23017(name string, bus i2c.Bus, addr uint16, olat, outs [2]byte) (*MCP23017, error) {
	m := &MCP23017{name: name, dev: i2c.Dev{Bus: bus, Addr: addr},
		iodir: [2]byte{^outs[0], ^outs[1]}, olat: [2]byte{olat[0] & outs[0], olat[1] & outs[1]}}
	for i := range m.pins {
		m.pins[i] = &ExpanderPin{m: m, index: i}
	}
	if err := m.Reinit(); err != nil {
		return nil, err
	}
	return m, nil
}

// String implements conn.Resource: "X1 (mcp23017 on BUS at 0x20)".
func (m *MCP23017) String() string {
	return m.name + " (mcp23017 on " + m.dev.Bus.String() + " at 0x" + strconv.FormatUint(uint64(m.dev.Addr), 16) + ")"
}

// Name is the expander's name in the wiring.
func (m *MCP23017) Name() string { return m.name }

// Halt implements conn.Resource. The expander keeps its outputs: halt the
// drivers of its pins (a Solenoid's Halt drives its coil off).
func (m *MCP23017) Halt() error { return nil }

// Pin returns pin i: 0..7 are A0..A7, 8..15 are B0..B7.
func (m *MCP23017) Pin(i int) *ExpanderPin { return m.pins[i] }

// Reinit writes the register copies to the chip: IOCON, then the output
// latches before the directions (an output never shows a stale level), then
// the pull-ups. Call it when the chip answers again after a failure.
func (m *MCP23017) Reinit() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reinitLocked()
}

// reinitLocked is Reinit with m.mu held.
func (m *MCP23017) reinitLocked() error {
	for _, w := range [][]byte{
		{mcpIOCON, 0x00},
		{mcpOLATA, m.olat[0], m.olat[1]},
		{mcpIODIRA, m.iodir[0], m.iodir[1]},
		{mcpGPPUA, m.gppu[0], m.gppu[1]},
	} {
		if err := m.dev.Tx(w, nil); err != nil {
			return m.err("init", err)
		}
	}
	return nil
}

// Sample reads both ports in one transaction; bit i of the result is pin
// i's level (A0 is bit 0, B0 bit 8).
func (m *MCP23017) Sample() (uint16, error) {
	var r [2]byte
	m.mu.Lock()
	err := m.dev.Tx([]byte{mcpGPIOA}, r[:])
	m.mu.Unlock()
	if err != nil {
		return 0, m.err("read", err)
	}
	return uint16(r[0]) | uint16(r[1])<<8, nil
}

// Check reads the direction, pull-up and output-latch registers back (one
// transaction, IODIRA through OLATB) and reports an error when they differ
// from the driver's copy: the chip lost its power and came back as all
// inputs, so its outputs no longer drive anything; or an output latch holds
// a level the driver did not ask for (a write lost on the bus, a glitch),
// which may keep a coil energised. Reinit writes the copy back.
func (m *MCP23017) Check() error {
	var r [mcpOLATA + 2]byte
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.dev.Tx([]byte{mcpIODIRA}, r[:]); err != nil {
		return m.err("check", err)
	}
	if got := [2]byte{r[mcpIODIRA], r[mcpIODIRA+1]}; got != m.iodir {
		return fmt.Errorf("%w: %s: registers lost (power cycled?): IODIR %02x, want %02x", ErrExpander, m, got, m.iodir)
	}
	if got := [2]byte{r[mcpGPPUA], r[mcpGPPUA+1]}; got != m.gppu {
		return fmt.Errorf("%w: %s: registers lost (power cycled?): GPPU %02x, want %02x", ErrExpander, m, got, m.gppu)
	}
	// Only the latches of outputs drive anything.
	outs := [2]byte{^m.iodir[0], ^m.iodir[1]}
	if got := [2]byte{r[mcpOLATA] & outs[0], r[mcpOLATA+1] & outs[1]}; got != [2]byte{m.olat[0] & outs[0], m.olat[1] & outs[1]} {
		return fmt.Errorf("%w: %s: output latches OLAT %02x, want %02x (outputs %02x)", ErrLatch, m, got, m.olat, outs)
	}
	return nil
}

// err wraps a bus error with ErrExpander and the chip's name.
func (m *MCP23017) err(what string, err error) error {
	return fmt.Errorf("%w: %s: %s: %w", ErrExpander, m, what, err)
}

// ExpanderPin is one pin of an MCP23017. It implements gpio.PinIO with the
// limits of the chip: no pull-down, no edge detection, no PWM.
//
// Read cannot return an error: on a bus failure it reads Low. The sensor
// poller does not use it; it samples the whole chip and gets the error.
type ExpanderPin struct {
	m     *MCP23017
	index int // 0..15
}

var _ gpio.PinIO = (*ExpanderPin)(nil)

func (p *ExpanderPin) port() int   { return p.index / 8 }
func (p *ExpanderPin) mask() byte  { return 1 << (p.index % 8) }
func (p *ExpanderPin) port2() byte { return byte(p.port()) }

// String implements conn.Resource: "X1.B3".
func (p *ExpanderPin) String() string { return p.Name() }

// Name is "X1.B3".
func (p *ExpanderPin) Name() string {
	return p.m.name + "." + string(rune('A'+p.port())) + strconv.Itoa(p.index%8)
}

// Number is the pin's index on the chip, 0..15.
func (p *ExpanderPin) Number() int { return p.index }

// Function is "In" or "Out".
func (p *ExpanderPin) Function() string {
	if p.isInput() {
		return "In"
	}
	return "Out"
}

// Halt implements conn.Resource; there is nothing to interrupt.
func (p *ExpanderPin) Halt() error { return nil }

func (p *ExpanderPin) isInput() bool {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	return p.m.iodir[p.port()]&p.mask() != 0
}

// In makes the pin an input: pull gpio.PullUp enables the chip's pull-up,
// gpio.Float disables it, gpio.PullNoChange keeps it. The chip has no
// pull-down and this driver no edge detection.
func (p *ExpanderPin) In(pull gpio.Pull, edge gpio.Edge) error {
	if edge != gpio.NoEdge {
		return fmt.Errorf("hal: %s: edge detection not supported (the inputs are polled)", p)
	}
	m, port, mask := p.m, p.port(), p.mask()
	m.mu.Lock()
	defer m.mu.Unlock()
	pu := m.gppu[port]
	switch pull {
	case gpio.PullUp:
		pu |= mask
	case gpio.Float:
		pu &^= mask
	case gpio.PullNoChange:
	default:
		return fmt.Errorf("hal: %s: pull %s not supported (the MCP23017 has pull-ups only)", p, pull)
	}
	if pu != m.gppu[port] {
		m.gppu[port] = pu
		if err := m.dev.Tx([]byte{mcpGPPUA + p.port2(), pu}, nil); err != nil {
			return m.err(p.Name()+" pull", err)
		}
	}
	if m.iodir[port]&mask == 0 {
		m.iodir[port] |= mask
		if err := m.dev.Tx([]byte{mcpIODIRA + p.port2(), m.iodir[port]}, nil); err != nil {
			return m.err(p.Name()+" direction", err)
		}
	}
	return nil
}

// Read reads the pin's port now (one transaction). On a bus failure it
// returns Low: the gpio.PinIn contract has no error.
func (p *ExpanderPin) Read() gpio.Level {
	m := p.m
	var r [1]byte
	m.mu.Lock()
	err := m.dev.Tx([]byte{mcpGPIOA + p.port2()}, r[:])
	m.mu.Unlock()
	return err == nil && r[0]&p.mask() != 0
}

// WaitForEdge is not supported: it waits for timeout (at most a second)
// and returns false.
func (p *ExpanderPin) WaitForEdge(timeout time.Duration) bool {
	if timeout > 0 {
		time.Sleep(min(timeout, time.Second))
	}
	return false
}

// Pull is PullUp when the pin's pull-up is on, else Float.
func (p *ExpanderPin) Pull() gpio.Pull {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	if p.m.gppu[p.port()]&p.mask() != 0 {
		return gpio.PullUp
	}
	return gpio.Float
}

// DefaultPull is Float, the chip's power-on state.
func (p *ExpanderPin) DefaultPull() gpio.Pull { return gpio.Float }

// Out drives the pin at l: the output latch is written first, then the
// direction if the pin was an input, so that the line never shows another
// level. The copy keeps l even when the write fails, so that Reinit
// restores it.
func (p *ExpanderPin) Out(l gpio.Level) error {
	m, port, mask := p.m, p.port(), p.mask()
	m.mu.Lock()
	defer m.mu.Unlock()
	if l {
		m.olat[port] |= mask
	} else {
		m.olat[port] &^= mask
	}
	if err := m.dev.Tx([]byte{mcpOLATA + p.port2(), m.olat[port]}, nil); err != nil {
		return m.err(p.Name()+" write", err)
	}
	if m.iodir[port]&mask != 0 {
		m.iodir[port] &^= mask
		if err := m.dev.Tx([]byte{mcpIODIRA + p.port2(), m.iodir[port]}, nil); err != nil {
			return m.err(p.Name()+" direction", err)
		}
	}
	return nil
}

// outVerified drives the pin at l and reads the chip back to make sure, for
// a coil that must go off: the copy takes l (an output); with reinit the
// whole copy is written again (IOCON, latches, directions, pull-ups: the
// chip may have been reset or lost a write), else the pin's latch and then
// its direction; then the directions through the latches are read back in
// one transaction and the pin must be an output latched at l.
func (p *ExpanderPin) outVerified(l gpio.Level, reinit bool) error {
	m, port, mask := p.m, p.port(), p.mask()
	m.mu.Lock()
	defer m.mu.Unlock()
	if l {
		m.olat[port] |= mask
	} else {
		m.olat[port] &^= mask
	}
	m.iodir[port] &^= mask
	if reinit {
		if err := m.reinitLocked(); err != nil {
			return err
		}
	} else {
		if err := m.dev.Tx([]byte{mcpOLATA + p.port2(), m.olat[port]}, nil); err != nil {
			return m.err(p.Name()+" write", err)
		}
		if err := m.dev.Tx([]byte{mcpIODIRA + p.port2(), m.iodir[port]}, nil); err != nil {
			return m.err(p.Name()+" direction", err)
		}
	}
	var r [mcpOLATA + 2]byte
	if err := m.dev.Tx([]byte{mcpIODIRA}, r[:]); err != nil {
		return m.err(p.Name()+" read back", err)
	}
	if dir, lat := r[mcpIODIRA+port], r[mcpOLATA+port]; dir&mask != 0 || (lat&mask != 0) != bool(l) {
		return fmt.Errorf("%w: %s: %s reads back IODIR %02x OLAT %02x, want an output at %s", ErrLatch, m, p.Name(), dir, lat, l)
	}
	return nil
}

// PWM is not supported.
func (p *ExpanderPin) PWM(gpio.Duty, physic.Frequency) error {
	return fmt.Errorf("hal: %s: PWM not supported", p)
}
