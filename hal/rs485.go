package hal

import (
	"context"
	"fmt"
	"io"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/conn/v3/pin"

	"github.com/openlocker/locker/hal/rs485"
	"github.com/openlocker/locker/hal/rs485/proto"
	"github.com/openlocker/locker/hal/rs485/serial"
	"github.com/openlocker/locker/hal/wiring"
)

// RS485 lock boards.
//
// A compartment wired to a board's channel gets pins of its own that the
// rest of the hardware drives as it drives GPIO pins: its lock is a
// boardLock, whose switch-on sends one unlock through the bus worker (the
// board times the coil itself; the switch-off does nothing), and its door
// and occupancy sensors are boardInputs, which read the bits of the board's
// last status poll. So the power budget, the gap between coils, the
// confirmation by the door sensor, the debouncing and chatter detection and
// the LockReleased, DoorChanged and ParcelChanged events are those of GPIO
// compartments. A board that stops answering (FailAfter failed polls in a
// row) is reported as a SensorFault with Source "board BUS/ADDR"
// (Compartment 0) and its sensors keep their state, unread, until it
// answers again (SensorRecovered). The lock worker's one retry pulse after
// a door that did not open is sent only once a status has been read since
// the first: otherwise the bus refuses it (rs485.ErrUnresolved) and the
// release ends with that error.

// SerialOpener opens a serial device at a speed, 8N1 raw; the default is
// the termios opener (serial.Open). The simulator passes one that hands
// out its pseudo-terminals.
type SerialOpener func(path string, baud int) (io.ReadWriteCloser, error)

// BusObserver gives the observer of the frames of the RS485 bus named bus
// (nil: none); see Options.ObserveRS485.
type BusObserver func(bus string) rs485.Observer

// UnlockWait bounds how long a release waits for its unlock frame to be
// written (behind the transaction on the bus and the unlocks queued).
const UnlockWait = 3 * time.Second

// busRun is one RS485 bus of the wiring.
type busRun struct {
	bus    *rs485.Bus
	device string
	up     map[int]bool // by address: the state last reported; owned by the poller
}

func defaultSerial(path string, baud int) (io.ReadWriteCloser, error) {
	return serial.Open(path, baud)
}

// openBuses builds and primes the wiring's buses.
func (h *Hardware) openBuses(w *wiring.Wiring, open SerialOpener, observe BusObserver) error {
	if open == nil {
		open = defaultSerial
	}
	h.buses = map[string]*busRun{}
	for i := range w.RS485 {
		wb := &w.RS485[i]
		p, err := proto.ParseProtocol(wb.Protocol)
		if err != nil {
			return fmt.Errorf("hal: rs485 bus %s: %w", wb.Name, err)
		}
		cfg := rs485.Config{Name: wb.Name, Protocol: p, Baud: wb.Baud, OpenBit: wb.OpenBit(), Logger: h.log,
			ReplyTimeout: wb.ReplyTimeout, Silence: wb.ReplySilence}
		if observe != nil {
			cfg.Observe = observe(wb.Name)
		}
		for _, b := range wb.Boards {
			cfg.Boards = append(cfg.Boards, rs485.Board{Address: b.Address, Channels: b.Channels})
		}
		dev, baud := wb.Device, wb.Baud
		bus, err := rs485.New(cfg, func() (io.ReadWriteCloser, error) { return open(dev, baud) })
		if err != nil {
			return fmt.Errorf("hal: rs485 bus %s: %w", wb.Name, err)
		}
		br := &busRun{bus: bus, device: dev, up: map[int]bool{}}
		h.buses[wb.Name] = br
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = bus.Prime(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("hal: rs485 bus %s on %s: %w", wb.Name, dev, err)
		}
		for _, b := range wb.Boards {
			st, _ := bus.BoardState(b.Address)
			// Up at first even when it is not, so that the first poll
			// reports a board that did not answer (SensorFault); its
			// sensors stay unknown until it does (Readable).
			br.up[b.Address] = true
			if !st.Up {
				h.log.Error("rs485 board does not answer", "bus", wb.Name, "board", b.Address, "err", st.Err)
			}
		}
	}
	return nil
}

// Buses returns the RS485 bus workers by name, for status pages.
func (h *Hardware) Buses() map[string]*rs485.Bus {
	out := make(map[string]*rs485.Bus, len(h.buses))
	for n, b := range h.buses {
		out[n] = b.bus
	}
	return out
}

// pollBoards reports boards that went down or came back since the last
// poll.
func (h *Hardware) pollBoards(now time.Time, out []Event) []Event {
	for name, br := range h.buses {
		for _, addr := range br.bus.Boards() {
			st, _ := br.bus.BoardState(addr)
			if st.Up == br.up[addr] {
				continue
			}
			br.up[addr] = st.Up
			src := fmt.Sprintf("board %s/%d", name, addr)
			if st.Up {
				out = append(out, Event{Kind: SensorRecovered, Source: src, At: now})
			} else {
				out = append(out, Event{Kind: SensorFault, Source: src, Err: st.Err, At: now})
			}
		}
	}
	return out
}

// boardPin is the common part of a board channel's pins.
type boardPin struct {
	name string
	bus  *rs485.Bus
	addr int
	ch   int
}

func (p *boardPin) String() string                 { return p.name }
func (p *boardPin) Halt() error                    { return nil }
func (p *boardPin) Name() string                   { return p.name }
func (p *boardPin) Number() int                    { return -1 }
func (p *boardPin) Function() string               { return "" }
func (p *boardPin) Func() pin.Func                 { return pin.FuncNone }
func (p *boardPin) SupportedFuncs() []pin.Func     { return nil }
func (p *boardPin) SetFunc(pin.Func) error         { return fmt.Errorf("hal: %s: no functions", p.name) }
func (p *boardPin) In(gpio.Pull, gpio.Edge) error  { return nil }
func (p *boardPin) WaitForEdge(time.Duration) bool { return false }
func (p *boardPin) Pull() gpio.Pull                { return gpio.PullNoChange }
func (p *boardPin) DefaultPull() gpio.Pull         { return gpio.PullNoChange }
func (p *boardPin) PWM(gpio.Duty, physic.Frequency) error {
	return fmt.Errorf("hal: %s: no PWM", p.name)
}

// boardLock is a board channel's lock as a coil output.
type boardLock struct {
	boardPin
	activeLow bool // the Solenoid's idea of the on level
}

// Read is the last level written: always off.
func (p *boardLock) Read() gpio.Level { return gpio.Level(p.activeLow) }

// Out sends one unlock when the level means "energise"; the board pulses
// the coil itself, so "switch off" does nothing.
func (p *boardLock) Out(l gpio.Level) error {
	if bool(l) == p.activeLow {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), UnlockWait)
	defer cancel()
	if err := p.bus.Unlock(ctx, p.addr, p.ch); err != nil {
		return fmt.Errorf("hal: %s: %w", p.name, err)
	}
	return nil
}

// boardInput is a board channel's door feedback or infrared sensor, read
// from the board's last status.
type boardInput struct {
	boardPin
	ir bool
}

// read returns the bit; ok is false while the board is down.
func (p *boardInput) read() (on, ok bool) {
	st, _ := p.bus.BoardState(p.addr)
	if !st.Up {
		return false, false
	}
	bits := st.Open
	if p.ir {
		bits = st.Parcel
	}
	return bits>>(p.ch-1)&1 == 1, true
}

// Read implements gpio.PinIn: High when on.
func (p *boardInput) Read() gpio.Level {
	on, _ := p.read()
	return gpio.Level(on)
}

// Out is refused: a sensor is an input.
func (p *boardInput) Out(gpio.Level) error { return fmt.Errorf("hal: %s: an input", p.name) }

var (
	_ gpio.PinIO = (*boardLock)(nil)
	_ gpio.PinIO = (*boardInput)(nil)
)
