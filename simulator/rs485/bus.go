package rs485

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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
}

// board is one board's mutable state; guarded by Bus.mu.
type board struct {
	cfg      Board
	fault    Fault
	offUntil time.Time
	commands uint64
	replies  uint64
}

// maxFrames is how many frames Frames keeps.
const maxFrames = 200

// Bus is a simulated serial line with its boards. Its methods are safe for
// concurrent use.
type Bus struct {
	cfg Config

	// mu guards the fields below and every board; nothing is called under
	// it but non-blocking sends to subscribers.
	mu     sync.Mutex
	boards map[int]*board
	frames []Frame
	seq    uint64
	subs   map[int]chan Frame
	nextID int
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
	b := &Bus{cfg: cfg, boards: map[int]*board{}, subs: map[int]chan Frame{}}
	for _, bc := range cfg.Boards {
		b.boards[bc.Address] = &board{cfg: bc, fault: FaultNone}
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

// boardFor returns the board at addr, whether it listens now, and counts
// the command. A board that is off or does not answer is deaf.
func (b *Bus) boardFor(addr int) (bd *board, listens bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bd = b.boards[addr]
	if bd == nil {
		return nil, false
	}
	if b.cfg.Now().Before(bd.offUntil) || bd.fault == FaultNoAnswer {
		return bd, false
	}
	bd.commands++
	return bd, true
}

// reply sends a board's reply as the board and a USB adapter would: after
// the board's delay, at the baud rate, in bursts. A fault may corrupt or
// drop it.
func (b *Bus) reply(w io.Writer, bd *board, delay time.Duration, frame []byte, text string) {
	time.Sleep(delay)
	b.mu.Lock()
	fault := bd.fault
	off := b.cfg.Now().Before(bd.offUntil)
	if !off && fault != FaultLostReply {
		bd.replies++
	}
	b.mu.Unlock()
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
	default:
		b.record(FromBoard, frame, text, "")
	}
	for len(frame) > 0 {
		n := min(b.cfg.BurstSize, len(frame))
		if _, err := w.Write(frame[:n]); err != nil {
			return
		}
		frame = frame[n:]
		if len(frame) > 0 {
			gap := max(b.cfg.BurstGap, time.Duration(proto.FrameTime(n, b.cfg.Baud)))
			start := time.Now()
			time.Sleep(gap)
			if time.Since(start) > 2*gap {
				// A loaded machine overslept: a real adapter would not
				// have left the line quiet that long. The rest goes at once.
				_, _ = w.Write(frame)
				return
			}
		}
	}
}

// wireTime is how long n bytes take on the line.
func (b *Bus) wireTime(n int) time.Duration {
	return time.Duration(proto.FrameTime(n, b.cfg.Baud))
}

// record logs a frame and publishes it.
func (b *Bus) record(dir string, data []byte, text, errText string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	f := Frame{Seq: b.seq, At: b.cfg.Now(), Bus: b.cfg.Name, Dir: dir, Hex: Hex(data), Text: text, Err: errText}
	if len(b.frames) == maxFrames {
		b.frames = append(b.frames[:0], b.frames[1:]...)
	}
	b.frames = append(b.frames, f)
	for _, ch := range b.subs {
		select {
		case ch <- f:
		default:
		}
	}
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
func (b *Bus) Frames() []Frame {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Frame(nil), b.frames...)
}

// Subscribe returns a channel that receives every frame from now on (a
// subscriber too slow misses frames; the channel holds 256) and a function
// that ends the subscription. The channel is never closed.
func (b *Bus) Subscribe() (<-chan Frame, func()) {
	ch := make(chan Frame, 256)
	b.mu.Lock()
	id := b.nextID
	b.nextID++
	b.subs[id] = ch
	b.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, id)
			b.mu.Unlock()
		})
	}
}

// Boards returns the state of every board, by address.
func (b *Bus) Boards() []BoardState {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.cfg.Now()
	out := make([]BoardState, 0, len(b.boards))
	for _, bc := range b.cfg.Boards {
		bd := b.boards[bc.Address]
		out = append(out, BoardState{Address: bc.Address, Channels: bc.Channels, Fault: bd.fault,
			Off: now.Before(bd.offUntil), Commands: bd.commands, Replies: bd.replies})
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
