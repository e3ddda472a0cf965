package rs485

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/openlocker/locker/hal/rs485/proto"
)

// handleKerong acts on a Kerong command frame: 0x31 fires a lock (and,
// unless the board keeps silent on unlocks, answers with its status), 0x30
// and 0x32 answer with the nine-byte status of the whole board.
func (b *Bus) handleKerong(w io.Writer, frame []byte) bool {
	cmd, err := proto.DecodeKerongCommand(frame)
	if errors.Is(err, proto.ErrChecksum) {
		b.record(ToBoard, frame, "", "bad checksum: the boards ignore it")
		return true
	}
	if err != nil {
		return false
	}
	text := kerongText(cmd)
	bd, listens, deaf := b.boardFor(cmd.Board)
	resent := bd != nil && cmd.Cmd == proto.KerongUnlock && b.sentUnlock(bd, cmd.Lock)
	if resent {
		deaf = strings.TrimPrefix(deaf+"; "+resentText, "; ")
	}
	b.record(ToBoard, frame, text, deaf)
	if !listens {
		return true
	}
	if cmd.Cmd == proto.KerongUnlock {
		if cmd.Lock <= bd.cfg.Channels {
			b.cfg.Physics.Unlock(cmd.Board, cmd.Lock)
		}
		b.cutPowerOnUnlock(bd)
		if bd.cfg.NoUnlockReply {
			return true
		}
	}
	st := b.kerongStatus(bd)
	reply, err := proto.EncodeKerongStatus(st)
	if err != nil {
		return true
	}
	b.reply(w, bd, b.cfg.ReplyDelay+b.wireTime(len(frame)), reply, kerongStatusText(st, b.cfg.LockOpenBit),
		cmd.Cmd != proto.KerongUnlock)
	return true
}

// kerongStatus reads every channel of the board: a lock bit is
// LockOpenBit when the lock's feedback reads open, an infrared bit 1 when
// a parcel is there. Channels without a compartment read closed and empty.
func (b *Bus) kerongStatus(bd *board) proto.KerongStatus {
	st := proto.KerongStatus{Board: bd.cfg.Address}
	for ch := 1; ch <= 16; ch++ {
		open, parcel, ok := false, false, false
		if ch <= bd.cfg.Channels {
			open, parcel, ok = b.cfg.Physics.Sense(bd.cfg.Address, ch)
		}
		if !ok {
			open, parcel = false, false
		}
		if open == (b.cfg.LockOpenBit == 1) {
			st.Locks |= 1 << (ch - 1)
		}
		if parcel {
			st.IR |= 1 << (ch - 1)
		}
	}
	return st
}

func kerongText(c proto.KerongCommand) string {
	switch c.Cmd {
	case proto.KerongUnlock:
		return fmt.Sprintf("board %d lock %d: unlock", c.Board, c.Lock)
	case proto.KerongStatusOne:
		return fmt.Sprintf("board %d lock %d: status", c.Board, c.Lock)
	}
	return fmt.Sprintf("board %d: status of all locks", c.Board)
}

// kerongStatusText lists the open locks and the parcels of a status.
func kerongStatusText(st proto.KerongStatus, openBit int) string {
	var open, ir []int
	for ch := 1; ch <= 16; ch++ {
		if st.LockBit(ch) == (openBit == 1) {
			open = append(open, ch)
		}
		if st.IRBit(ch) {
			ir = append(ir, ch)
		}
	}
	return fmt.Sprintf("board %d status: open %s, parcels %s", st.Board, list(open), list(ir))
}

// list renders channel numbers: "1 5 12", or "none".
func list(chs []int) string {
	if len(chs) == 0 {
		return "none"
	}
	s := ""
	for i, c := range chs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprint(c)
	}
	return s
}
