//go:build !linux

package serial

import "os"

// Open returns ErrUnsupported: serial ports are driven through Linux
// termios only.
func Open(path string, baud int) (*Port, error) {
	if err := checkBaud(baud); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

// OpenPTY returns ErrUnsupported outside Linux.
func OpenPTY() (master *os.File, slave string, err error) {
	return nil, "", ErrUnsupported
}
