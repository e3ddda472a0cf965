// Package serial opens a serial port (a USB-RS485 adapter, a board's UART,
// or the slave side of a pseudo-terminal) in raw mode, 8N1, at a given
// speed, through termios on Linux. It needs no cgo. On other systems Open
// returns ErrUnsupported.
package serial

import (
	"errors"
	"fmt"
	"os"
)

// Sentinel errors.
var (
	// ErrUnsupported: this system has no termios serial support here.
	ErrUnsupported = errors.New("serial: not supported on this system")
	// ErrBaud: a speed the port cannot be set to.
	ErrBaud = errors.New("serial: unsupported baud rate")
	// ErrInUse: another descriptor holds the port's lock (another bus of
	// the wiring on the same port, or another program).
	ErrInUse = errors.New("serial port in use by another bus or program")
)

// Bauds lists the speeds Open accepts.
var Bauds = []int{1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200}

// Port is an open serial port. Read and Write go straight to the device;
// reads honour SetReadDeadline; Close unblocks a pending Read.
type Port struct {
	*os.File
	baud int
}

// Baud is the speed the port was set to.
func (p *Port) Baud() int { return p.baud }

func checkBaud(baud int) error {
	for _, b := range Bauds {
		if b == baud {
			return nil
		}
	}
	return fmt.Errorf("%w: %d", ErrBaud, baud)
}
