//go:build !linux

package rs485

import (
	"errors"
	"os"
)

// OpenPTY is available on Linux only.
func OpenPTY() (*os.File, string, error) {
	return nil, "", errors.New("rs485: pseudo-terminals are simulated on Linux only")
}

// OpenRaw is available on Linux only.
func OpenRaw(path string) (*os.File, error) {
	return nil, errors.New("rs485: serial devices are opened on Linux only")
}
