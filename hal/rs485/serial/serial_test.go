//go:build linux

package serial

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPTYRoundTrip(t *testing.T) {
	master, path, err := OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	p, err := Open(path, 19200)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Baud() != 19200 {
		t.Errorf("Baud() = %d", p.Baud())
	}
	tio, err := unix.IoctlGetTermios(int(p.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&(unix.ICANON|unix.ECHO) != 0 || tio.Cflag&unix.CSIZE != unix.CS8 || tio.Cflag&unix.CBAUD != unix.B19200 {
		t.Errorf("termios not raw 8N1 19200: %+v", tio)
	}

	// Bytes that a cooked terminal would mangle: CR, ^C, ^S, DEL.
	frame := []byte{0x02, 0x0d, 0x03, 0x13, 0x7f, 0x0a, 0x00, 0xff}
	if _, err := p.Write(frame); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(frame))
	master.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(master, got); err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("master read % x %v, want % x", got, err, frame)
	}
	if _, err := master.Write(frame); err != nil {
		t.Fatal(err)
	}
	p.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(p, got); err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("slave read % x %v, want % x", got, err, frame)
	}

	// A read with nothing to read times out at its deadline.
	p.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := p.Read(got); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read on a silent line: %v", err)
	}

	// The adapter unplugged: reads fail.
	master.Close()
	p.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := p.Read(got); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after the master closed: %v, want EIO", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open("/dev/null", 12345); !errors.Is(err, ErrBaud) {
		t.Errorf("baud 12345: %v", err)
	}
	if _, err := Open("/nonexistent/ttyUSB9", 9600); err == nil {
		t.Error("missing device opened")
	}
	// /dev/null is not a terminal: TCGETS fails.
	if _, err := Open("/dev/null", 9600); err == nil {
		t.Error("/dev/null opened as a serial port")
	}
}
