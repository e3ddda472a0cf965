package proto

import "fmt"

// 8A/80 frames (the generic DIP-addressed board, address 1–31, checksum the
// XOR of every earlier byte):
//
//	unlock        8A AA CH 11 BCC     channel CH (1–N; 0 opens all)
//	unlock reply  8A AA CH ST BCC     ST 11 open, 00 closed (~500 ms later)
//	query all     80 AA 00 33 BCC
//	query reply   80 AA Sg … S1 33 BCC
//
// The query reply carries one status byte per group of eight channels,
// highest group first (S1, just before the 33, holds channels 1–8, bit 0 =
// channel 1). Boards send at least three groups (an 8-channel board answers
// 80 01 00 00 00 33 B2), more for boards of more than 24 channels, so a
// reply's length depends on the board and it ends by silence (~25 ms):
// Groups8A80 gives the count a board of n channels sends. Whether a set bit
// means open is the caller's setting; boards seen in the field set it for
// an open lock.
const (
	Head8A80Unlock = 0x8A
	Head8A80Query  = 0x80
	Fn8A80Unlock   = 0x11
	Fn8A80Query    = 0x33

	// St8A80Open and St8A80Closed are the ST byte of an unlock reply.
	St8A80Open   = 0x11
	St8A80Closed = 0x00

	// Addr8A80Min and Addr8A80Max bound the DIP address.
	Addr8A80Min = 1
	Addr8A80Max = 31
	// Channels8A80Max is the most channels a status reply can describe here.
	Channels8A80Max = 64

	// Command8A80Len is the length of every command and of an unlock reply.
	Command8A80Len = 5
	// MinGroups8A80 is the fewest status bytes a query reply carries.
	MinGroups8A80 = 3
)

// Groups8A80 is the number of status bytes in the query reply of a board of
// n channels: ⌈n/8⌉, at least MinGroups8A80.
func Groups8A80(channels int) int {
	g := (channels + 7) / 8
	if g < MinGroups8A80 {
		g = MinGroups8A80
	}
	return g
}

// Reply8A80Len is the length of the query reply of a board of n channels.
func Reply8A80Len(channels int) int { return 4 + Groups8A80(channels) }

// Command8A80 is a decoded command frame.
type Command8A80 struct {
	Head    byte // Head8A80Unlock or Head8A80Query
	Addr    int  // 1–31
	Channel int  // unlock: 1–N, 0 = all; query all: 0
}

// UnlockReply8A80 is a decoded unlock reply.
type UnlockReply8A80 struct {
	Addr    int
	Channel int
	Open    bool // ST 11
}

// Status8A80 is a decoded query reply: bit i of Bits is channel i+1.
type Status8A80 struct {
	Addr   int
	Groups int // status bytes in the frame
	Bits   uint64
}

// Bit reports channel ch's raw status bit (1-based).
func (s Status8A80) Bit(ch int) bool {
	if ch < 1 || ch > 64 {
		return false
	}
	return s.Bits&(1<<(ch-1)) != 0
}

func check8A80Addr(addr int) error {
	if addr < Addr8A80Min || addr > Addr8A80Max {
		return fmt.Errorf("%w: 8a80 address %d (1–31)", ErrRange, addr)
	}
	return nil
}

// EncodeCommand8A80 returns the five-byte frame of c.
func EncodeCommand8A80(c Command8A80) ([]byte, error) {
	if err := check8A80Addr(c.Addr); err != nil {
		return nil, err
	}
	if c.Channel < 0 || c.Channel > Channels8A80Max {
		return nil, fmt.Errorf("%w: 8a80 channel %d", ErrRange, c.Channel)
	}
	var fn byte
	switch c.Head {
	case Head8A80Unlock:
		fn = Fn8A80Unlock
	case Head8A80Query:
		fn = Fn8A80Query
	default:
		return nil, fmt.Errorf("%w: 8a80 head %#02x", ErrFrame, c.Head)
	}
	b := []byte{c.Head, byte(c.Addr), byte(c.Channel), fn, 0}
	b[4] = XOR(b[:4])
	return b, nil
}

// Unlock8A80Frame is the unlock frame of channel ch (0 = all) of the board
// at addr: 8A 01 01 11 9B.
func Unlock8A80Frame(addr, ch int) ([]byte, error) {
	return EncodeCommand8A80(Command8A80{Head: Head8A80Unlock, Addr: addr, Channel: ch})
}

// Query8A80Frame is the query-all frame of the board at addr: 80 01 00 33 B2.
func Query8A80Frame(addr int) ([]byte, error) {
	return EncodeCommand8A80(Command8A80{Head: Head8A80Query, Addr: addr})
}

// DecodeCommand8A80 decodes a five-byte command frame (the board's side).
func DecodeCommand8A80(b []byte) (Command8A80, error) {
	if len(b) < Command8A80Len {
		return Command8A80{}, fmt.Errorf("%w: %d bytes, 8a80 command needs %d", ErrShort, len(b), Command8A80Len)
	}
	if len(b) > Command8A80Len {
		return Command8A80{}, fmt.Errorf("%w: % x", ErrFrame, b)
	}
	switch {
	case b[0] == Head8A80Unlock && b[3] == Fn8A80Unlock:
	case b[0] == Head8A80Query && b[3] == Fn8A80Query:
	default:
		return Command8A80{}, fmt.Errorf("%w: % x", ErrFrame, b)
	}
	if x := XOR(b[:4]); x != b[4] {
		return Command8A80{}, fmt.Errorf("%w: 8a80 xor %#02x, frame says %#02x", ErrChecksum, x, b[4])
	}
	return Command8A80{Head: b[0], Addr: int(b[1]), Channel: int(b[2])}, nil
}

// EncodeUnlockReply8A80 returns the five-byte unlock reply of r.
func EncodeUnlockReply8A80(r UnlockReply8A80) ([]byte, error) {
	if err := check8A80Addr(r.Addr); err != nil {
		return nil, err
	}
	st := byte(St8A80Closed)
	if r.Open {
		st = St8A80Open
	}
	b := []byte{Head8A80Unlock, byte(r.Addr), byte(r.Channel), st, 0}
	b[4] = XOR(b[:4])
	return b, nil
}

// DecodeUnlockReply8A80 decodes an unlock reply. With addr > 0 a reply from
// another board, or (with ch ≥ 0) of another channel, is ErrAddress.
func DecodeUnlockReply8A80(b []byte, addr, ch int) (UnlockReply8A80, error) {
	if len(b) < Command8A80Len {
		return UnlockReply8A80{}, fmt.Errorf("%w: %d bytes, 8a80 unlock reply needs %d", ErrShort, len(b), Command8A80Len)
	}
	if len(b) > Command8A80Len || b[0] != Head8A80Unlock || (b[3] != St8A80Open && b[3] != St8A80Closed) {
		return UnlockReply8A80{}, fmt.Errorf("%w: % x", ErrFrame, b)
	}
	if x := XOR(b[:4]); x != b[4] {
		return UnlockReply8A80{}, fmt.Errorf("%w: 8a80 xor %#02x, frame says %#02x", ErrChecksum, x, b[4])
	}
	r := UnlockReply8A80{Addr: int(b[1]), Channel: int(b[2]), Open: b[3] == St8A80Open}
	if addr > 0 && r.Addr != addr || ch >= 0 && r.Channel != ch {
		return r, fmt.Errorf("%w: asked 8a80 board %d channel %d, board %d channel %d answered", ErrAddress, addr, ch, r.Addr, r.Channel)
	}
	return r, nil
}

// EncodeStatus8A80 returns the query reply of s with s.Groups status bytes
// (Groups8A80 of the board's channel count; 0 means MinGroups8A80).
func EncodeStatus8A80(s Status8A80) ([]byte, error) {
	if err := check8A80Addr(s.Addr); err != nil {
		return nil, err
	}
	g := s.Groups
	if g == 0 {
		g = MinGroups8A80
	}
	if g < 1 || g > Channels8A80Max/8 {
		return nil, fmt.Errorf("%w: 8a80 %d status bytes", ErrRange, g)
	}
	b := make([]byte, 0, 4+g)
	b = append(b, Head8A80Query, byte(s.Addr))
	for i := g - 1; i >= 0; i-- {
		b = append(b, byte(s.Bits>>(8*i)))
	}
	b = append(b, Fn8A80Query, 0)
	b[len(b)-1] = XOR(b[:len(b)-1])
	return b, nil
}

// DecodeStatus8A80 decodes a query reply of any number of status bytes.
// With addr > 0 a reply from another board is ErrAddress (the status is
// still returned).
func DecodeStatus8A80(b []byte, addr int) (Status8A80, error) {
	if len(b) < 5 {
		return Status8A80{}, fmt.Errorf("%w: %d bytes, 8a80 status needs at least 5", ErrShort, len(b))
	}
	g := len(b) - 4
	if b[0] != Head8A80Query || b[len(b)-2] != Fn8A80Query || g > Channels8A80Max/8 {
		return Status8A80{}, fmt.Errorf("%w: % x", ErrFrame, b)
	}
	if x := XOR(b[:len(b)-1]); x != b[len(b)-1] {
		return Status8A80{}, fmt.Errorf("%w: 8a80 xor %#02x, frame says %#02x", ErrChecksum, x, b[len(b)-1])
	}
	s := Status8A80{Addr: int(b[1]), Groups: g}
	for _, c := range b[2 : 2+g] {
		s.Bits = s.Bits<<8 | uint64(c)
	}
	if addr > 0 && s.Addr != addr {
		return s, fmt.Errorf("%w: asked 8a80 board %d, board %d answered", ErrAddress, addr, s.Addr)
	}
	return s, nil
}
