// Package rs485 simulates RS485 lock-control boards — the Kerong CU16 class
// and the generic DIP-addressed "8A/80" board — on the far side of a serial
// line, so that the locker's real serial code talks to them byte for byte.
//
// A Bus is one serial line with its boards. It plays on the master side of
// a pseudo-terminal (OpenPTY; the daemon opens the slave, /dev/pts/N, as it
// opens /dev/ttyUSB0) or on any io.ReadWriter. It cuts the bytes it
// receives into command frames, lets the addressed board act on the
// cabinet (Physics: a lock's coil fires, the door springs ajar) and answers
// as the real board does: the reply is delayed as the board delays it
// (about 500 ms for an 8A/80 unlock), sent at the line's baud rate, and
// delivered in bursts a few milliseconds apart, as a USB-RS485 adapter
// delivers it. A pty moves bytes at memory speed: the timing is the
// board's, emulated here.
//
// Faults are injected per board (SetFault): a board that does not answer,
// one whose replies are lost after it acted, one whose replies carry a
// wrong checksum, one that answers with another board's address, a noisy
// line that garbles some commands and most replies, a power cut in the
// middle of the next unlock, and a power cycle (PowerCycle). Every frame
// on the line, both ways, is kept (Frames) and published (Subscribe) for
// the web page.
//
// Each board also watches the controller keep invariant I15: an unlock of
// a lock is never sent again while the outcome of the previous one is
// unknown to the controller — until a status query of the board has been
// answered intact since. A resent unlock is counted (BoardState.Resent)
// and its frame says so.
package rs485

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/openlocker/locker/hal/rs485/proto"
)

// Sentinel errors.
var (
	// ErrNoBoard: no board of the bus has that address.
	ErrNoBoard = errors.New("rs485: no such board")
	// ErrUnknownFault: the fault name is not one of the Fault constants.
	ErrUnknownFault = errors.New("rs485: unknown fault")
	// ErrConfig: the bus cannot be simulated as configured.
	ErrConfig = errors.New("rs485: bad bus configuration")
	// ErrClosed: the bus was closed.
	ErrClosed = errors.New("rs485: bus closed")
)

// Fault is a fault injected into a board.
type Fault string

// Faults.
const (
	FaultNone Fault = "none"
	// FaultNoAnswer: the board neither acts nor answers (unplugged, a cut
	// cable, a wrong DIP address).
	FaultNoAnswer Fault = "no_answer"
	// FaultLostReply: the board acts on every command, but its replies are
	// lost on the line (a door may open without the controller hearing it).
	FaultLostReply Fault = "lost_reply"
	// FaultBadChecksum: the board acts and answers, with a wrong checksum
	// byte.
	FaultBadChecksum Fault = "bad_checksum"
	// FaultWrongAddress: the board acts and answers with another board's
	// address (a second board set to the same DIP address, a reflection),
	// with a checksum that is right for it.
	FaultWrongAddress Fault = "wrong_address"
	// FaultNoise: a noisy line (a missing terminator, a motor nearby): one
	// command in four reaches the board garbled and is ignored, and two
	// replies in three arrive with a data byte flipped.
	FaultNoise Fault = "noise"
	// FaultPowerCutOnUnlock: the board fires the lock of the next unlock
	// it receives and then loses its power before it answers, for
	// Config.PowerOff; the fault is then over.
	FaultPowerCutOnUnlock Fault = "power_cut_on_unlock"
)

// Faults lists every fault, FaultNone first.
func Faults() []Fault {
	return []Fault{FaultNone, FaultNoAnswer, FaultLostReply, FaultBadChecksum, FaultWrongAddress, FaultNoise, FaultPowerCutOnUnlock}
}

// ParseFault returns the fault named s, or ErrUnknownFault.
func ParseFault(s string) (Fault, error) {
	f := Fault(s)
	if slices.Contains(Faults(), f) {
		return f, nil
	}
	return "", fmt.Errorf("%w %q", ErrUnknownFault, s)
}

// Physics is the cabinet behind the boards' channels. Its methods are
// called from the bus's goroutine and must not block for long.
type Physics interface {
	// Unlock fires the lock of channel ch (1-based) of the board at address
	// board: the board energises the coil for a short pulse.
	Unlock(board, ch int)
	// Sense reads channel ch of board: whether its lock feedback (the
	// door's switch) reads open, and whether its infrared sensor sees a
	// parcel; ok is false for a channel that is not wired.
	Sense(board, ch int) (open, parcel, ok bool)
}

// Board configures one board of a bus.
type Board struct {
	// Address: 0–15 for Kerong, 1–31 for 8A/80.
	Address int
	// Channels: up to 16 for Kerong, 8–24 (a multiple of 8) for 8A/80.
	Channels int
	// NoUnlockReply: a Kerong board that does not answer an unlock at all
	// (its effect is read from the next status).
	NoUnlockReply bool
}

// Config configures a Bus.
type Config struct {
	// Name labels the bus in frames ("BUS1").
	Name string
	// Protocol is proto.Kerong or proto.P8A80.
	Protocol proto.Protocol
	// Baud is the line speed (default: the protocol's).
	Baud int
	// LockOpenBit is the value of a lock feedback bit that means open (0
	// or 1; the wiring's lock_open_bit). An 8A/80 unlock reply says open
	// with ST 11 whatever it is.
	LockOpenBit int
	Boards      []Board
	Physics     Physics

	// Timings; zero takes the default.
	ReplyDelay  time.Duration // before a reply (default 3 ms)
	UnlockDelay time.Duration // before an 8A/80 unlock reply (default 500 ms)
	BurstSize   int           // bytes per USB burst (default 4)
	BurstGap    time.Duration // least time between bursts (default 4 ms)
	PowerOff    time.Duration // how long a power cycle keeps a board off (default 2 s)
	// Now is the clock of the frame log (default time.Now).
	Now func() time.Time
}

const (
	defaultReplyDelay  = 3 * time.Millisecond
	defaultUnlockDelay = 500 * time.Millisecond
	defaultBurstSize   = 4
	defaultBurstGap    = 4 * time.Millisecond
	defaultPowerOff    = 2 * time.Second
	// openAllGap separates the coils an 8A/80 "open all" fires one by one.
	openAllGap = 150 * time.Millisecond
)

func (c *Config) validate() error {
	if c.Protocol != proto.Kerong && c.Protocol != proto.P8A80 {
		return fmt.Errorf("%w: protocol %v", ErrConfig, c.Protocol)
	}
	if c.Physics == nil {
		return fmt.Errorf("%w: no physics", ErrConfig)
	}
	if c.Baud <= 0 {
		c.Baud = c.Protocol.DefaultBaud()
	}
	if c.LockOpenBit != 0 && c.LockOpenBit != 1 {
		return fmt.Errorf("%w: lock_open_bit %d", ErrConfig, c.LockOpenBit)
	}
	seen := map[int]bool{}
	for _, b := range c.Boards {
		lo, hi, maxCh := 0, 15, 16
		if c.Protocol == proto.P8A80 {
			lo, hi, maxCh = 1, 31, 24
		}
		if b.Address < lo || b.Address > hi {
			return fmt.Errorf("%w: %s board address %d (want %d–%d)", ErrConfig, c.Protocol, b.Address, lo, hi)
		}
		if b.Channels < 1 || b.Channels > maxCh {
			return fmt.Errorf("%w: board %d has %d channels (want 1–%d)", ErrConfig, b.Address, b.Channels, maxCh)
		}
		if seen[b.Address] {
			return fmt.Errorf("%w: two boards at address %d", ErrConfig, b.Address)
		}
		seen[b.Address] = true
	}
	if c.ReplyDelay <= 0 {
		c.ReplyDelay = defaultReplyDelay
	}
	if c.UnlockDelay <= 0 {
		c.UnlockDelay = defaultUnlockDelay
	}
	if c.BurstSize <= 0 {
		c.BurstSize = defaultBurstSize
	}
	if c.BurstGap <= 0 {
		c.BurstGap = defaultBurstGap
	}
	if c.PowerOff <= 0 {
		c.PowerOff = defaultPowerOff
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}
