package proto

import (
	"bytes"
	"testing"
)

// FuzzKerongDecode: decoders never panic, anything they accept encodes
// back to the same bytes, and the splitter gives back every byte it is fed.
func FuzzKerongDecode(f *testing.F) {
	for _, v := range kerongCmdVectors {
		f.Add(v.bytes)
	}
	for _, v := range kerongStatusVectors {
		f.Add(v.bytes)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := DecodeKerongCommand(b); err == nil {
			e, err := EncodeKerongCommand(c)
			if err != nil || !bytes.Equal(e, b) {
				t.Fatalf("command % x decodes to %+v, encodes to % x %v", b, c, e, err)
			}
		}
		if s, err := DecodeKerongStatus(b, -1); err == nil {
			e, err := EncodeKerongStatus(s)
			// The low nibble of ADDR is not part of a status.
			if err != nil || !bytes.Equal(e[2:8], b[2:8]) || e[1] != b[1]&0xf0 {
				t.Fatalf("status % x decodes to %+v, encodes to % x %v", b, s, e, err)
			}
		}
		splitAll(t, Kerong, Replies, 0, b)
		splitAll(t, Kerong, Commands, 0, b)
	})
}

// Fuzz8A80Decode: the same for the 8A/80 board.
func Fuzz8A80Decode(f *testing.F) {
	for _, v := range cmd8A80Vectors {
		f.Add(v.bytes, uint8(0))
	}
	for _, v := range status8A80Vectors {
		f.Add(v.bytes, uint8(v.status.Groups))
	}
	for _, v := range unlockReply8A80Vectors {
		f.Add(v.bytes, uint8(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, groups uint8) {
		if c, err := DecodeCommand8A80(b); err == nil {
			if e, err := EncodeCommand8A80(c); err == nil && !bytes.Equal(e, b) {
				t.Fatalf("command % x decodes to %+v, encodes to % x", b, c, e)
			}
		}
		if s, err := DecodeStatus8A80(b, 0); err == nil {
			if e, err := EncodeStatus8A80(s); err == nil && !bytes.Equal(e, b) {
				t.Fatalf("status % x decodes to %+v, encodes to % x", b, s, e)
			}
		}
		if r, err := DecodeUnlockReply8A80(b, 0, -1); err == nil {
			if e, err := EncodeUnlockReply8A80(r); err == nil && !bytes.Equal(e, b) {
				t.Fatalf("unlock reply % x decodes to %+v, encodes to % x", b, r, e)
			}
		}
		splitAll(t, P8A80, Replies, int(groups%10), b)
		splitAll(t, P8A80, Commands, 0, b)
	})
}

// splitAll feeds b one byte at a time and checks that the pieces the
// splitter returns, in order, are exactly b, and that frames it accepts
// pass their decoder.
func splitAll(t *testing.T, p Protocol, dir Direction, groups int, b []byte) {
	s := NewSplitter(p, dir)
	s.SetGroups(groups)
	var out []byte
	for i := range b {
		s.Feed(b[i : i+1])
		for {
			f, err := s.Next()
			if f == nil && err == nil {
				break
			}
			if len(f) == 0 {
				t.Fatalf("empty piece with %v", err)
			}
			if err == nil {
				checkFrame(t, p, dir, f)
			}
			out = append(out, f...)
		}
	}
	f, _ := s.Silence()
	out = append(out, f...)
	if !bytes.Equal(out, b) {
		t.Fatalf("%v %v split % x into pieces that join to % x", p, dir, b, out)
	}
}

func checkFrame(t *testing.T, p Protocol, dir Direction, f []byte) {
	var err error
	switch {
	case p == Kerong && len(f) == KerongReplyLen:
		_, err = DecodeKerongStatus(f, -1)
	case p == Kerong:
		_, err = DecodeKerongCommand(f)
	case f[0] == Head8A80Unlock && dir == Replies:
		_, err = DecodeUnlockReply8A80(f, 0, -1)
	case dir == Commands:
		_, err = DecodeCommand8A80(f)
	default:
		_, err = DecodeStatus8A80(f, 0)
	}
	if err != nil {
		t.Fatalf("splitter accepted % x, decoder says %v", f, err)
	}
}
