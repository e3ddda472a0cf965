package proto

import "fmt"

// Kerong CU16-class frames. A command is five bytes
//
//	02 ADDR CMD 03 SUM
//
// with ADDR = board<<4 | (lock-1) and SUM the low byte of the sum of the
// four bytes before it. The whole-board status reply is nine bytes
//
//	02 ADDR 35 L1-8 L9-16 IR1-8 IR9-16 03 SUM
//
// bits least significant first (bit 0 of L1-8 is lock 1): lock/door
// feedback and infrared "parcel present". Whether a set lock bit means open
// or closed differs between boards; the caller decides (wiring
// lock_open_bit).
const (
	KerongSTX = 0x02
	KerongETX = 0x03

	// KerongStatusOne asks the status of one lock; boards answer it with
	// a status reply (KerongStatusReply) like the whole-board query.
	KerongStatusOne = 0x30
	// KerongUnlock pulses one lock. Some boards answer nothing; others
	// echo a status reply. Its effect is read from the next status.
	KerongUnlock = 0x31
	// KerongStatusBoard asks the status of every lock of a board.
	KerongStatusBoard = 0x32
	// KerongStatusReply is the command byte of the nine-byte status reply.
	KerongStatusReply = 0x35

	// KerongBoards and KerongLocks bound the addresses: boards 0–15, locks
	// 1–16.
	KerongBoards = 16
	KerongLocks  = 16

	// KerongCommandLen and KerongReplyLen are the frame lengths.
	KerongCommandLen = 5
	KerongReplyLen   = 9
)

// KerongCommand is a decoded command frame.
type KerongCommand struct {
	Cmd   byte // KerongStatusOne, KerongUnlock or KerongStatusBoard
	Board int  // 0–15
	Lock  int  // 1–16 (1 for a KerongStatusBoard)
}

// KerongStatus is a decoded status reply: bit i of Locks is lock i+1's
// feedback, bit i of IR its infrared sensor (1 = parcel present).
type KerongStatus struct {
	Board int // 0–15
	Locks uint16
	IR    uint16
}

// LockBit reports the raw feedback bit of lock (1–16).
func (s KerongStatus) LockBit(lock int) bool { return s.Locks&(1<<(lock-1)) != 0 }

// IRBit reports the infrared bit of lock (1–16): a parcel is present.
func (s KerongStatus) IRBit(lock int) bool { return s.IR&(1<<(lock-1)) != 0 }

func kerongAddr(board, lock int) (byte, error) {
	if board < 0 || board >= KerongBoards || lock < 1 || lock > KerongLocks {
		return 0, fmt.Errorf("%w: kerong board %d lock %d", ErrRange, board, lock)
	}
	return byte(board<<4 | (lock - 1)), nil
}

// EncodeKerongCommand returns the five-byte frame of c.
func EncodeKerongCommand(c KerongCommand) ([]byte, error) {
	switch c.Cmd {
	case KerongStatusOne, KerongUnlock, KerongStatusBoard:
	default:
		return nil, fmt.Errorf("%w: kerong command %#02x", ErrFrame, c.Cmd)
	}
	lock := c.Lock
	if c.Cmd == KerongStatusBoard && lock == 0 {
		lock = 1
	}
	a, err := kerongAddr(c.Board, lock)
	if err != nil {
		return nil, err
	}
	b := []byte{KerongSTX, a, c.Cmd, KerongETX, 0}
	b[4] = Sum(b[:4])
	return b, nil
}

// KerongUnlockFrame is the unlock frame of board (0–15) lock (1–16):
// 02 00 31 03 36 for board 0 lock 1.
func KerongUnlockFrame(board, lock int) ([]byte, error) {
	return EncodeKerongCommand(KerongCommand{Cmd: KerongUnlock, Board: board, Lock: lock})
}

// KerongStatusFrame is the whole-board status query: 02 00 32 03 37 for
// board 0.
func KerongStatusFrame(board int) ([]byte, error) {
	return EncodeKerongCommand(KerongCommand{Cmd: KerongStatusBoard, Board: board, Lock: 1})
}

// DecodeKerongCommand decodes a five-byte command frame (the board's side).
func DecodeKerongCommand(b []byte) (KerongCommand, error) {
	if len(b) < KerongCommandLen {
		return KerongCommand{}, fmt.Errorf("%w: %d bytes, kerong command needs %d", ErrShort, len(b), KerongCommandLen)
	}
	if len(b) > KerongCommandLen || b[0] != KerongSTX || b[3] != KerongETX {
		return KerongCommand{}, fmt.Errorf("%w: % x", ErrFrame, b)
	}
	switch b[2] {
	case KerongStatusOne, KerongUnlock, KerongStatusBoard:
	default:
		return KerongCommand{}, fmt.Errorf("%w: kerong command %#02x", ErrFrame, b[2])
	}
	if s := Sum(b[:4]); s != b[4] {
		return KerongCommand{}, fmt.Errorf("%w: kerong sum %#02x, frame says %#02x", ErrChecksum, s, b[4])
	}
	return KerongCommand{Cmd: b[2], Board: int(b[1] >> 4), Lock: int(b[1]&0x0f) + 1}, nil
}

// EncodeKerongStatus returns the nine-byte status reply of s (the board's
// side); ADDR is board<<4.
func EncodeKerongStatus(s KerongStatus) ([]byte, error) {
	a, err := kerongAddr(s.Board, 1)
	if err != nil {
		return nil, err
	}
	b := []byte{KerongSTX, a, KerongStatusReply,
		byte(s.Locks), byte(s.Locks >> 8), byte(s.IR), byte(s.IR >> 8), KerongETX, 0}
	b[8] = Sum(b[:8])
	return b, nil
}

// DecodeKerongStatus decodes a nine-byte status reply. With board ≥ 0 a
// reply from another board is ErrAddress (the status is still returned);
// board < 0 accepts any.
func DecodeKerongStatus(b []byte, board int) (KerongStatus, error) {
	if len(b) < KerongReplyLen {
		return KerongStatus{}, fmt.Errorf("%w: %d bytes, kerong status needs %d", ErrShort, len(b), KerongReplyLen)
	}
	if len(b) > KerongReplyLen || b[0] != KerongSTX || b[2] != KerongStatusReply || b[7] != KerongETX {
		return KerongStatus{}, fmt.Errorf("%w: % x", ErrFrame, b)
	}
	if s := Sum(b[:8]); s != b[8] {
		return KerongStatus{}, fmt.Errorf("%w: kerong sum %#02x, frame says %#02x", ErrChecksum, s, b[8])
	}
	st := KerongStatus{
		Board: int(b[1] >> 4),
		Locks: uint16(b[3]) | uint16(b[4])<<8,
		IR:    uint16(b[5]) | uint16(b[6])<<8,
	}
	if board >= 0 && st.Board != board {
		return st, fmt.Errorf("%w: asked kerong board %d, board %d answered", ErrAddress, board, st.Board)
	}
	return st, nil
}
