package rs485

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/openlocker/locker/hal/rs485/proto"
)

// handle8A80 acts on an 8A/80 command frame: an unlock fires the channel's
// lock (channel 0: every lock, one after the other) and is answered about
// 500 ms later with the channel's state; a query is answered with one
// status byte per group of eight channels, at least three.
func (b *Bus) handle8A80(w io.Writer, frame []byte) bool {
	cmd, err := proto.DecodeCommand8A80(frame)
	if errors.Is(err, proto.ErrChecksum) {
		b.record(ToBoard, frame, "", "bad checksum: the boards ignore it")
		return true
	}
	if err != nil {
		return false
	}
	text := text8A80(cmd)
	bd, listens, deaf := b.boardFor(cmd.Addr)
	resent := bd != nil && cmd.Head == proto.Head8A80Unlock && b.sentUnlock(bd, cmd.Channel)
	if resent {
		deaf = strings.TrimPrefix(deaf+"; "+resentText, "; ")
	}
	b.record(ToBoard, frame, text, deaf)
	if !listens {
		return true
	}
	delay := b.cfg.ReplyDelay + b.wireTime(len(frame))
	if cmd.Head == proto.Head8A80Query {
		bits := b.bits8A80(bd)
		reply, err := proto.EncodeStatus8A80(proto.Status8A80{Addr: cmd.Addr, Groups: proto.Groups8A80(bd.cfg.Channels), Bits: bits})
		if err == nil {
			b.reply(w, bd, delay, reply, status8A80Text(cmd.Addr, bd.cfg.Channels, bits, b.cfg.LockOpenBit), true)
		}
		return true
	}
	start := time.Now()
	switch {
	case cmd.Channel == 0:
		for ch := 1; ch <= bd.cfg.Channels; ch++ {
			if ch > 1 {
				time.Sleep(openAllGap)
			}
			b.cfg.Physics.Unlock(cmd.Addr, ch)
		}
	case cmd.Channel <= bd.cfg.Channels:
		b.cfg.Physics.Unlock(cmd.Addr, cmd.Channel)
	}
	b.cutPowerOnUnlock(bd)
	// The board answers once its pulse is over, with what the lock's
	// feedback then says.
	time.Sleep(max(b.cfg.UnlockDelay-time.Since(start), 0))
	open := false
	if cmd.Channel >= 1 && cmd.Channel <= bd.cfg.Channels {
		open, _, _ = b.cfg.Physics.Sense(cmd.Addr, cmd.Channel)
	} else if cmd.Channel == 0 {
		open = true
		for ch := 1; ch <= bd.cfg.Channels; ch++ {
			if o, _, ok := b.cfg.Physics.Sense(cmd.Addr, ch); ok && !o {
				open = false
			}
		}
	}
	reply, err := proto.EncodeUnlockReply8A80(proto.UnlockReply8A80{Addr: cmd.Addr, Channel: cmd.Channel, Open: open})
	if err == nil {
		b.reply(w, bd, delay, reply, unlockReply8A80Text(proto.UnlockReply8A80{Addr: cmd.Addr, Channel: cmd.Channel, Open: open}), false)
	}
	return true
}

// bits8A80 reads every channel of the board: a bit is LockOpenBit when the
// lock's feedback reads open.
func (b *Bus) bits8A80(bd *board) uint64 {
	var bits uint64
	for ch := 1; ch <= proto.Groups8A80(bd.cfg.Channels)*8; ch++ {
		open, ok := false, false
		if ch <= bd.cfg.Channels {
			open, _, ok = b.cfg.Physics.Sense(bd.cfg.Address, ch)
		}
		if !ok {
			open = false
		}
		if open == (b.cfg.LockOpenBit == 1) {
			bits |= 1 << (ch - 1)
		}
	}
	return bits
}

func status8A80Text(addr, channels int, bits uint64, openBit int) string {
	var open []int
	for ch := 1; ch <= channels; ch++ {
		if (bits&(1<<(ch-1)) != 0) == (openBit == 1) {
			open = append(open, ch)
		}
	}
	return fmt.Sprintf("board %d status: open %s", addr, list(open))
}

// text8A80 describes an 8A/80 command.
func text8A80(cmd proto.Command8A80) string {
	switch {
	case cmd.Head != proto.Head8A80Unlock:
		return fmt.Sprintf("board %d: query all", cmd.Addr)
	case cmd.Channel == 0:
		return fmt.Sprintf("board %d: unlock all", cmd.Addr)
	}
	return fmt.Sprintf("board %d channel %d: unlock", cmd.Addr, cmd.Channel)
}

// unlockReply8A80Text describes an 8A/80 unlock reply.
func unlockReply8A80Text(r proto.UnlockReply8A80) string {
	st := "closed"
	if r.Open {
		st = "open"
	}
	return fmt.Sprintf("board %d channel %d: %s", r.Addr, r.Channel, st)
}
