package rs485

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openlocker/locker/hal/rs485/proto"
)

// Frame directions.
const (
	ToBoard   = "cmd"   // controller → board
	FromBoard = "reply" // board → controller
)

// Frame is one frame seen on the line.
type Frame struct {
	Seq  uint64    `json:"seq"`
	At   time.Time `json:"time"`
	Bus  string    `json:"bus"`
	Dir  string    `json:"dir"`  // ToBoard or FromBoard
	Hex  string    `json:"hex"`  // "02 00 31 03 36"
	Text string    `json:"text"` // decoded: "board 0 lock 1: unlock"
	// Err says what is wrong with the frame or its answer: a bad
	// checksum, garbage, an injected fault.
	Err string `json:"err,omitempty"`
}

// BoardState is what a board is going through, for the page.
type BoardState struct {
	Address  int    `json:"address"`
	Channels int    `json:"channels"`
	Fault    Fault  `json:"fault"`
	Off      bool   `json:"off"` // power-cycled, not back yet
	Commands uint64 `json:"commands"`
	Replies  uint64 `json:"replies"`
	// Unlocks counts the unlock frames addressed to the board, whether it
	// heard them or not, and ChannelUnlocks the same by channel (an
	// "open all" counts for every channel).
	Unlocks        uint64         `json:"unlocks"`
	ChannelUnlocks map[int]uint64 `json:"channel_unlocks,omitempty"`
	// Resent counts the unlocks sent again while the outcome of the
	// previous unlock of that lock was unknown to the controller (no
	// status query of the board answered intact since): a broken I15.
	Resent uint64 `json:"resent"`
}

// board is one board's mutable state; guarded by Bus.mu.
type board struct {
	cfg      Board
	fault    Fault
	offUntil time.Time
	commands uint64
	replies  uint64

	unlocks   uint64
	chUnlocks map[int]uint64
	resent    uint64
	// unknown: channels (bit ch-1) unlocked since the last status query
	// answered intact — the controller cannot know what they did.
	unknown uint64
	// noisyCmds, noisyReplies count what a noisy line carried.
	noisyCmds, noisyReplies uint64
}

// maxFrames is how many frames Frames keeps.
const maxFrames = 200

// Bus is a simulated serial line with its boards. Its methods are safe for
// concurrent use.
type Bus struct {
	cfg Config

	log frameLog

	// mu guards the fields below and every board.
	mu     sync.Mutex
	boards map[int]*board
	closed bool
	file   *os.File // the pty master while ServePTY serves
	path   string

	wg sync.WaitGroup // ServePTY's goroutine
}

// New returns a bus with the boards of cfg; it serves nothing until Serve
// or ServePTY.
func New(cfg Config) (*Bus, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Bus{cfg: cfg, boards: map[int]*board{}, log: frameLog{name: cfg.Name, now: cfg.Now}}
	for _, bc := range cfg.Boards {
		b.boards[bc.Address] = &board{cfg: bc, fault: FaultNone, chUnlocks: map[int]uint64{}}
	}
	return b, nil
}

// Name is the bus's name.
func (b *Bus) Name() string { return b.cfg.Name }

// Protocol is the bus's protocol.
func (b *Bus) Protocol() proto.Protocol { return b.cfg.Protocol }

// Baud is the line speed.
func (b *Bus) Baud() int { return b.cfg.Baud }

// Path is the pty slave's path while ServePTY serves, else "".
func (b *Bus) Path() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.path
}

// ServePTY opens a pseudo-terminal, serves the boards on its master side
// in a goroutine until Close, and returns the slave's path.
func (b *Bus) ServePTY() (string, error) {
	f, path, err := OpenPTY()
	if err != nil {
		return "", err
	}
	b.mu.Lock()
	if b.closed || b.file != nil {
		b.mu.Unlock()
		f.Close()
		return "", fmt.Errorf("%w, or served already", ErrClosed)
	}
	b.file, b.path = f, path
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		_ = b.Serve(f)
	}()
	return path, nil
}

// Close stops serving: the pty's master is closed, so that the slave's
// reads fail as with an unplugged adapter.
func (b *Bus) Close() error {
	b.mu.Lock()
	b.closed = true
	f := b.file
	b.file = nil
	b.mu.Unlock()
	var err error
	if f != nil {
		err = f.Close()
	}
	b.wg.Wait()
	return err
}

// silence ends a partial frame: bytes separated by more than this belong
// to different frames.
const silence = 20 * time.Millisecond

// Serve plays the boards on rw until a read fails (io.EOF, a closed pty).
func (b *Bus) Serve(rw io.ReadWriter) error {
	buf := make([]byte, 256)
	var pending []byte
	var last time.Time
	for {
		n, err := rw.Read(buf)
		now := time.Now()
		if n > 0 {
			if len(pending) > 0 && now.Sub(last) > silence {
				b.record(ToBoard, pending, "", "incomplete frame, dropped after a silence")
				pending = nil
			}
			last = now
			pending = append(pending, buf[:n]...)
			pending = b.frames5(rw, pending)
		}
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return ErrClosed
			}
			if errors.Is(err, syscall.EIO) && !b.isClosed() {
				// A pty's master reads EIO while no one holds the slave
				// open: the daemon restarts, or has not opened it yet.
				// The boards wait for it, as boards on a bus wait for
				// their controller.
				pending = nil
				time.Sleep(slaveRetry)
				continue
			}
			return err
		}
	}
}

// slaveRetry is how often a bus whose pty slave is closed looks again.
const slaveRetry = 5 * time.Millisecond

func (b *Bus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// frames5 takes every complete command frame (five bytes for both
// protocols) off the front of pending, acts on it, and returns the rest.
// Bytes that cannot start a frame are logged once as garbage.
func (b *Bus) frames5(w io.Writer, pending []byte) []byte {
	for {
		start := 0
		for start < len(pending) && !b.isStart(pending[start]) {
			start++
		}
		if start > 0 {
			b.record(ToBoard, pending[:start], "", "garbage")
			pending = pending[start:]
		}
		if len(pending) < 5 {
			return pending
		}
		frame := append([]byte(nil), pending[:5]...)
		if b.handle(w, frame) {
			pending = pending[5:]
		} else {
			// Not a frame: resynchronise on the next byte.
			pending = pending[1:]
		}
	}
}

func (b *Bus) isStart(c byte) bool {
	if b.cfg.Protocol == proto.Kerong {
		return c == proto.KerongSTX
	}
	return c == 0x8A || c == 0x80
}

// handle acts on one five-byte frame and reports whether it was one (a
// frame with a bad checksum is one: the board drops it).
func (b *Bus) handle(w io.Writer, frame []byte) bool {
	if b.cfg.Protocol == proto.Kerong {
		return b.handleKerong(w, frame)
	}
	return b.handle8A80(w, frame)
}

// boardFor returns the board at addr and whether it hears the command
// now, and counts the command; deaf says why not. A board that is off or
// does not answer is deaf, and on a noisy line one command in four
// reaches it garbled.
func (b *Bus) boardFor(addr int) (bd *board, listens bool, deaf string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bd = b.boards[addr]
	switch {
	case bd == nil:
		return nil, false, fmt.Sprintf("no board at address %d on this bus", addr)
	case b.cfg.Now().Before(bd.offUntil):
		return bd, false, "the board is off (power cycle): no answer"
	case bd.fault == FaultNoAnswer:
		return bd, false, "the board does not answer (injected)"
	case bd.fault == FaultNoise:
		bd.noisyCmds++
		if bd.noisyCmds%4 == 0 {
			return bd, false, "garbled on a noisy line (injected): the board ignores it"
		}
	}
	bd.commands++
	return bd, true, ""
}

// sentUnlock notes an unlock of channel ch (0: every channel) sent to bd,
// heard or not, and reports whether it broke I15: a lock unlocked again
// while the outcome of its previous unlock is unknown to the controller.
func (b *Bus) sentUnlock(bd *board, ch int) (resent bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var mask uint64
	if ch == 0 {
		mask = 1<<bd.cfg.Channels - 1
	} else if ch <= bd.cfg.Channels {
		mask = 1 << (ch - 1)
	}
	bd.unlocks++
	for c := 1; c <= bd.cfg.Channels; c++ {
		if mask&(1<<(c-1)) != 0 {
			bd.chUnlocks[c]++
		}
	}
	resent = bd.unknown&mask != 0
	if resent {
		bd.resent++
	}
	bd.unknown |= mask
	return resent
}

// resentText is the error of an unlock frame that broke I15.
const resentText = "I15 broken: unlock resent while the outcome of the previous one is unknown"

// cutPowerOnUnlock carries out FaultPowerCutOnUnlock once the board fired
// the lock: the board goes off before it answers.
func (b *Bus) cutPowerOnUnlock(bd *board) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bd.fault == FaultPowerCutOnUnlock {
		bd.fault = FaultNone
		bd.offUntil = b.cfg.Now().Add(b.cfg.PowerOff)
	}
}

// withAddress returns frame with its address byte (the second, in both
// protocols) changed to another board's and the checksum made right.
func (b *Bus) withAddress(frame []byte) []byte {
	f := append([]byte(nil), frame...)
	if b.cfg.Protocol == proto.Kerong {
		f[1] ^= 0x10 // board ^ 1, same lock
		f[len(f)-1] = proto.Sum(f[:len(f)-1])
	} else {
		f[1] = f[1]%31 + 1
		f[len(f)-1] = proto.XOR(f[:len(f)-1])
	}
	return f
}

// reply sends a board's reply as the board and a USB adapter would: after
// the board's delay, at the baud rate, in bursts. A fault may corrupt or
// drop it. status says the reply answers a status query: written intact,
// it tells the controller what the board's unlocks did.
func (b *Bus) reply(w io.Writer, bd *board, delay time.Duration, frame []byte, text string, status bool) {
	time.Sleep(delay)
	b.mu.Lock()
	fault := bd.fault
	off := b.cfg.Now().Before(bd.offUntil)
	if !off && fault != FaultLostReply {
		bd.replies++
	}
	noisy := false
	if fault == FaultNoise && !off {
		bd.noisyReplies++
		noisy = bd.noisyReplies%3 != 0
	}
	b.mu.Unlock()
	intact := false
	switch {
	case off:
		b.record(FromBoard, frame, text, "not sent: the board lost its power")
		return
	case fault == FaultLostReply:
		b.record(FromBoard, frame, text, "lost on the line (injected)")
		return
	case fault == FaultBadChecksum:
		frame = append([]byte(nil), frame...)
		frame[len(frame)-1] ^= 0x5A
		b.record(FromBoard, frame, text, "wrong checksum (injected)")
	case fault == FaultWrongAddress:
		frame = b.withAddress(frame)
		b.record(FromBoard, frame, text, "another board's address (injected)")
	case noisy:
		frame = append([]byte(nil), frame...)
		frame[3] ^= 0x01 // a data byte: a lock's bit, or the 8A/80's state
		b.record(FromBoard, frame, text, "a bit flipped on a noisy line (injected)")
	default:
		intact = true
		b.record(FromBoard, frame, text, "")
	}
	if b.send(w, frame) && intact && status {
		b.mu.Lock()
		bd.unknown = 0
		b.mu.Unlock()
	}
}

// send writes frame at the baud rate in USB bursts and reports whether all
// of it was written.
func (b *Bus) send(w io.Writer, frame []byte) bool {
	for len(frame) > 0 {
		n := min(b.cfg.BurstSize, len(frame))
		if _, err := w.Write(frame[:n]); err != nil {
			return false
		}
		frame = frame[n:]
		if len(frame) > 0 {
			gap := max(b.cfg.BurstGap, time.Duration(proto.FrameTime(n, b.cfg.Baud)))
			start := time.Now()
			time.Sleep(gap)
			if time.Since(start) > 2*gap {
				// A loaded machine overslept: a real adapter would not
				// have left the line quiet that long. The rest goes at once.
				_, err := w.Write(frame)
				return err == nil
			}
		}
	}
	return true
}

// wireTime is how long n bytes take on the line.
func (b *Bus) wireTime(n int) time.Duration {
	return time.Duration(proto.FrameTime(n, b.cfg.Baud))
}

// record logs a frame and publishes it.
func (b *Bus) record(dir string, data []byte, text, errText string) {
	b.log.add(dir, data, text, errText)
}

// Hex renders bytes as the page shows them: "02 00 31 03 36".
func Hex(data []byte) string {
	s := hex.EncodeToString(data)
	var sb strings.Builder
	for i := 0; i < len(s); i += 2 {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(strings.ToUpper(s[i : i+2]))
	}
	return sb.String()
}

// Frames returns the last frames seen on the line, oldest first.
func (b *Bus) Frames() []Frame { return b.log.all() }

// Subscribe returns a channel that receives every frame from now on (a
// subscriber too slow misses frames; the channel holds 256) and a function
// that ends the subscription. The channel is never closed.
func (b *Bus) Subscribe() (<-chan Frame, func()) { return b.log.subscribe() }

// Boards returns the state of every board, by address.
func (b *Bus) Boards() []BoardState {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Now()
	out := make([]BoardState, 0, len(b.boards))
	for _, bc := range b.cfg.Boards {
		bd := b.boards[bc.Address]
		out = append(out, BoardState{Address: bc.Address, Channels: bc.Channels, Fault: bd.fault,
			Off: now.Before(bd.offUntil), Commands: bd.commands, Replies: bd.replies,
			Unlocks: bd.unlocks, ChannelUnlocks: maps.Clone(bd.chUnlocks), Resent: bd.resent})
	}
	return out
}

// SetFault injects fault f into the board at addr (FaultNone clears it).
func (b *Bus) SetFault(addr int, f Fault) error {
	if _, err := ParseFault(string(f)); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	bd := b.boards[addr]
	if bd == nil {
		return fmt.Errorf("%w: %s has no board %d", ErrNoBoard, b.cfg.Name, addr)
	}
	bd.fault = f
	return nil
}

// PowerCycle cuts the power of the board at addr for Config.PowerOff (or
// off, when positive): it neither acts nor answers until then, and comes
// back as after a reset.
func (b *Bus) PowerCycle(addr int, off time.Duration) error {
	if off <= 0 {
		off = b.cfg.PowerOff
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	bd := b.boards[addr]
	if bd == nil {
		return fmt.Errorf("%w: %s has no board %d", ErrNoBoard, b.cfg.Name, addr)
	}
	bd.offUntil = b.cfg.Now().Add(off)
	return nil
}
