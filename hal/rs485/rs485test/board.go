// Package rs485test emulates lock boards on the master side of a
// pseudo-terminal (or any stream) for tests: it answers status queries and
// unlocks at the bus's baud rate, and can be told to misbehave.
package rs485test

import (
	"cmp"
	"io"
	"sync"
	"time"

	"github.com/openlocker/locker/hal/rs485/proto"
)

// Frame is a command the boards received, with the time its last byte came.
type Frame struct {
	At    time.Time
	Bytes []byte
}

// Boards answers for every board on one bus. Set fields before Serve;
// change the state and faults through the methods.
type Boards struct {
	Protocol proto.Protocol
	Baud     int // pace replies at this speed (10 bits a byte)
	Channels map[int]int
	// UnlockDelay is how long an 8A/80 board takes to answer an unlock
	// (real boards: ~500ms).
	UnlockDelay time.Duration
	// BurstGap splits every reply in two bursts this far apart (USB
	// adapters); 0 sends it whole.
	BurstGap time.Duration
	// LateBy is how late Late's replies come (0: 60 ms).
	LateBy time.Duration

	mu       sync.Mutex
	open     map[int]uint64
	ir       map[int]uint64
	silent   map[int]bool
	corrupt  int // replies to corrupt (bad checksum)
	wrong    int // replies to send from another address
	dropUnl  int // unlock replies to drop
	late     int // replies to send LateBy late
	received []Frame
}

func (b *Boards) init() {
	if b.open == nil {
		b.open, b.ir, b.silent = map[int]uint64{}, map[int]uint64{}, map[int]bool{}
	}
}

// SetOpen sets channel ch of board addr open or closed (raw: bit set = open).
func (b *Boards) SetOpen(addr, ch int, open bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	if open {
		b.open[addr] |= 1 << (ch - 1)
	} else {
		b.open[addr] &^= 1 << (ch - 1)
	}
}

// SetIR sets the infrared bit of channel ch of board addr.
func (b *Boards) SetIR(addr, ch int, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	if on {
		b.ir[addr] |= 1 << (ch - 1)
	} else {
		b.ir[addr] &^= 1 << (ch - 1)
	}
}

// PowerCycle clears a board's state: every lock closed, no IR.
func (b *Boards) PowerCycle(addr int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.open[addr], b.ir[addr] = 0, 0
}

// Silence makes a board answer nothing (gone) or answer again.
func (b *Boards) Silence(addr int, silent bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	b.silent[addr] = silent
}

// Corrupt spoils the checksum of the next n replies.
func (b *Boards) Corrupt(n int) { b.mu.Lock(); b.corrupt = n; b.mu.Unlock() }

// WrongAddress sends the next n replies with another board's address.
func (b *Boards) WrongAddress(n int) { b.mu.Lock(); b.wrong = n; b.mu.Unlock() }

// DropUnlockReplies swallows the next n 8A/80 unlock replies (the unlock
// itself still works).
func (b *Boards) DropUnlockReplies(n int) { b.mu.Lock(); b.dropUnl = n; b.mu.Unlock() }

// Received returns the commands received so far.
func (b *Boards) Received() []Frame {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Frame(nil), b.received...)
}

// Unlocks counts the unlock commands received for addr/ch.
func (b *Boards) Unlocks(addr, ch int) int {
	n := 0
	for _, f := range b.Received() {
		if b.Protocol == proto.Kerong {
			if c, err := proto.DecodeKerongCommand(f.Bytes); err == nil && c.Cmd == proto.KerongUnlock && c.Board == addr && c.Lock == ch {
				n++
			}
		} else if c, err := proto.DecodeCommand8A80(f.Bytes); err == nil && c.Head == proto.Head8A80Unlock && c.Addr == addr && c.Channel == ch {
			n++
		}
	}
	return n
}

// Serve answers the commands read from rw until a read fails.
func (b *Boards) Serve(rw io.ReadWriter) {
	b.mu.Lock()
	b.init()
	b.mu.Unlock()
	s := proto.NewSplitter(b.Protocol, proto.Commands)
	buf := make([]byte, 256)
	for {
		n, err := rw.Read(buf)
		if err != nil {
			return
		}
		s.Feed(buf[:n])
		for {
			f, err := s.Next()
			if f == nil && err == nil {
				break
			}
			if err != nil {
				continue
			}
			b.mu.Lock()
			b.received = append(b.received, Frame{At: time.Now(), Bytes: f})
			b.mu.Unlock()
			if reply := b.answer(f); reply != nil {
				b.send(rw, reply)
			}
		}
	}
}

func (b *Boards) answer(f []byte) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	var addr int
	var reply []byte
	if b.Protocol == proto.Kerong {
		c, err := proto.DecodeKerongCommand(f)
		if err != nil || b.Channels[c.Board] == 0 || b.silent[c.Board] {
			return nil
		}
		addr = c.Board
		if c.Cmd == proto.KerongUnlock {
			b.open[addr] |= 1 << (c.Lock - 1)
			return nil // this kind of board does not answer an unlock
		}
		if b.wrong > 0 {
			b.wrong--
			addr = (addr + 1) % 16
		}
		reply, _ = proto.EncodeKerongStatus(proto.KerongStatus{Board: addr, Locks: uint16(b.open[c.Board]), IR: uint16(b.ir[c.Board])})
	} else {
		c, err := proto.DecodeCommand8A80(f)
		if err != nil || b.Channels[c.Addr] == 0 || b.silent[c.Addr] {
			return nil
		}
		addr = c.Addr
		if c.Head == proto.Head8A80Unlock {
			b.open[addr] |= 1 << (c.Channel - 1)
			if b.dropUnl > 0 {
				b.dropUnl--
				return nil
			}
			b.mu.Unlock()
			time.Sleep(b.UnlockDelay)
			b.mu.Lock()
			reply, _ = proto.EncodeUnlockReply8A80(proto.UnlockReply8A80{Addr: addr, Channel: c.Channel, Open: true})
		} else {
			if b.wrong > 0 {
				b.wrong--
				addr = addr%31 + 1
			}
			reply, _ = proto.EncodeStatus8A80(proto.Status8A80{Addr: addr, Groups: proto.Groups8A80(b.Channels[c.Addr]), Bits: b.open[c.Addr]})
		}
	}
	if b.corrupt > 0 {
		b.corrupt--
		reply[len(reply)-1]++
	}
	return reply
}

// Late makes the next n replies come LateBy (60 ms) late: past the bus's
// default reply time-out, as from a board that stalls.
func (b *Boards) Late(n int) { b.mu.Lock(); b.late = n; b.mu.Unlock() }

// send writes reply at the baud rate, in two bursts with BurstGap.
func (b *Boards) send(w io.Writer, reply []byte) {
	parts := [][]byte{reply}
	gap := b.BurstGap
	b.mu.Lock()
	if b.late > 0 {
		b.late--
		time.Sleep(cmp.Or(b.LateBy, 60*time.Millisecond))
	}
	b.mu.Unlock()
	if gap > 0 && len(reply) > 2 {
		parts = [][]byte{reply[:len(reply)/2], reply[len(reply)/2:]}
	}
	for i, p := range parts {
		if i > 0 {
			time.Sleep(gap)
		}
		time.Sleep(time.Duration(proto.FrameTime(len(p), b.Baud)))
		_, _ = w.Write(p)
	}
}
