//go:build linux

package serial

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

var speeds = map[int]uint32{
	1200: unix.B1200, 2400: unix.B2400, 4800: unix.B4800, 9600: unix.B9600,
	19200: unix.B19200, 38400: unix.B38400, 57600: unix.B57600, 115200: unix.B115200,
}

// Open opens the serial device at path in raw mode, 8N1, no flow control,
// at baud. The descriptor is non-blocking underneath so that reads obey
// deadlines and Close; Read blocks until at least one byte arrives.
func Open(path string, baud int) (*Port, error) {
	if err := checkBaud(baud); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("serial: open %s: %w", path, err)
	}
	// One owner per port: a second bus on the same line (the wiring
	// spelling it through a symlink) or a second program (lockerd beside
	// locker-sim) would hold a second conversation on it at once, each
	// reading the other's replies. The lock goes with the descriptor.
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("serial: %s: %w", path, ErrInUse)
		}
		return nil, fmt.Errorf("serial: lock %s: %w", path, err)
	}
	if err := setRaw(fd, speeds[baud]); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("serial: %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	return &Port{File: f, baud: baud}, nil
}

// setRaw puts the terminal in raw mode: no line editing, echo, signals,
// output processing or software flow control; 8 data bits, no parity, one
// stop bit, receiver on, modem lines ignored; VMIN 1, VTIME 0.
func setRaw(fd int, speed uint32) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("TCGETS: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CSTOPB | unix.CRTSCTS | unix.CBAUD
	t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL | speed
	t.Ispeed = speed
	t.Ospeed = speed
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("TCSETS: %w", err)
	}
	// Drop whatever the adapter buffered before we came.
	_ = unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIOFLUSH)
	return nil
}

// OpenPTY opens a new pseudo-terminal pair: master is the side a board
// emulator holds (raw mode), slave the path of the side the daemon opens
// as it would /dev/ttyUSB0. Closing master makes reads on the slave fail
// with EIO, as an unplugged adapter does.
func OpenPTY() (master *os.File, slave string, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("serial: open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("serial: unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("serial: pty number: %w", err)
	}
	if err := setRaw(fd, unix.B19200); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("serial: pty master: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), fmt.Sprintf("/dev/pts/%d", n), nil
}
