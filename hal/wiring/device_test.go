package wiring

import (
	"strings"
	"testing"
)

// TestSameSerialPortTwice (found by an attack): I16 ("one transaction at a time per serial
// port") and the wiring's own "channel already used by compartment N". The
// device check compares the strings: the same port spelt two ways gives two
// bus workers on one serial line — two conversations at once, each reading
// the other's replies — and lets two compartments name one physical board
// channel, so a code for compartment 1 opens compartment 2's door (I1).
func TestSameSerialPortTwice(t *testing.T) {
	const yaml = `name: t
sensors: {debounce: 60ms}
rs485:
  - name: BUS1
    device: /dev/ttyUSB0
    protocol: kerong
    boards:
      - {address: 0, channels: 16}
  - name: BUS2
    device: DEV2
    protocol: kerong
    boards:
      - {address: 0, channels: 16}
compartments:
  - {number: 1, size: S, bus: BUS1, board: 0, channel: 1}
  - {number: 2, size: S, bus: BUS2, board: 0, channel: 1}
`
	for _, dev := range []string{"/dev//ttyUSB0", "/dev/./ttyUSB0", "/dev/../dev/ttyUSB0"} {
		if _, err := Parse([]byte(strings.Replace(yaml, "DEV2", dev, 1)), "c.yaml"); err == nil {
			t.Errorf("buses on /dev/ttyUSB0 and %s, compartments 1 and 2 on board 0 channel 1 of each: accepted", dev)
		}
	}
}
