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

// A port has one owner: a second Open of it, under its name or through a
// symlink (a wiring that names one adapter twice, /dev/serial/by-id and
// /dev/ttyUSB0), or by another program, fails with ErrInUse instead of
// holding a second conversation on the line; once the owner closes it, it
// opens again.
func TestOpenIsExclusive(t *testing.T) {
	master, path, err := OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	p, err := Open(path, 9600)
	if err != nil {
		t.Fatal(err)
	}
	link := t.TempDir() + "/usb-FTDI-if00-port0"
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{path, link} {
		if q, err := Open(name, 9600); !errors.Is(err, ErrInUse) {
			if q != nil {
				q.Close()
			}
			t.Errorf("second Open(%s) of an open port: %v, want ErrInUse", name, err)
		}
	}
	p.Close()
	q, err := Open(link, 9600)
	if err != nil {
		t.Fatalf("Open after the owner closed the port: %v", err)
	}
	q.Close()
}
