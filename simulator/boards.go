package simulator

import (
	"fmt"
	"io"
	"time"

	halrs485 "github.com/openlocker/locker/hal/rs485"
	"github.com/openlocker/locker/hal/rs485/proto"
	"github.com/openlocker/locker/hal/rs485/serial"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator/rs485"
)

// RS485 lock boards.
//
// A compartment the wiring puts on an RS485 board's channel has no pins:
// the simulated board (simulator/rs485) drives its coil and reads its door
// and parcel. An unlock the board receives energises the compartment's
// coil for the board's own pulse (half the wiring's locks.pulse, between
// 2×MinPulse and 250 ms), with the same physics as a pin would: the latch
// releases, the door springs ajar, the power budget and the pulse log see
// it. The board's lock feedback reads what a door sensor would (injected
// door-sensor faults included), its infrared sensor the parcel.
//
// Each bus plays on the master side of a pseudo-terminal; OpenSerial hands
// the daemon the slave, opened by hal's own termios code. A bus whose
// device Options.RealDevice claims is not simulated: OpenSerial opens the
// device itself, and the compartments on it are External (the physics
// does not know them; the daemon's readings are the truth).

// maxBoardPulse caps a simulated board's coil pulse.
const maxBoardPulse = 250 * time.Millisecond

// boardPhysics connects one bus's boards to the cabinet.
type boardPhysics struct {
	c   *Cabinet
	bus string
}

// compOnBoard returns the compartment on channel ch of board on the bus.
func (c *Cabinet) compOnBoard(bus string, board, ch int) *comp {
	return c.onBoard[boardKey{bus, board, ch}]
}

type boardKey struct {
	bus       string
	board, ch int
}

func (p boardPhysics) Unlock(board, ch int) {
	c := p.c
	c.persistMu.Lock()
	defer c.persistMu.Unlock()
	c.mu.Lock()
	k := c.compOnBoard(p.bus, board, ch)
	if k == nil || c.halted || k.coilOn {
		c.mu.Unlock()
		return
	}
	persistent := c.setCoilLocked(k, true, time.Now())
	gen := k.coilGen
	time.AfterFunc(c.boardPulse, func() { c.boardCoilOff(k, gen) })
	if persistent {
		_ = c.saveLocked()
	}
	c.mu.Unlock()
}

// boardCoilOff ends a board's pulse gen of k.
func (c *Cabinet) boardCoilOff(k *comp, gen uint64) {
	c.persistMu.Lock()
	defer c.persistMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !k.coilOn || k.coilGen != gen {
		return
	}
	if c.setCoilLocked(k, false, time.Now()) {
		if err := c.saveLocked(); err != nil {
			c.log.Error("simulator: writing state", "err", err)
		}
	}
}

func (p boardPhysics) Sense(board, ch int) (open, parcel, ok bool) {
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.compOnBoard(p.bus, board, ch)
	if k == nil {
		return false, false, false
	}
	return k.doorReadsOpenLocked(time.Now()), k.hasParcel, true
}

// buildBoards creates a simulated bus for each RS485 bus of the wiring
// that is not a real device, and maps every board channel to its
// compartment.
func (c *Cabinet) buildBoards(realDevice func(string) bool, echo bool) error {
	c.boardPulse = min(max(c.w.Locks.Pulse/2, 2*c.minPulse), maxBoardPulse)
	c.onBoard = map[boardKey]*comp{}
	c.external = map[int]bool{}
	c.rs485 = map[string]*rs485.Bus{}
	c.monitors = map[string]*rs485.Monitor{}
	for i := range c.w.RS485 {
		wb := &c.w.RS485[i]
		p, err := proto.ParseProtocol(wb.Protocol)
		if err != nil {
			return fmt.Errorf("%w: bus %s: %v", ErrBadWiring, wb.Name, err)
		}
		openBit := 0
		if wb.OpenBit() {
			openBit = 1
		}
		if realDevice != nil && realDevice(wb.Device) {
			c.realBuses = append(c.realBuses, wb.Name)
			c.monitors[wb.Name] = rs485.NewMonitor(wb.Name, p, openBit)
			continue
		}
		cfg := rs485.Config{Name: wb.Name, Protocol: p, Baud: wb.Baud, LockOpenBit: openBit,
			Physics: boardPhysics{c: c, bus: wb.Name}}
		for _, b := range wb.Boards {
			cfg.Boards = append(cfg.Boards, rs485.Board{Address: b.Address, Channels: b.Channels,
				NoUnlockReply: p == proto.Kerong && !echo})
		}
		bus, err := rs485.New(cfg)
		if err != nil {
			return fmt.Errorf("%w: bus %s: %v", ErrBadWiring, wb.Name, err)
		}
		c.rs485[wb.Name] = bus
		c.busOrder = append(c.busOrder, wb.Name)
	}
	return nil
}

// addBoardCompartment wires compartment k to its board channel.
func (c *Cabinet) addBoardCompartment(k *comp, wc wiring.Compartment) error {
	if _, ok := c.w.Bus(wc.Bus); !ok {
		return fmt.Errorf("%w: compartment %d names no bus %q", ErrBadWiring, wc.Number, wc.Bus)
	}
	if _, sim := c.rs485[wc.Bus]; !sim {
		c.external[wc.Number] = true
		return nil
	}
	key := boardKey{wc.Bus, wc.Board, wc.Channel}
	if _, dup := c.onBoard[key]; dup {
		return fmt.Errorf("%w: compartment %d: bus %s board %d channel %d is wired twice", ErrBadWiring, wc.Number, wc.Bus, wc.Board, wc.Channel)
	}
	c.onBoard[key] = k
	return nil
}

// serveBoards starts every simulated bus behind its pseudo-terminal.
func (c *Cabinet) serveBoards() error {
	for _, name := range c.busOrder {
		if _, err := c.rs485[name].ServePTY(); err != nil {
			c.closeBoards()
			return fmt.Errorf("simulator: bus %s: %w", name, err)
		}
	}
	return nil
}

func (c *Cabinet) closeBoards() {
	for _, name := range c.busOrder {
		_ = c.rs485[name].Close()
	}
}

// RS485 returns the simulated buses in the order of the wiring (none for a
// cabinet without boards, or whose buses are real devices).
func (c *Cabinet) RS485() []*rs485.Bus {
	out := make([]*rs485.Bus, 0, len(c.busOrder))
	for _, name := range c.busOrder {
		out = append(out, c.rs485[name])
	}
	return out
}

// RS485Bus returns the simulated bus called name, or nil.
func (c *Cabinet) RS485Bus(name string) *rs485.Bus { return c.rs485[name] }

// RealBuses names the wiring's buses that drive a real device
// (Options.RealDevice) instead of simulated boards.
func (c *Cabinet) RealBuses() []string { return append([]string(nil), c.realBuses...) }

// RealMonitor returns the frame view of the real bus called name, or nil.
func (c *Cabinet) RealMonitor(name string) *rs485.Monitor { return c.monitors[name] }

// ObserveRS485 is hal's frame observer (hal.Options.ObserveRS485) for this
// cabinet: the daemon's bus worker tells a real bus's frames to its
// Monitor, for the page; a simulated bus keeps its own, so it gets none.
func (c *Cabinet) ObserveRS485(bus string) halrs485.Observer {
	if m := c.monitors[bus]; m != nil {
		return m.Observe
	}
	return nil
}

// External reports whether compartment n is on a real board: the
// simulated physics does not know its door or parcel.
func (c *Cabinet) External(n int) bool { return c.external[n] }

// OpenSerial is hal's serial opener (hal.Options.OpenSerial) for this
// cabinet: the device of a simulated bus opens the slave of that bus's
// pseudo-terminal, any other device itself, both through hal's termios
// code at baud.
func (c *Cabinet) OpenSerial(device string, baud int) (io.ReadWriteCloser, error) {
	for i := range c.w.RS485 {
		wb := &c.w.RS485[i]
		if wb.Device != device {
			continue
		}
		if bus := c.rs485[wb.Name]; bus != nil {
			path := bus.Path()
			if path == "" {
				return nil, fmt.Errorf("simulator: bus %s is not served", wb.Name)
			}
			if baud <= 0 {
				baud = bus.Baud()
			}
			return serial.Open(path, baud)
		}
	}
	return serial.Open(device, baud)
}
