// Package proto encodes and decodes the frames of the RS485 lock-control
// boards the locker drives: the Kerong CU16 class ("0x3x" commands) and the
// generic DIP-addressed "8A/80" board. It is a leaf package: both sides of
// the bus use it, the controller side (encode commands, decode replies) and
// a simulated board (decode commands, encode replies).
//
// Nothing here does I/O; Splitter cuts a byte stream into frames.
package proto

import (
	"errors"
	"fmt"
)

// Protocol names a board family.
type Protocol int

const (
	// Kerong: the Kerong CU16 class, 19200 baud, "02 ADDR CMD 03 SUM".
	Kerong Protocol = iota + 1
	// P8A80: the generic DIP-addressed board, 9600 baud, XOR checksum.
	P8A80
)

// String returns the wiring name of the protocol: "kerong" or "8a80".
func (p Protocol) String() string {
	switch p {
	case Kerong:
		return "kerong"
	case P8A80:
		return "8a80"
	}
	return fmt.Sprintf("protocol(%d)", int(p))
}

// ParseProtocol reads a wiring name ("kerong", "8a80").
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "kerong":
		return Kerong, nil
	case "8a80":
		return P8A80, nil
	}
	return 0, fmt.Errorf("%w: %q (want kerong or 8a80)", ErrProtocol, s)
}

// DefaultBaud is the speed the boards ship with: 19200 for Kerong, 9600 for
// 8A/80.
func (p Protocol) DefaultBaud() int {
	if p == P8A80 {
		return 9600
	}
	return 19200
}

// Sentinel errors. Decoders wrap them with %w; check with errors.Is.
var (
	// ErrChecksum: the frame's checksum byte does not match its bytes.
	ErrChecksum = errors.New("proto: bad checksum")
	// ErrAddress: the reply comes from another board (or lock) than the
	// one asked.
	ErrAddress = errors.New("proto: reply from the wrong address")
	// ErrShort: fewer bytes than the frame needs.
	ErrShort = errors.New("proto: short frame")
	// ErrFrame: the bytes are not a frame of the protocol (wrong start or
	// end byte, unknown command, wrong length).
	ErrFrame = errors.New("proto: malformed frame")
	// ErrRange: a board address, lock or channel number out of range.
	ErrRange = errors.New("proto: out of range")
	// ErrProtocol: an unknown protocol name.
	ErrProtocol = errors.New("proto: unknown protocol")
)

// Sum is the Kerong checksum: the low byte of the sum of b.
func Sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// XOR is the 8A/80 checksum: the XOR of b.
func XOR(b []byte) byte {
	var s byte
	for _, c := range b {
		s ^= c
	}
	return s
}

// Wire time at a baud rate: 8N1 sends 10 bits per byte.

// FrameTime is how long n bytes take on the wire at baud, 8N1.
func FrameTime(n, baud int) (nanos int64) {
	if baud <= 0 {
		return 0
	}
	return int64(n) * 10 * 1e9 / int64(baud)
}
