package daemon_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/protocol"
)

// startCorrupt runs daemon.New on the simulated cabinet with a corrupt
// database file and checks that it fails, with a one-line message about
// the database.
func startCorrupt(t *testing.T, w *wiring.Wiring, cab *simulator.Cabinet) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, daemon.DBFile), []byte(strings.Repeat("junk", 4000)), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := newDaemon(t, w, cab, dir)
	if err == nil {
		d.Hardware.Halt()
		t.Fatal("daemon.New succeeded on a corrupt database")
	}
	if !errors.Is(err, store.ErrCorrupt) || strings.Contains(err.Error(), "\n") {
		t.Errorf("daemon.New = %q, want one line about the corrupt database", err)
	}
}

// newDaemon runs daemon.New for locker T01 on the simulated cabinet with
// its data in dir, its link pointed at a broker that is not there.
func newDaemon(t *testing.T, w *wiring.Wiring, cab *simulator.Cabinet, dir string) (*daemon.Daemon, error) {
	t.Helper()
	kp, err := protocol.GenerateKeyPair("test")
	if err != nil {
		t.Fatal(err)
	}
	return daemon.New(context.Background(), daemon.Options{LockerID: "T01", DataDir: dir, Wiring: w, Pins: cab.ByName,
		Hal:  hal.Options{NoDisplayDelays: true, Buses: cab.Bus},
		Link: client.Options{Broker: "tcp://127.0.0.1:1", Keys: kp.Keyring()}})
}

func loadWiring(t *testing.T, name string) *wiring.Wiring {
	t.Helper()
	w, err := wiring.Load(filepath.Join("..", "..", "..", "testdata", "wiring", name))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// A start that fails on a corrupt database leaves every lock output of a
// GPIO cabinet driven at its coil-off level — even one that a previous
// process left energised — and no coil on.
func TestCorruptDatabaseLocksOffGPIO(t *testing.T) {
	w := loadWiring(t, "gpio-24.yaml")
	cab, err := simulator.New(w, simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cab.Halt()
	off, on := gpio.OUT_HIGH, gpio.Low // active-low relays
	if !w.Locks.ActiveLow {
		off, on = gpio.OUT_LOW, gpio.High
	}
	// A crashed process left compartment 3's coil on.
	if err := cab.ByName(w.Compartments[2].Lock).Out(on); err != nil {
		t.Fatal(err)
	}
	if cab.CoilsOn() != 1 {
		t.Fatalf("%d coils on before the start, want 1", cab.CoilsOn())
	}
	startCorrupt(t, w, cab)
	for _, c := range w.Compartments {
		if f := cab.ByName(c.Lock).(*simulator.Pin).Func(); f != off {
			t.Errorf("lock of compartment %d (%s): %s, want %s", c.Number, c.Lock, f, off)
		}
	}
	if n := cab.CoilsOn(); n != 0 {
		t.Errorf("%d coils on after the failed start", n)
	}
	if err := cab.CheckInvariants(); err != nil {
		t.Error(err)
	}
}

// The same on expanders: every lock expander is initialised with its lock
// outputs latched off, read back over the simulated bus.
func TestCorruptDatabaseLocksOffExpanders(t *testing.T) {
	w := loadWiring(t, "mcp23017-96.yaml")
	cab, err := simulator.New(w, simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cab.Halt()
	// A crashed process left compartment 1's coil on: LOCKS1.A0 an output,
	// latched low (active low).
	bus, err := cab.Bus("1")
	if err != nil {
		t.Fatal(err)
	}
	dev := i2c.Dev{Bus: bus, Addr: 0x20}
	for _, wr := range [][]byte{{0x14, 0xFE, 0xFF}, {0x00, 0xFE, 0xFF}} { // OLAT, then IODIR
		if err := dev.Tx(wr, nil); err != nil {
			t.Fatal(err)
		}
	}
	if cab.CoilsOn() != 1 {
		t.Fatalf("%d coils on before the start, want 1", cab.CoilsOn())
	}
	startCorrupt(t, w, cab)
	if n := cab.CoilsOn(); n != 0 {
		t.Errorf("%d coils on after the failed start", n)
	}
	// Each lock expander drives 16 locks: all outputs (IODIR 0), latched
	// high (off).
	for _, e := range w.Expanders {
		if !strings.HasPrefix(e.Name, "LOCKS") {
			continue
		}
		b, err := cab.Bus(e.Bus)
		if err != nil {
			t.Fatal(err)
		}
		var r [0x16]byte
		if err := (&i2c.Dev{Bus: b, Addr: e.Address}).Tx([]byte{0x00}, r[:]); err != nil {
			t.Fatal(err)
		}
		if r[0x00] != 0 || r[0x01] != 0 || r[0x14] != 0xFF || r[0x15] != 0xFF {
			t.Errorf("%s: IODIR %02x %02x, OLAT %02x %02x; want every lock an output latched off", e.Name, r[0], r[1], r[0x14], r[0x15])
		}
	}
	if err := cab.CheckInvariants(); err != nil {
		t.Error(err)
	}
}
