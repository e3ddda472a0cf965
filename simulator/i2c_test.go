package simulator

import (
	"errors"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/openlocker/locker/hal/wiring"
)

// expanderWiring: two compartments whose lock, door and LED are on
// expander X1 at 0x20 on bus "1", and a display on a PCF8574 at 0x27.
func expanderWiring() *wiring.Wiring {
	w := testWiring(2)
	w.Locks.ActiveLow = true
	w.Expanders = []wiring.Expander{{Name: "X1", Type: "mcp23017", Bus: "1", Address: 0x20}}
	w.Compartments[0].Lock, w.Compartments[0].Door, w.Compartments[0].LED = "X1.A0", "X1.B0", "X1.A7"
	w.Compartments[0].Parcel = ""
	w.Display = &wiring.Display{Type: "hd44780", Cols: 16, Rows: 2, I2C: &wiring.I2C{Bus: "1", Address: 0x27}}
	return w
}

func tx(t *testing.T, b i2c.Bus, addr uint16, w []byte, rn int) []byte {
	t.Helper()
	r := make([]byte, rn)
	if err := b.Tx(addr, w, r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMCP23017Model(t *testing.T) {
	c := newCabinet(t, expanderWiring(), Options{})
	bus, err := c.Bus("1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Bus("2"); !errors.Is(err, ErrNoBus) {
		t.Errorf("Bus(2) = %v", err)
	}
	if c.ByName("X1.A0") != nil {
		t.Error("an expander pin is reachable as a board pin")
	}
	// Power-on: all inputs; sequential read of IODIRA, IODIRB.
	if r := tx(t, bus, 0x20, []byte{0x00}, 2); r[0] != 0xFF || r[1] != 0xFF {
		t.Errorf("IODIR %x", r)
	}
	// Door 1 (B0) closed: reads low (doors read high when open). Pull-ups
	// on the rest of port B, nothing wired there: they read high.
	tx(t, bus, 0x20, []byte{0x0D, 0xFE}, 0) // GPPUB
	if r := tx(t, bus, 0x20, []byte{0x12}, 2); r[1] != 0xFE {
		t.Errorf("GPIOB %#x, want 0xFE", r[1])
	}
	// Latches high (active-low coil off) then A0 and A7 outputs, in one
	// sequential write each.
	tx(t, bus, 0x20, []byte{0x14, 0x01, 0x00}, 0) // OLATA, OLATB
	tx(t, bus, 0x20, []byte{0x00, 0x7E, 0xFF}, 0) // IODIRA, IODIRB
	if s, _ := c.Stats(1); s.Pulses != 0 {
		t.Fatal("coil energised while configuring")
	}
	// Energise the coil (A0 low) and light the LED (A7 high) by writing GPIOA.
	tx(t, bus, 0x20, []byte{0x12, 0x80}, 0)
	if on, _ := c.LED(1); !on || c.CoilsOn() != 1 {
		t.Errorf("LED %v, coils on %d", on, c.CoilsOn())
	}
	time.Sleep(testMinPulse + 10*time.Millisecond)
	tx(t, bus, 0x20, []byte{0x14, 0x01}, 0)
	wantDoor(t, c, 1, DoorOpen, false)
	if r := tx(t, bus, 0x20, []byte{0x12}, 2); r[0] != 0x01 || r[1] != 0xFF {
		t.Errorf("GPIO %x, want 01 ff (door open)", r)
	}
	// IPOL inverts a read.
	tx(t, bus, 0x20, []byte{0x03, 0x01}, 0)
	if r := tx(t, bus, 0x20, []byte{0x13}, 1); r[0] != 0xFE {
		t.Errorf("GPIOB with IPOL %#x", r[0])
	}
	tx(t, bus, 0x20, []byte{0x03, 0x00}, 0)
	// Byte mode (SEQOP): the pointer toggles between GPIOA and GPIOB.
	tx(t, bus, 0x20, []byte{0x0A, 0x20}, 0)
	if r := tx(t, bus, 0x20, []byte{0x12}, 3); r[0] != r[2] || r[1] != 0xFF {
		t.Errorf("byte mode reads %x", r)
	}
	if r := tx(t, bus, 0x20, []byte{0x0B}, 1); r[0] != 0x20 {
		t.Errorf("IOCONB %#x, want the shared IOCON", r[0])
	}
	// Nothing at 0x21.
	if err := bus.Tx(0x21, []byte{0}, nil); !errors.Is(err, ErrNACK) {
		t.Errorf("Tx to nobody = %v", err)
	}
}

func TestExpanderFault(t *testing.T) {
	c := newCabinet(t, expanderWiring(), Options{})
	bus, _ := c.Bus("1")
	tx(t, bus, 0x20, []byte{0x14, 0x00}, 0) // coil on once A0 is an output
	tx(t, bus, 0x20, []byte{0x00, 0xFE}, 0)
	if c.CoilsOn() != 1 {
		t.Fatal("coil off")
	}
	if err := c.SetExpanderFault("X1", true); err != nil {
		t.Fatal(err)
	}
	if c.CoilsOn() != 0 {
		t.Error("coil on with its expander gone")
	}
	if err := bus.Tx(0x20, []byte{0x12}, make([]byte, 2)); !errors.Is(err, ErrNACK) {
		t.Errorf("Tx while gone = %v", err)
	}
	_ = c.SetExpanderFault("X1", false)
	if r := tx(t, bus, 0x20, []byte{0x00}, 2); r[0] != 0xFF {
		t.Errorf("IODIRA %#x after the power cycle, want 0xFF", r[0])
	}
	if c.ExpanderTransactions("X1") < 4 {
		t.Errorf("transactions %d", c.ExpanderTransactions("X1"))
	}
	if err := c.SetExpanderFault("X9", true); err == nil {
		t.Error("fault of an unknown expander")
	}
}

func TestPCF8574Display(t *testing.T) {
	c := newCabinet(t, expanderWiring(), Options{})
	bus, _ := c.Bus("1")
	nibble := func(rs bool, n byte) {
		b := n<<4 | 0x08
		if rs {
			b |= 0x01
		}
		tx(t, bus, 0x27, []byte{b | 0x04, b}, 0)
	}
	for _, n := range []byte{3, 3, 3, 2} {
		nibble(false, n)
	}
	for _, cmd := range []byte{0x28, 0x0C, 0x01, 0x06} {
		nibble(false, cmd>>4)
		nibble(false, cmd&0xF)
	}
	for _, ch := range []byte("Hi") {
		nibble(true, ch>>4)
		nibble(true, ch&0xF)
	}
	wantDisplay(t, c, "Hi", "")
	if !c.Backlight() {
		t.Error("backlight off")
	}
}

func TestCheckSpacing(t *testing.T) {
	w := testWiring(2)
	w.Locks.Gap, w.Locks.Cooldown = 50*time.Millisecond, 200*time.Millisecond
	c := newCabinet(t, w, Options{})
	pulse(t, pinOf(t, c, "LOCK01"), 5*time.Millisecond)
	pulse(t, pinOf(t, c, "LOCK01"), 5*time.Millisecond)
	err := c.CheckSpacing()
	if err == nil {
		t.Fatal("no error for back-to-back pulses")
	}
	t.Log(err)
}

// Every example wiring builds a simulated cabinet, with its buses.
func TestExampleWirings(t *testing.T) {
	for _, tc := range []struct {
		file  string
		buses []string
	}{{"gpio-24.yaml", []string{"1"}}, {"mcp23017-96.yaml", []string{"1", "3"}}} {
		w, err := wiring.Load("../testdata/wiring/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		c := newCabinet(t, w, Options{})
		for _, b := range tc.buses {
			if _, err := c.Bus(b); err != nil {
				t.Errorf("%s: %v", tc.file, err)
			}
		}
		if len(c.Snapshot().Compartments) != len(w.Compartments) {
			t.Errorf("%s: compartments", tc.file)
		}
	}
}
