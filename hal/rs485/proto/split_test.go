package proto

import (
	"bytes"
	"errors"
	"testing"
)

type piece struct {
	frame []byte
	err   error
}

// drain feeds the stream in the given burst sizes and collects everything
// Next returns, then Silence.
func drain(s *Splitter, stream []byte, bursts []int) []piece {
	var out []piece
	collect := func() {
		for {
			f, err := s.Next()
			if f == nil && err == nil {
				return
			}
			out = append(out, piece{f, err})
		}
	}
	for i := 0; len(stream) > 0; i++ {
		n := bursts[i%len(bursts)]
		if n > len(stream) {
			n = len(stream)
		}
		s.Feed(stream[:n])
		stream = stream[n:]
		collect()
	}
	if f, err := s.Silence(); f != nil || err != nil {
		out = append(out, piece{f, err})
	}
	return out
}

func TestSplitterBursts(t *testing.T) {
	k0 := kerongStatusVectors[0].bytes
	k1 := kerongStatusVectors[1].bytes
	unlock := kerongCmdVectors[0].bytes
	a := status8A80Vectors[0].bytes
	b := status8A80Vectors[2].bytes
	ur := unlockReply8A80Vectors[0].bytes
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	for _, tc := range []struct {
		name   string
		p      Protocol
		dir    Direction
		groups int
		stream []byte
		want   [][]byte
	}{
		{"kerong replies", Kerong, Replies, 0, cat(k0, k1, unlock, k1), [][]byte{k0, k1, unlock, k1}},
		{"kerong commands", Kerong, Commands, 0, cat(unlock, kerongCmdVectors[2].bytes), [][]byte{unlock, kerongCmdVectors[2].bytes}},
		{"8a80 replies by trailer", P8A80, Replies, 0, cat(ur, a, b, ur), [][]byte{ur, a, b, ur}},
		{"8a80 replies of a known size", P8A80, Replies, 3, cat(a, ur, a), [][]byte{a, ur, a}},
		{"8a80 commands", P8A80, Commands, 0, cat(cmd8A80Vectors[2].bytes, cmd8A80Vectors[0].bytes), [][]byte{cmd8A80Vectors[2].bytes, cmd8A80Vectors[0].bytes}},
	} {
		for _, bursts := range [][]int{{1}, {2, 3}, {4}, {7, 1}, {1000}} {
			s := NewSplitter(tc.p, tc.dir)
			s.SetGroups(tc.groups)
			got := drain(s, tc.stream, bursts)
			if len(got) != len(tc.want) {
				t.Errorf("%s bursts %v: %d pieces %v, want %d", tc.name, bursts, len(got), got, len(tc.want))
				continue
			}
			for i := range got {
				if got[i].err != nil || !bytes.Equal(got[i].frame, tc.want[i]) {
					t.Errorf("%s bursts %v: piece %d = % x %v, want % x", tc.name, bursts, i, got[i].frame, got[i].err, tc.want[i])
				}
			}
		}
	}
}

func TestSplitterJunkAndChecksum(t *testing.T) {
	k := kerongStatusVectors[1].bytes
	bad := append([]byte(nil), k...)
	bad[8]++
	s := NewSplitter(Kerong, Replies)
	got := drain(s, bytes.Join([][]byte{{0xff, 0x00}, bad, k, k[:4]}, nil), []int{3})
	want := []error{ErrFrame, ErrChecksum, nil, ErrShort}
	if len(got) != len(want) {
		t.Fatalf("pieces %v, want errors %v", got, want)
	}
	for i, w := range want {
		if w == nil && got[i].err != nil || w != nil && !errors.Is(got[i].err, w) {
			t.Errorf("piece %d: % x %v, want %v", i, got[i].frame, got[i].err, w)
		}
	}
	if !bytes.Equal(got[2].frame, k) {
		t.Errorf("good frame after junk = % x", got[2].frame)
	}

	// An 8A/80 query reply whose trailer is corrupt ends by silence.
	r := append([]byte(nil), status8A80Vectors[0].bytes...)
	r[6] ^= 1
	s = NewSplitter(P8A80, Replies)
	got = drain(s, r, []int{2})
	if len(got) != 1 || !errors.Is(got[0].err, ErrChecksum) {
		t.Errorf("corrupt 8a80 reply: %v", got)
	}
	// With a known size it is a checksum error at once.
	s = NewSplitter(P8A80, Replies)
	s.SetGroups(3)
	s.Feed(r)
	if f, err := s.Next(); !errors.Is(err, ErrChecksum) || len(f) != 7 {
		t.Errorf("corrupt 8a80 reply of known size: % x %v", f, err)
	}
}

// A 32-channel reply 80 01 00 80 01 33 33 00 holds, at seven bytes, a
// trailer 33 and a byte that checks out as its XOR. Without a length the
// splitter ends it there; ToSilence reads it whole, to the quiet line.
func TestSplitterToSilence(t *testing.T) {
	reply, err := EncodeStatus8A80(Status8A80{Addr: 1, Groups: 4, Bits: 0x00_80_01_33})
	if err != nil {
		t.Fatal(err)
	}
	s := NewSplitter(P8A80, Replies)
	s.Feed(reply)
	if f, err := s.Next(); err != nil || len(f) != 7 {
		t.Fatalf("by trailer: % x %v, want the 7-byte cut this test is about", f, err)
	}
	s = NewSplitter(P8A80, Replies)
	s.ToSilence()
	s.Feed(reply)
	if f, err := s.Next(); f != nil || err != nil {
		t.Fatalf("to silence, before the silence: % x %v, want nothing yet", f, err)
	}
	f, err := s.Silence()
	if st, derr := DecodeStatus8A80(f, 1); err != nil || derr != nil || st.Groups != 4 || st.Bits != 0x00_80_01_33 {
		t.Errorf("to silence: % x %v → %+v %v, want the whole 4-group reply", f, err, st, derr)
	}
}
