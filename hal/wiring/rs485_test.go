package wiring

import (
	"strings"
	"testing"
)

const rsBase = `name: t
sensors: {debounce: 60ms}
rs485:
  - name: BUS1
    device: /dev/ttyUSB0
    protocol: kerong
    boards:
      - {address: 0, channels: 16}
      - {address: 1}
compartments:
  - {number: 1, size: S, bus: BUS1, board: 0, channel: 1}
  - {number: 2, size: M, lock: GPIO17, door: GPIO24}
  - {number: 3, size: L, bus: BUS1, board: 1, channel: 16, led: GPIO5}
`

func TestRS485Wiring(t *testing.T) {
	w, err := Parse([]byte(rsBase), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, ok := w.Bus("BUS1")
	if !ok || b.Baud != 19200 || !b.OpenBit() || !b.HasIR() || b.Boards[1].Channels != 16 {
		t.Fatalf("defaults: %+v", b)
	}
	if c := w.Compartments[2]; c.Bus != "BUS1" || c.Board != 1 || c.Channel != 16 {
		t.Errorf("compartment 3: %+v", c)
	}
	if err := w.Validate(); err != nil {
		t.Errorf("Validate of a parsed wiring: %v", err)
	}
	w8, err := Parse([]byte(strings.NewReplacer("kerong", "8a80", "address: 0,", "address: 2,", "board: 0,", "board: 2,", "{address: 1}", "{address: 1, channels: 24}").Replace(rsBase)), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := w8.Bus("BUS1"); b.Baud != 9600 || b.HasIR() {
		t.Errorf("8a80 defaults: %+v", b)
	}
}

func TestRS485WiringErrors(t *testing.T) {
	for _, tc := range []struct{ old, new, want string }{
		{"protocol: kerong", "protocol: modbus", `c.yaml:6: rs485 bus BUS1: protocol "modbus" not one of kerong, 8a80`},
		{"    device: /dev/ttyUSB0\n", "", "c.yaml:4: rs485 bus BUS1: device required"},
		{"protocol: kerong", "protocol: kerong\n    baud: 12345", "c.yaml:7: rs485 bus BUS1: baud 12345 not one of"},
		{"protocol: kerong", "protocol: kerong\n    lock_open_bit: 2", "c.yaml:7: rs485 bus BUS1: lock_open_bit 2 not 0 or 1"},
		{"{address: 1}", "{address: 0}", "c.yaml:9: rs485 bus BUS1: board address 0 already used (line 8)"},
		{"{address: 1}", "{address: 16}", "c.yaml:9: rs485 bus BUS1: board address 16 out of range 0..15"},
		{"address: 0, channels: 16", "address: 0, channels: 17", "c.yaml:8: rs485 bus BUS1: board 0: channels 17 out of range 1..16"},
		{"bus: BUS1, board: 0", "bus: BUS2, board: 0", `c.yaml:11: compartment 1: no rs485 bus named "BUS2"`},
		{"board: 0, channel: 1}", "board: 5, channel: 1}", "c.yaml:11: compartment 1: bus BUS1 has no board 5"},
		{"board: 0, channel: 1}", "board: 0, channel: 17}", "c.yaml:11: compartment 1: channel 17 out of range 1..16"},
		{"board: 1, channel: 16", "board: 0, channel: 1", "c.yaml:13: compartment 3: bus BUS1 board 0 channel 1 already used by compartment 1"},
		{"channel: 1}", "channel: 1, lock: GPIO4}", `c.yaml:11: compartment 1: lock pin "GPIO4" on a bus compartment`},
		{"door: GPIO24}", "door: GPIO24, channel: 3}", "c.yaml:12: compartment 2: channel without a bus"},
		{"led: GPIO5}", "led: GPIO17}", `c.yaml:13: compartment 3: led pin "GPIO17" already used as lock of compartment 2 (line 12)`},
	} {
		_, err := Parse([]byte(strings.Replace(rsBase, tc.old, tc.new, 1)), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q → %q: error %v, want %q", tc.old, tc.new, err, tc.want)
		}
	}
	// 8A/80 boards have no IR and need their channel count.
	for _, tc := range []struct{ yaml, want string }{
		{strings.Replace(rsBase, "protocol: kerong", "protocol: 8a80\n    ir: true", 1), "c.yaml:7: rs485 bus BUS1: ir: 8a80 boards have no infrared sensors"},
		{strings.Replace(rsBase, "protocol: kerong", "protocol: 8a80", 1), "c.yaml:8: rs485 bus BUS1: board address 0 out of range 1..31"},
	} {
		if _, err := Parse([]byte(tc.yaml), "c.yaml"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}
