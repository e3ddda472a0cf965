package hal

import (
	"errors"
	"testing"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c/i2ctest"
)

// The driver's transactions, byte for byte, against periph's bus playback.
func TestMCP23017Playback(t *testing.T) {
	const a = 0x21
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		// NewMCP23017: IOCON, OLAT before IODIR, then GPPU.
		{Addr: a, W: []byte{0x0A, 0x00}},
		{Addr: a, W: []byte{0x14, 0x00, 0x00}},
		{Addr: a, W: []byte{0x00, 0xFF, 0xFF}},
		{Addr: a, W: []byte{0x0C, 0x00, 0x00}},
		// B3 as an output driven high: latch first, then direction.
		{Addr: a, W: []byte{0x15, 0x08}},
		{Addr: a, W: []byte{0x01, 0xF7}},
		// A0 as an input with pull-up: GPPUA only (already an input).
		{Addr: a, W: []byte{0x0C, 0x01}},
		// Sample: both ports in one transaction.
		{Addr: a, W: []byte{0x12}, R: []byte{0x01, 0x08}},
		// Check: IODIRA..OLATB read back as configured (GPIO reads the
		// pins; only the latches of outputs count).
		{Addr: a, W: []byte{0x00}, R: []byte{0xFF, 0xF7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 0, 0x01, 0x08, 0x5A, 0x08}},
		// Check after a power cycle: all inputs.
		{Addr: a, W: []byte{0x00}, R: []byte{0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0}},
		// Reinit restores the copy.
		{Addr: a, W: []byte{0x0A, 0x00}},
		{Addr: a, W: []byte{0x14, 0x00, 0x08}},
		{Addr: a, W: []byte{0x00, 0xFF, 0xF7}},
		{Addr: a, W: []byte{0x0C, 0x01, 0x00}},
		// A pin's own Read: its port only.
		{Addr: a, W: []byte{0x13}, R: []byte{0x08}},
	}}
	m, err := NewMCP23017("X1", bus, a)
	if err != nil {
		t.Fatal(err)
	}
	b3, a0 := m.Pin(11), m.Pin(0)
	if b3.Name() != "X1.B3" || a0.String() != "X1.A0" || b3.Number() != 11 {
		t.Errorf("names %s %s %d", b3.Name(), a0, b3.Number())
	}
	if err := b3.Out(gpio.High); err != nil {
		t.Fatal(err)
	}
	if err := a0.In(gpio.PullUp, gpio.NoEdge); err != nil {
		t.Fatal(err)
	}
	if a0.Pull() != gpio.PullUp || b3.Function() != "Out" || a0.Function() != "In" {
		t.Errorf("pull %s, functions %s %s", a0.Pull(), b3.Function(), a0.Function())
	}
	v, err := m.Sample()
	if err != nil || v != 0x0801 {
		t.Errorf("Sample = %#x, %v", v, err)
	}
	if err := m.Check(); err != nil {
		t.Errorf("Check = %v", err)
	}
	if err := m.Check(); !errors.Is(err, ErrExpander) {
		t.Errorf("Check after a power cycle = %v", err)
	}
	if err := m.Reinit(); err != nil {
		t.Fatal(err)
	}
	if b3.Read() != gpio.High {
		t.Error("B3 reads low")
	}
	if err := bus.Close(); err != nil {
		t.Error(err)
	}
	// What the chip cannot do.
	if a0.In(gpio.PullDown, gpio.NoEdge) == nil || a0.In(gpio.PullUp, gpio.BothEdges) == nil || a0.PWM(0, 0) == nil {
		t.Error("pull-down, edges or PWM accepted")
	}
}

// Bus errors are errors, never a level.
func TestMCP23017BusError(t *testing.T) {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		{Addr: 0x20, W: []byte{0x0A, 0x00}},
		{Addr: 0x20, W: []byte{0x14, 0x00, 0x00}},
		{Addr: 0x20, W: []byte{0x00, 0xFF, 0xFF}},
		{Addr: 0x20, W: []byte{0x0C, 0x00, 0x00}},
	}, DontPanic: true}
	m, err := NewMCP23017("X", bus, 0x20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Sample(); !errors.Is(err, ErrExpander) {
		t.Errorf("Sample on a dead bus = %v", err)
	}
	if err := m.Pin(0).Out(gpio.High); !errors.Is(err, ErrExpander) {
		t.Errorf("Out on a dead bus = %v", err)
	}
	if _, err := NewMCP23017("Y", bus, 0x20); !errors.Is(err, ErrExpander) {
		t.Errorf("New on a dead bus = %v", err)
	}
}

// The PCF8574 back-pack: P0=RS, P2=E, P3=backlight, P4..P7=D4..D7; one
// transaction per byte, E high then low for each nibble.
func TestHD44780I2C(t *testing.T) {
	rec := &i2ctest.Record{}
	d, err := NewHD44780I2C(rec, 0x27, 16, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Show("A"); err != nil {
		t.Fatal(err)
	}
	ops := rec.Ops
	if ops[0].Addr != 0x27 || len(ops[0].W) != 1 || ops[0].W[0] != 0x08 {
		t.Errorf("reset %+v, want backlight only", ops[0])
	}
	// The init sequence: 0x3 three times, then 0x2, each one nibble.
	for i, n := range []byte{3, 3, 3, 2} {
		if w := ops[1+i].W; len(w) != 2 || w[0] != n<<4|0x0C || w[1] != n<<4|0x08 {
			t.Errorf("init nibble %d: %#v", i, w)
		}
	}
	// Show's first character 'A' = 0x41 with RS: 0x4 then 0x1.
	want := []byte{0x40 | 0x0D, 0x40 | 0x09, 0x10 | 0x0D, 0x10 | 0x09}
	found := false
	for _, op := range ops {
		if string(op.W) == string(want) {
			found = true
		}
	}
	if !found {
		t.Errorf("no transaction %#v for 'A'", want)
	}
}
