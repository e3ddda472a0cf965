package simulator

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/conn/v3/physic"
)

// ErrNACK: no device acknowledged its address on a simulated I²C bus (none
// is there, or it is gone: SetExpanderFault).
var ErrNACK = errors.New("simulator: i2c: no acknowledge")

// ErrNoBus: the wiring puts no device on the named bus.
var ErrNoBus = errors.New("simulator: no such i2c bus")

// i2cDevice is a chip on a simulated bus; its methods run under Cabinet.mu.
type i2cDevice interface {
	where() (bus string, addr uint16)
	// txLocked runs one transaction: w written, then len(r) bytes read. It
	// reports whether the persistent state changed.
	txLocked(c *Cabinet, w, r []byte, now time.Time) (persistent bool)
	// present is false while the chip is gone.
	present() bool
}

// Bus is a simulated I²C bus of a Cabinet: it implements i2c.BusCloser and
// carries the wiring's MCP23017 expanders and the display's PCF8574
// back-pack. Transactions are atomic with respect to the rest of the model.
type Bus struct {
	c    *Cabinet
	name string
	txs  uint64 // guarded by c.mu
}

var _ i2c.BusCloser = (*Bus)(nil)

// String is "sim-i2c-NAME".
func (b *Bus) String() string { return "sim-i2c-" + b.name }

// Tx runs one transaction with the device at addr: it returns an ErrNACK
// error when no device answers there.
func (b *Bus) Tx(addr uint16, w, r []byte) error {
	c := b.c
	c.mu.Lock()
	b.txs++
	var dev i2cDevice
	for _, d := range c.devices {
		if bus, a := d.where(); bus == b.name && a == addr {
			dev = d
		}
	}
	if m, ok := dev.(*mcp); ok {
		m.txs++
	}
	if dev == nil || !dev.present() {
		c.mu.Unlock()
		return fmt.Errorf("%w: %s address %#x", ErrNACK, b, addr)
	}
	persistent := dev.txLocked(c, w, r, time.Now())
	c.mu.Unlock()
	c.persistAfterPin(persistent)
	return nil
}

// SetSpeed accepts any speed.
func (b *Bus) SetSpeed(physic.Frequency) error { return nil }

// Halt does nothing: a transaction never blocks.
func (b *Bus) Halt() error { return nil }

// Close does nothing; the bus lives as long as the cabinet.
func (b *Bus) Close() error { return nil }

// Transactions is the number of transactions tried on the bus so far.
func (b *Bus) Transactions() uint64 {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	return b.txs
}

// Bus returns the simulated I²C bus called name in the wiring (for
// hal.Options.Buses), or an ErrNoBus error.
func (c *Cabinet) Bus(name string) (i2c.Bus, error) {
	if b, ok := c.buses[name]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%w %q", ErrNoBus, name)
}

// registerBuses registers the buses in periph's i2creg: a bus named by a
// number ("1") under "sim-i2c-1" with that bus number, any other under
// "sim-i2c-NAME" with NAME as alias.
func (c *Cabinet) registerBuses() error {
	var done []string
	for name, b := range c.buses {
		number, aliases := -1, []string{name}
		if n, err := strconv.Atoi(name); err == nil && n >= 0 {
			number, aliases = n, nil
		}
		if err := i2creg.Register(b.String(), aliases, number, func() (i2c.BusCloser, error) { return b, nil }); err != nil {
			for _, d := range done {
				_ = i2creg.Unregister(d)
			}
			return fmt.Errorf("simulator: registering i2c bus %s: %w", name, err)
		}
		done = append(done, b.String())
	}
	return nil
}

func (c *Cabinet) unregisterBuses() {
	for _, b := range c.buses {
		_ = i2creg.Unregister(b.String())
	}
}

// buildI2C creates the expanders of the wiring.
func (c *Cabinet) buildI2C() error {
	for _, e := range c.w.Expanders {
		if e.Type != "" && e.Type != "mcp23017" {
			return fmt.Errorf("%w: expander %s: type %q", ErrBadWiring, e.Name, e.Type)
		}
		if c.mcpNamed(e.Name) != nil {
			return fmt.Errorf("%w: expander %s twice", ErrBadWiring, e.Name)
		}
		m := &mcp{name: e.Name, bus: e.Bus, addr: e.Address}
		m.powerOn()
		if err := c.addDevice(e.Bus, e.Address, m); err != nil {
			return err
		}
	}
	return nil
}

// addDevice puts dev on bus at addr.
func (c *Cabinet) addDevice(bus string, addr uint16, dev i2cDevice) error {
	for _, d := range c.devices {
		if b, a := d.where(); b == bus && a == addr {
			return fmt.Errorf("%w: two devices at %#x on i2c bus %s", ErrBadWiring, addr, bus)
		}
	}
	if p, ok := dev.(*pcf8574); ok {
		p.bus, p.addr = bus, addr
	}
	c.devices = append(c.devices, dev)
	if c.buses[bus] == nil {
		c.buses[bus] = &Bus{c: c, name: bus}
	}
	return nil
}

// mcpNamed returns the expander called name, or nil.
func (c *Cabinet) mcpNamed(name string) *mcp {
	for _, d := range c.devices {
		if m, ok := d.(*mcp); ok && m.name == name {
			return m
		}
	}
	return nil
}

// SetExpanderFault takes the expander called name off the bus (gone: it
// loses its power and every transaction to it is not acknowledged; its
// outputs stop driving, so its coils go off) or brings it back, powered on
// afresh: all pins inputs, until the daemon configures it again.
func (c *Cabinet) SetExpanderFault(name string, gone bool) error {
	c.mu.Lock()
	m := c.mcpNamed(name)
	if m == nil {
		c.mu.Unlock()
		return fmt.Errorf("%w: no expander %q", ErrBadWiring, name)
	}
	persistent := false
	if gone && !m.gone {
		m.powerOn() // what it comes back with; meanwhile nothing drives
		persistent = m.applyLocked(c, time.Now())
		c.log.Info("simulator: expander gone", "expander", name)
	}
	m.gone = gone
	c.changedLocked(persistent)
	c.mu.Unlock()
	c.persistAfterPin(persistent)
	return nil
}

// ExpanderTransactions is the number of transactions addressed to the
// expander called name (acknowledged or not).
func (c *Cabinet) ExpanderTransactions(name string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.mcpNamed(name); m != nil {
		return m.txs
	}
	return 0
}

// MCP23017 registers, IOCON.BANK = 0.
const (
	regIODIRA  = 0x00
	regIPOLA   = 0x02
	regIOCON   = 0x0A
	regIOCONB  = 0x0B
	regGPPUA   = 0x0C
	regINTFA   = 0x0E
	regINTCAPA = 0x10
	regGPIOA   = 0x12
	regOLATA   = 0x14
	mcpRegs    = 0x16

	ioconSEQOP = 1 << 5 // 1: the address pointer does not increment
)

// mcp models an MCP23017 in its BANK = 0 register mapping: IODIR, IPOL,
// GPPU, GPIO (reads the pins, writes the latches), OLAT and IOCON (shared
// by both addresses; SEQOP honoured: with it set, the address pointer
// toggles between the A and B register of a pair, as the datasheet says
// for BANK = 0). Interrupt registers read as written or zero and do
// nothing; BANK = 1 is not modelled. Guarded by Cabinet.mu.
type mcp struct {
	name string
	bus  string
	addr uint16
	gone bool
	ptr  byte
	regs [mcpRegs]byte
	pins [16]*Pin // nil where nothing is wired
	txs  uint64
}

func (m *mcp) where() (string, uint16) { return m.bus, m.addr }
func (m *mcp) present() bool           { return !m.gone }

// powerOn sets the registers to their power-on values: all pins inputs.
func (m *mcp) powerOn() {
	m.regs = [mcpRegs]byte{}
	m.regs[regIODIRA], m.regs[regIODIRA+1] = 0xFF, 0xFF
	m.ptr = 0
}

func (m *mcp) txLocked(c *Cabinet, w, r []byte, now time.Time) bool {
	if len(w) > 0 {
		m.ptr = w[0] % mcpRegs
		w = w[1:]
	}
	for _, b := range w {
		m.writeLocked(m.ptr, b)
		m.advance()
	}
	persistent := false
	if len(w) > 0 {
		persistent = m.applyLocked(c, now)
	}
	for i := range r {
		r[i] = m.readLocked(c, m.ptr, now)
		m.advance()
	}
	return persistent
}

// advance moves the address pointer after a byte.
func (m *mcp) advance() {
	if m.regs[regIOCON]&ioconSEQOP != 0 {
		m.ptr ^= 1 // byte mode, BANK = 0: toggle within the A/B pair
		return
	}
	m.ptr = (m.ptr + 1) % mcpRegs
}

func (m *mcp) writeLocked(reg, b byte) {
	switch reg {
	case regIOCON, regIOCONB:
		m.regs[regIOCON], m.regs[regIOCONB] = b, b
	case regGPIOA, regGPIOA + 1: // writing GPIO writes the latch
		m.regs[regOLATA+reg-regGPIOA] = b
	case regINTFA, regINTFA + 1, regINTCAPA, regINTCAPA + 1: // read-only
	default:
		m.regs[reg] = b
	}
}

func (m *mcp) readLocked(c *Cabinet, reg byte, now time.Time) byte {
	if reg != regGPIOA && reg != regGPIOA+1 {
		return m.regs[reg]
	}
	port := int(reg - regGPIOA)
	var v byte
	for bit := range 8 {
		i := port*8 + bit
		var high bool
		switch p := m.pins[i]; {
		case m.regs[regIODIRA+port]&(1<<bit) == 0: // an output reads its latch
			high = m.regs[regOLATA+port]&(1<<bit) != 0
		case p != nil:
			high = bool(c.readLocked(p, now))
		default: // nothing wired: the pull-up, or a floating line read low
			high = m.regs[regGPPUA+port]&(1<<bit) != 0
		}
		if high {
			v |= 1 << bit
		}
	}
	return v ^ m.regs[regIPOLA+port]
}

// applyLocked makes every wired pin drive what the registers say and
// reports whether the persistent state changed.
func (m *mcp) applyLocked(c *Cabinet, now time.Time) bool {
	persistent := false
	for i, p := range m.pins {
		if p == nil {
			continue
		}
		port, mask := i/8, byte(1)<<(i%8)
		was := p.driveLocked()
		p.out = m.regs[regIODIRA+port]&mask == 0
		p.level = gpio.Level(m.regs[regOLATA+port]&mask != 0)
		if m.regs[regGPPUA+port]&mask != 0 {
			p.pull = gpio.PullUp
		} else {
			p.pull = gpio.Float
		}
		if c.pinDrivenLocked(p, was, now) {
			persistent = true
		}
	}
	return persistent
}

// pcf8574 models a PCF8574 I²C back-pack of the display: each byte written
// appears on P0..P7 (P0=RS, P1=RW, P2=E, P3=backlight, P4..P7=D4..D7); a
// falling edge of E latches a nibble into the display's controller. A read
// returns the port. Guarded by Cabinet.mu.
type pcf8574 struct {
	bus  string
	addr uint16
	lcd  *lcd
	port byte
}

func (p *pcf8574) where() (string, uint16) { return p.bus, p.addr }
func (p *pcf8574) present() bool           { return true }

func (p *pcf8574) txLocked(c *Cabinet, w, r []byte, _ time.Time) bool {
	for _, b := range w {
		prev := p.port
		p.port = b
		if prev&0x04 != 0 && b&0x04 == 0 && prev&0x02 == 0 { // E falls while writing
			if p.lcd.latch(prev&0x01 != 0, prev>>4) {
				c.changedLocked(false)
			}
		}
	}
	for i := range r {
		r[i] = p.port
	}
	return false
}

// Backlight reports whether the display's back-pack has its backlight on;
// false for a display wired to pins or none.
func (c *Cabinet) Backlight() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.devices {
		if p, ok := d.(*pcf8574); ok {
			return p.port&0x08 != 0
		}
	}
	return false
}
