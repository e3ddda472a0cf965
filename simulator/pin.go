package simulator

import (
	"fmt"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/conn/v3/pin"
)

// role says what a pin is wired to in the cabinet.
type role int

const (
	roleLock    role = iota + 1 // a lock coil relay (output)
	roleDoor                    // a door sensor (input)
	roleParcel                  // an occupancy sensor (input)
	roleRow                     // a keypad row (output)
	roleCol                     // a keypad column (input)
	roleLCDRS                   // the display's RS (output)
	roleLCDE                    // the display's E (output)
	roleLCDData                 // one of the display's D4..D7 (output)
	roleLED                     // a compartment's status LED (output, lit while high)
	roleBuzzer                  // the keypad buzzer (output, sounds while high)
)

func (r role) String() string {
	switch r {
	case roleLock:
		return "lock"
	case roleDoor:
		return "door sensor"
	case roleParcel:
		return "parcel sensor"
	case roleRow:
		return "keypad row"
	case roleCol:
		return "keypad column"
	case roleLCDRS:
		return "display RS"
	case roleLCDE:
		return "display E"
	case roleLCDData:
		return "display data"
	case roleLED:
		return "LED"
	case roleBuzzer:
		return "buzzer"
	}
	return "unknown"
}

// Pin is one simulated GPIO pin of a Cabinet. Output pins record the level
// the daemon drives and act on the model (coils, keypad rows, the display,
// LEDs, the buzzer); input pins read their level from the model. The pins
// of a simulated expander are Pins too, but the daemon reaches them only
// through the expander's registers on the simulated I²C bus.
type Pin struct {
	c       *Cabinet
	name    string
	number  int
	role    role
	index   int // compartment index, keypad row/column, or data bit (0 = D4)
	defPull gpio.Pull

	// Guarded by c.mu.
	out    bool       // configured as an output by Out
	level  gpio.Level // the driven level while out
	pull   gpio.Pull
	edge   gpio.Edge
	halt   chan struct{} // closed by Halt to interrupt WaitForEdge
	warned bool          // an input pin driven as an output was logged
}

var (
	_ gpio.PinIO  = (*Pin)(nil)
	_ pin.PinFunc = (*Pin)(nil)
)

// String returns the pin's name.
func (p *Pin) String() string { return p.name }

// Name returns the pin's name in the wiring.
func (p *Pin) Name() string { return p.name }

// Number returns the pin's index in the cabinet.
func (p *Pin) Number() int { return p.number }

// Function returns the pin's current function as a string.
func (p *Pin) Function() string { return string(p.Func()) }

// Func returns the pin's current function: In/High, In/Low, Out/High or
// Out/Low.
func (p *Pin) Func() pin.Func {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	if p.out {
		if p.level {
			return gpio.OUT_HIGH
		}
		return gpio.OUT_LOW
	}
	if p.c.readLocked(p, time.Now()) {
		return gpio.IN_HIGH
	}
	return gpio.IN_LOW
}

// SupportedFuncs returns IN and OUT.
func (p *Pin) SupportedFuncs() []pin.Func { return []pin.Func{gpio.IN, gpio.OUT} }

// SetFunc switches the pin to IN, IN_HIGH, IN_LOW, OUT (low), OUT_LOW or
// OUT_HIGH.
func (p *Pin) SetFunc(f pin.Func) error {
	switch f {
	case gpio.IN, gpio.IN_HIGH, gpio.IN_LOW:
		return p.In(gpio.PullNoChange, gpio.NoEdge)
	case gpio.OUT, gpio.OUT_LOW:
		return p.Out(gpio.Low)
	case gpio.OUT_HIGH:
		return p.Out(gpio.High)
	}
	return fmt.Errorf("simulator: pin %s: unsupported function %q", p.name, f)
}

// Halt interrupts any WaitForEdge in progress. It does not change the level.
func (p *Pin) Halt() error {
	p.c.mu.Lock()
	p.haltLocked()
	p.c.mu.Unlock()
	return nil
}

func (p *Pin) haltLocked() {
	close(p.halt)
	p.halt = make(chan struct{})
}

// In configures the pin as an input: an output stops driving its line.
func (p *Pin) In(pull gpio.Pull, edge gpio.Edge) error {
	p.c.mu.Lock()
	was := p.driveLocked()
	p.out = false
	if pull != gpio.PullNoChange {
		p.pull = pull
	}
	p.edge = edge
	persistent := p.c.pinDrivenLocked(p, was, time.Now())
	p.c.mu.Unlock()
	p.c.persistAfterPin(persistent)
	return nil
}

// Read returns the pin's level: the driven level of an output, else what
// the cabinet's physics puts on the line.
func (p *Pin) Read() gpio.Level {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return p.c.readLocked(p, time.Now())
}

// WaitForEdge waits for an edge configured by In, sampling the line every
// millisecond. It returns false at the timeout (0 waits until Halt), at
// once for a negative timeout, and when Halt is called. Without an edge
// configured it just waits.
func (p *Pin) WaitForEdge(timeout time.Duration) bool {
	if timeout < 0 {
		return false
	}
	p.c.mu.Lock()
	halt, edge, last := p.halt, p.edge, p.c.readLocked(p, time.Now())
	p.c.mu.Unlock()
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	var tick <-chan time.Time
	if edge != gpio.NoEdge {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-halt:
			return false
		case <-deadline:
			return false
		case <-tick:
			l := p.Read()
			if l == last {
				continue
			}
			last = l
			if edge == gpio.BothEdges || (edge == gpio.RisingEdge && l == gpio.High) || (edge == gpio.FallingEdge && l == gpio.Low) {
				return true
			}
		}
	}
}

// Pull returns the pull resistor last set by In.
func (p *Pin) Pull() gpio.Pull {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return p.pull
}

// DefaultPull returns the wiring's pull for sensor inputs, PullUp for keypad
// columns and Float for outputs.
func (p *Pin) DefaultPull() gpio.Pull { return p.defPull }

// Out drives the pin at level l.
func (p *Pin) Out(l gpio.Level) error {
	p.c.mu.Lock()
	was := p.driveLocked()
	p.out = true
	p.level = l
	persistent := p.c.pinDrivenLocked(p, was, time.Now())
	p.c.mu.Unlock()
	p.c.persistAfterPin(persistent)
	return nil
}

// PWM is not supported.
func (p *Pin) PWM(gpio.Duty, physic.Frequency) error {
	return fmt.Errorf("simulator: pin %s: PWM not supported", p.name)
}

// drive is what a pin puts on its line.
type drive struct {
	out   bool
	level gpio.Level
}

func (p *Pin) driveLocked() drive { return drive{p.out, p.level} }

// low and high report whether the line is driven low or high.
func (d drive) low() bool  { return d.out && d.level == gpio.Low }
func (d drive) high() bool { return d.out && d.level == gpio.High }

// pinDrivenLocked applies the change of what p drives (from was to now) to
// the model and reports whether the persistent state changed.
func (c *Cabinet) pinDrivenLocked(p *Pin, was drive, now time.Time) bool {
	is := p.driveLocked()
	if is == was {
		return false
	}
	switch p.role {
	case roleLock:
		active := gpio.High
		if c.w.Locks.ActiveLow {
			active = gpio.Low
		}
		return c.setCoilLocked(c.comps[p.index], is.out && is.level == active, now)
	case roleRow:
		if p.index == 0 && is.low() && !was.low() {
			c.keypad.scans++
		}
	case roleLCDE:
		// The HD44780 latches RS and D4..D7 on the falling edge of E; an
		// undriven line reads low.
		if was.high() && !is.high() {
			var nibble byte
			for i, d := range c.lcd.data {
				if d.driveLocked().high() {
					nibble |= 1 << i
				}
			}
			rs := c.lcd.rs.driveLocked().high()
			if c.lcd.latch(rs, nibble) {
				c.changedLocked(false)
			}
		}
	case roleLED:
		c.changedLocked(false)
	case roleBuzzer:
		if is.high() && !was.high() {
			c.beeps++
		}
		c.changedLocked(false)
	case roleDoor, roleParcel, roleCol:
		if p.warned || !is.out {
			break
		}
		p.warned = true
		c.log.Warn("simulator: an input pin is driven as an output", "pin", p.name, "role", p.role.String())
	}
	return false
}

// readLocked is the level on p's line at now.
func (c *Cabinet) readLocked(p *Pin, now time.Time) gpio.Level {
	if p.out {
		return p.level
	}
	switch p.role {
	case roleDoor:
		return gpio.Level(c.comps[p.index].doorReadsOpenLocked(now) != c.w.Sensors.DoorOpenLow)
	case roleParcel:
		return gpio.Level(c.comps[p.index].hasParcel != c.w.Sensors.ParcelPresentLow)
	case roleCol:
		for r, row := range c.keypad.rows {
			if row.driveLocked().low() && c.keypad.held[r][p.index] {
				return gpio.Low
			}
		}
	}
	return p.pull != gpio.PullDown
}

// persistAfterPin writes the state file after a pin changed it; the error
// goes to the log, as the hal has no use for it.
func (c *Cabinet) persistAfterPin(persistent bool) {
	if !persistent {
		return
	}
	if err := c.persist(); err != nil {
		c.log.Error("simulator: writing state", "err", err)
	}
}
