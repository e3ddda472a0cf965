//go:build linux

package rs485

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// OpenPTY opens a pseudo-terminal pair and returns its master side and the
// path of its slave side (/dev/pts/N), which a program opens exactly as it
// opens /dev/ttyUSB0. The master is put in raw mode, so that no byte of a
// frame is translated or echoed.
func OpenPTY() (*os.File, string, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("rs485: opening /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("rs485: unlocking the pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("rs485: pty number: %w", err)
	}
	if err := makeRaw(fd); err != nil {
		unix.Close(fd)
		return nil, "", err
	}
	// Non-blocking, so that the runtime's poller serves it: Close then
	// interrupts a Read in progress.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("rs485: pty: %w", err)
	}
	path := fmt.Sprintf("/dev/pts/%d", n)
	return os.NewFile(uintptr(fd), "/dev/ptmx"), path, nil
}

// makeRaw clears every translation on fd: the line discipline of a pty
// applies to both sides until the slave's opener sets its own mode.
func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("rs485: pty termios: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("rs485: pty raw mode: %w", err)
	}
	return nil
}

// OpenRaw opens a serial device (or a pty's slave) in raw mode, without
// making it the controlling terminal, pollable so that read deadlines and
// Close work. Tests use it to play the controller's side.
func OpenRaw(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("rs485: opening %s: %w", path, err)
	}
	if err := makeRaw(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}
