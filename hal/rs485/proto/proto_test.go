package proto

import (
	"bytes"
	"errors"
	"testing"
)

func TestKerongCommandVectors(t *testing.T) {
	for _, v := range kerongCmdVectors {
		got, err := EncodeKerongCommand(v.cmd)
		if err != nil || !bytes.Equal(got, v.bytes) {
			t.Errorf("%s: encode = % x, %v; want % x", v.name, got, err, v.bytes)
		}
		c, err := DecodeKerongCommand(v.bytes)
		if err != nil || c != v.cmd {
			t.Errorf("%s: decode = %+v, %v; want %+v", v.name, c, err, v.cmd)
		}
	}
	if b, _ := KerongUnlockFrame(0, 1); !bytes.Equal(b, []byte{0x02, 0x00, 0x31, 0x03, 0x36}) {
		t.Errorf("KerongUnlockFrame(0,1) = % x", b)
	}
	if b, _ := KerongUnlockFrame(1, 1); !bytes.Equal(b, []byte{0x02, 0x10, 0x31, 0x03, 0x46}) {
		t.Errorf("KerongUnlockFrame(1,1) = % x", b)
	}
	if b, _ := KerongStatusFrame(0); !bytes.Equal(b, []byte{0x02, 0x00, 0x32, 0x03, 0x37}) {
		t.Errorf("KerongStatusFrame(0) = % x", b)
	}
}

func TestKerongStatusVectors(t *testing.T) {
	for _, v := range kerongStatusVectors {
		got, err := EncodeKerongStatus(v.status)
		if err != nil || !bytes.Equal(got, v.bytes) {
			t.Errorf("%s: encode = % x, %v; want % x", v.name, got, err, v.bytes)
		}
		s, err := DecodeKerongStatus(v.bytes, v.status.Board)
		if err != nil || s != v.status {
			t.Errorf("%s: decode = %+v, %v; want %+v", v.name, s, err, v.status)
		}
	}
	s, _ := DecodeKerongStatus(kerongStatusVectors[1].bytes, -1)
	if !s.LockBit(1) || !s.LockBit(16) || s.LockBit(2) || !s.IRBit(2) || s.IRBit(1) {
		t.Errorf("bits of %+v wrong", s)
	}
}

func TestKerongErrors(t *testing.T) {
	bad := []byte{0x02, 0x00, 0x31, 0x03, 0x37}
	if _, err := DecodeKerongCommand(bad); !errors.Is(err, ErrChecksum) {
		t.Errorf("bad sum: %v", err)
	}
	if _, err := DecodeKerongCommand(bad[:4]); !errors.Is(err, ErrShort) {
		t.Errorf("short: %v", err)
	}
	if _, err := DecodeKerongCommand([]byte{0x02, 0x00, 0x39, 0x03, 0x3e}); !errors.Is(err, ErrFrame) {
		t.Errorf("unknown command: %v", err)
	}
	st := kerongStatusVectors[1].bytes // board 1
	if s, err := DecodeKerongStatus(st, 0); !errors.Is(err, ErrAddress) || s.Board != 1 {
		t.Errorf("wrong board: %+v %v", s, err)
	}
	corrupt := append([]byte(nil), st...)
	corrupt[3] ^= 0x04
	if _, err := DecodeKerongStatus(corrupt, 1); !errors.Is(err, ErrChecksum) {
		t.Errorf("corrupt status: %v", err)
	}
	if _, err := DecodeKerongStatus(st[:8], 1); !errors.Is(err, ErrShort) {
		t.Errorf("short status: %v", err)
	}
	for _, c := range []KerongCommand{{Cmd: KerongUnlock, Board: 16, Lock: 1}, {Cmd: KerongUnlock, Lock: 0}, {Cmd: KerongUnlock, Lock: 17}, {Cmd: 0x33}} {
		if _, err := EncodeKerongCommand(c); err == nil {
			t.Errorf("encode %+v: no error", c)
		}
	}
}

func Test8A80Vectors(t *testing.T) {
	for _, v := range cmd8A80Vectors {
		got, err := EncodeCommand8A80(v.cmd)
		if err != nil || !bytes.Equal(got, v.bytes) {
			t.Errorf("%s: encode = % x, %v; want % x", v.name, got, err, v.bytes)
		}
		c, err := DecodeCommand8A80(v.bytes)
		if err != nil || c != v.cmd {
			t.Errorf("%s: decode = %+v, %v; want %+v", v.name, c, err, v.cmd)
		}
	}
	for _, v := range status8A80Vectors {
		got, err := EncodeStatus8A80(v.status)
		if err != nil || !bytes.Equal(got, v.bytes) {
			t.Errorf("%s: encode = % x, %v; want % x", v.name, got, err, v.bytes)
		}
		s, err := DecodeStatus8A80(v.bytes, v.status.Addr)
		if err != nil || s != v.status {
			t.Errorf("%s: decode = %+v, %v; want %+v", v.name, s, err, v.status)
		}
	}
	for _, v := range unlockReply8A80Vectors {
		got, err := EncodeUnlockReply8A80(v.reply)
		if err != nil || !bytes.Equal(got, v.bytes) {
			t.Errorf("%s: encode = % x, %v; want % x", v.name, got, err, v.bytes)
		}
		r, err := DecodeUnlockReply8A80(v.bytes, v.reply.Addr, v.reply.Channel)
		if err != nil || r != v.reply {
			t.Errorf("%s: decode = %+v, %v; want %+v", v.name, r, err, v.reply)
		}
	}
	if b, _ := Unlock8A80Frame(1, 0); !bytes.Equal(b, []byte{0x8a, 0x01, 0x00, 0x11, 0x9a}) {
		t.Errorf("Unlock8A80Frame(1,0) = % x", b)
	}
	if b, _ := Query8A80Frame(1); !bytes.Equal(b, []byte{0x80, 0x01, 0x00, 0x33, 0xb2}) {
		t.Errorf("Query8A80Frame(1) = % x", b)
	}
	s, _ := DecodeStatus8A80(status8A80Vectors[1].bytes, 2)
	if !s.Bit(1) || !s.Bit(24) || s.Bit(2) || s.Bit(23) {
		t.Errorf("bits of %+v wrong", s)
	}
	for ch, g := range map[int]int{8: 3, 16: 3, 24: 3, 32: 4, 40: 5} {
		if Groups8A80(ch) != g {
			t.Errorf("Groups8A80(%d) = %d, want %d", ch, Groups8A80(ch), g)
		}
	}
}

func Test8A80Errors(t *testing.T) {
	if _, err := DecodeCommand8A80([]byte{0x8a, 0x01, 0x01, 0x11, 0x9c}); !errors.Is(err, ErrChecksum) {
		t.Errorf("bad xor: %v", err)
	}
	if _, err := DecodeStatus8A80([]byte{0x80, 0x01, 0x00, 0x00, 0x00, 0x33, 0xb2}, 2); !errors.Is(err, ErrAddress) {
		t.Errorf("wrong address: %v", err)
	}
	if _, err := DecodeStatus8A80([]byte{0x80, 0x01, 0x00, 0x00, 0x01, 0x33, 0xb2}, 1); !errors.Is(err, ErrChecksum) {
		t.Errorf("bad status xor: %v", err)
	}
	if _, err := DecodeUnlockReply8A80([]byte{0x8a, 0x01, 0x02, 0x11, 0x98}, 1, 1); !errors.Is(err, ErrAddress) {
		t.Errorf("reply of another channel: %v", err)
	}
	if _, err := DecodeUnlockReply8A80([]byte{0x8a, 0x01}, 1, 1); !errors.Is(err, ErrShort) {
		t.Errorf("short: %v", err)
	}
	for _, c := range []Command8A80{{Head: Head8A80Unlock, Addr: 0, Channel: 1}, {Head: Head8A80Unlock, Addr: 32}, {Head: 0x81, Addr: 1}} {
		if _, err := EncodeCommand8A80(c); err == nil {
			t.Errorf("encode %+v: no error", c)
		}
	}
}

func TestFrameTime(t *testing.T) {
	// Five bytes at 19200 baud 8N1: 50 bits, 2.604 ms; at 9600, 5.208 ms.
	if got := FrameTime(5, 19200); got != 2604166 {
		t.Errorf("FrameTime(5,19200) = %d", got)
	}
	if got := FrameTime(5, 9600); got != 5208333 {
		t.Errorf("FrameTime(5,9600) = %d", got)
	}
}
