package simulator

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/pin"

	"github.com/openlocker/locker/hal/wiring"
)

const testMinPulse = 30 * time.Millisecond

// testWiring is a cabinet of n compartments with a keypad and a 20x2 display.
func testWiring(n int) *wiring.Wiring {
	w := &wiring.Wiring{
		Name:    "test",
		Locks:   wiring.Locks{Pulse: 300 * time.Millisecond},
		Sensors: wiring.Sensors{Pull: "up", Debounce: 30 * time.Millisecond, Poll: 5 * time.Millisecond},
		Keypad: &wiring.Keypad{
			Rows:   []string{"R1", "R2", "R3", "R4"},
			Cols:   []string{"C1", "C2", "C3", "C4"},
			Layout: []string{"123A", "456B", "789C", "*0#D"},
		},
		Display: &wiring.Display{Type: "hd44780", Cols: 20, Rows: 2, RS: "RS", E: "E", Data: []string{"D4", "D5", "D6", "D7"}},
	}
	for i := 1; i <= n; i++ {
		w.Compartments = append(w.Compartments, wiring.Compartment{
			Number: i, Size: "S",
			Lock: fmt.Sprintf("LOCK%02d", i), Door: fmt.Sprintf("DOOR%02d", i), Parcel: fmt.Sprintf("PARCEL%02d", i),
		})
	}
	return w
}

func newCabinet(t *testing.T, w *wiring.Wiring, opts Options) *Cabinet {
	t.Helper()
	if opts.MinPulse == 0 {
		opts.MinPulse = testMinPulse
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := New(w, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Halt()
		if err := c.CheckInvariants(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func pinOf(t *testing.T, c *Cabinet, name string) gpio.PinIO {
	t.Helper()
	p := c.ByName(name)
	if p == nil {
		t.Fatalf("no pin %s", name)
	}
	return p
}

// pulse energises an active-high lock pin for d.
func pulse(t *testing.T, p gpio.PinIO, d time.Duration) {
	t.Helper()
	if err := p.Out(gpio.High); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	if err := p.Out(gpio.Low); err != nil {
		t.Fatal(err)
	}
}

func compartment(t *testing.T, c *Cabinet, n int) CompartmentState {
	t.Helper()
	s, err := c.Compartment(n)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantDoor(t *testing.T, c *Cabinet, n int, door string, latched bool) {
	t.Helper()
	s := compartment(t, c, n)
	if s.Door != door || s.Latched != latched {
		t.Fatalf("compartment %d: door %s latched %v, want %s %v", n, s.Door, s.Latched, door, latched)
	}
}

func TestLatchReleasesOnlyAfterMinPulse(t *testing.T) {
	c := newCabinet(t, testWiring(2), Options{})
	lock := pinOf(t, c, "LOCK01")

	pulse(t, lock, testMinPulse/3)
	wantDoor(t, c, 1, DoorClosed, true)
	// Short pulses do not add up: the coil must stay energised.
	for range 4 {
		pulse(t, lock, testMinPulse/3)
		time.Sleep(testMinPulse / 3)
	}
	wantDoor(t, c, 1, DoorClosed, true)

	// A long pulse releases the latch while the coil is still on.
	if err := lock.Out(gpio.High); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * testMinPulse)
	wantDoor(t, c, 1, DoorOpen, false)
	if err := lock.Out(gpio.Low); err != nil {
		t.Fatal(err)
	}
	wantDoor(t, c, 1, DoorOpen, false)
	wantDoor(t, c, 2, DoorClosed, true)

	st, err := c.Stats(1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pulses != 6 || st.Releases != 1 || st.Energised || st.LongestPulse < 3*testMinPulse || st.LastPulse != st.LongestPulse {
		t.Fatalf("stats %+v", st)
	}
	if st.TotalEnergised < st.LongestPulse+5*testMinPulse/3 {
		t.Fatalf("total energised %v", st.TotalEnergised)
	}
	if _, err := c.Stats(3); !errors.Is(err, ErrNoCompartment) {
		t.Fatalf("Stats(3): %v", err)
	}
}

func TestActiveLowLock(t *testing.T) {
	w := testWiring(1)
	w.Locks.ActiveLow = true
	c := newCabinet(t, w, Options{})
	lock := pinOf(t, c, "LOCK01")
	// An undriven pin, and a pin held high, leave the coil off.
	time.Sleep(2 * testMinPulse)
	if err := lock.Out(gpio.High); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * testMinPulse)
	wantDoor(t, c, 1, DoorClosed, true)
	if err := lock.Out(gpio.Low); err != nil {
		t.Fatal(err)
	}
	if c.CoilsOn() != 1 {
		t.Fatalf("coils on %d", c.CoilsOn())
	}
	time.Sleep(2 * testMinPulse)
	// Switching the pin to an input stops driving the relay.
	if err := lock.In(gpio.PullUp, gpio.NoEdge); err != nil {
		t.Fatal(err)
	}
	wantDoor(t, c, 1, DoorOpen, false)
	if c.CoilsOn() != 0 {
		t.Fatalf("coils on %d", c.CoilsOn())
	}
}

func TestJammedLock(t *testing.T) {
	c := newCabinet(t, testWiring(1), Options{})
	if err := c.SetFault(1, FaultJammedLock); err != nil {
		t.Fatal(err)
	}
	pulse(t, pinOf(t, c, "LOCK01"), 3*testMinPulse)
	wantDoor(t, c, 1, DoorClosed, true)
	if err := c.OpenDoor(1); !errors.Is(err, ErrLatched) {
		t.Fatalf("OpenDoor: %v", err)
	}
	if err := c.ForceDoor(1); err != nil {
		t.Fatal(err)
	}
	wantDoor(t, c, 1, DoorOpen, false)
	st, _ := c.Stats(1)
	if st.Releases != 0 || st.Forced != 1 || st.Pulses != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Cleared, the lock works again.
	if err := c.CloseDoor(1); err != nil {
		t.Fatal(err)
	}
	if err := c.SetFault(1, FaultNone); err != nil {
		t.Fatal(err)
	}
	pulse(t, pinOf(t, c, "LOCK01"), 3*testMinPulse)
	wantDoor(t, c, 1, DoorOpen, false)
}

func TestDoorActions(t *testing.T) {
	c := newCabinet(t, testWiring(2), Options{})
	lock := pinOf(t, c, "LOCK01")

	for _, n := range []int{0, 3, -1} {
		for name, f := range map[string]func(int) error{"close": c.CloseDoor, "open": c.OpenDoor, "force": c.ForceDoor} {
			if err := f(n); !errors.Is(err, ErrNoCompartment) {
				t.Errorf("%s(%d): %v", name, n, err)
			}
		}
	}

	if err := c.OpenDoor(1); !errors.Is(err, ErrLatched) {
		t.Fatalf("pulling a latched door: %v", err)
	}
	wantDoor(t, c, 1, DoorClosed, true)
	if err := c.CloseDoor(1); err != nil { // already shut
		t.Fatal(err)
	}

	pulse(t, lock, 2*testMinPulse)
	wantDoor(t, c, 1, DoorOpen, false)
	if err := c.OpenDoor(1); err != nil { // already open
		t.Fatal(err)
	}
	if err := c.CloseDoor(1); err != nil {
		t.Fatal(err)
	}
	wantDoor(t, c, 1, DoorClosed, true)

	// Pushed shut while the coil holds the bolt back: closed, unlatched,
	// and it can be pulled open again; it latches when the coil goes off.
	if err := lock.Out(gpio.High); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * testMinPulse)
	wantDoor(t, c, 1, DoorOpen, false)
	if err := c.CloseDoor(1); err != nil {
		t.Fatal(err)
	}
	wantDoor(t, c, 1, DoorClosed, false)
	if err := c.OpenDoor(1); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseDoor(1); err != nil {
		t.Fatal(err)
	}
	wantDoor(t, c, 1, DoorClosed, false)
	if err := lock.Out(gpio.Low); err != nil {
		t.Fatal(err)
	}
	wantDoor(t, c, 1, DoorClosed, true)
	if st, _ := c.Stats(1); st.Releases != 2 {
		t.Fatalf("releases %d", st.Releases)
	}

	// Forcing breaks a latched door open.
	if err := c.ForceDoor(2); err != nil {
		t.Fatal(err)
	}
	wantDoor(t, c, 2, DoorOpen, false)
	if err := c.ForceDoor(2); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Stats(2); st.Forced != 1 || st.Releases != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestParcelOnlyWhileOpen(t *testing.T) {
	for _, low := range []bool{false, true} {
		t.Run(fmt.Sprintf("parcel_present_low=%v", low), func(t *testing.T) {
			w := testWiring(1)
			w.Sensors.ParcelPresentLow = low
			c := newCabinet(t, w, Options{})
			sensor := pinOf(t, c, "PARCEL01")
			present := gpio.Level(!low)
			if got := sensor.Read(); got == present {
				t.Fatalf("empty compartment reads %v", got)
			}
			if err := c.SetParcel(1, true); !errors.Is(err, ErrDoorClosed) {
				t.Fatalf("SetParcel on a closed door: %v", err)
			}
			if err := c.SetParcel(2, true); !errors.Is(err, ErrNoCompartment) {
				t.Fatalf("SetParcel(2): %v", err)
			}
			if err := c.ForceDoor(1); err != nil {
				t.Fatal(err)
			}
			if err := c.SetParcel(1, true); err != nil {
				t.Fatal(err)
			}
			if got := sensor.Read(); got != present {
				t.Fatalf("a parcel reads %v", got)
			}
			if err := c.CloseDoor(1); err != nil {
				t.Fatal(err)
			}
			if !compartment(t, c, 1).Parcel || sensor.Read() != present {
				t.Fatal("the parcel went away with the door")
			}
			if err := c.SetParcel(1, false); !errors.Is(err, ErrDoorClosed) {
				t.Fatalf("taking a parcel through a closed door: %v", err)
			}
		})
	}
}

func TestDoorSensorFaults(t *testing.T) {
	for _, openLow := range []bool{false, true} {
		openLevel := gpio.Level(!openLow)
		tests := []struct {
			fault            Fault
			closedReadsOpen  bool
			openedReadsOpen  bool
			wantFaultInState Fault
		}{
			{FaultNone, false, true, FaultNone},
			{FaultSensorStuckOpen, true, true, FaultSensorStuckOpen},
			{FaultSensorStuckClosed, false, false, FaultSensorStuckClosed},
			{FaultJammedLock, false, true, FaultJammedLock},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/door_open_low=%v", tt.fault, openLow), func(t *testing.T) {
				w := testWiring(1)
				w.Sensors.DoorOpenLow = openLow
				c := newCabinet(t, w, Options{})
				door := pinOf(t, c, "DOOR01")
				if err := c.SetFault(1, tt.fault); err != nil {
					t.Fatal(err)
				}
				if got := door.Read() == openLevel; got != tt.closedReadsOpen {
					t.Errorf("closed door reads open=%v", got)
				}
				if err := c.ForceDoor(1); err != nil {
					t.Fatal(err)
				}
				if got := door.Read() == openLevel; got != tt.openedReadsOpen {
					t.Errorf("open door reads open=%v", got)
				}
				if f := compartment(t, c, 1).Fault; f != tt.wantFaultInState {
					t.Errorf("fault %q", f)
				}
			})
		}
	}
	t.Run("unknown", func(t *testing.T) {
		c := newCabinet(t, testWiring(1), Options{})
		if err := c.SetFault(1, "melted"); !errors.Is(err, ErrUnknownFault) {
			t.Fatalf("SetFault: %v", err)
		}
		if err := c.SetFault(2, FaultNone); !errors.Is(err, ErrNoCompartment) {
			t.Fatalf("SetFault(2): %v", err)
		}
	})
}

func TestSensorBounce(t *testing.T) {
	// In a synctest bubble time moves only when every goroutine waits:
	// the reads below happen at the instants they name however loaded the
	// machine is (with real time, a descheduled reader saw one change).
	synctest.Test(t, func(t *testing.T) {
		c := newCabinet(t, testWiring(1), Options{})
		door := pinOf(t, c, "DOOR01")
		if err := c.SetFault(1, FaultSensorBounce); err != nil {
			t.Fatal(err)
		}
		if door.Read() != gpio.Low {
			t.Fatal("closed door reads open")
		}
		if err := c.ForceDoor(1); err != nil {
			t.Fatal(err)
		}
		if c.Settled() {
			t.Error("settled while bouncing")
		}
		// One read every millisecond of the bounce window: the sensor
		// starts on the old reading and alternates every bouncePeriod.
		levels := []gpio.Level{door.Read()}
		for range bounceWindow/time.Millisecond - 1 {
			time.Sleep(time.Millisecond)
			levels = append(levels, door.Read())
		}
		changes := 0
		for i := 1; i < len(levels); i++ {
			if levels[i] != levels[i-1] {
				changes++
			}
		}
		// open, closed again, open…: at least one bounce back.
		if levels[0] != gpio.Low || changes < 2 {
			t.Errorf("%d changes during the bounce: %v", changes, levels)
		}
		time.Sleep(2 * time.Millisecond)
		for range 20 {
			if door.Read() != gpio.High {
				t.Fatal("the sensor did not settle on open")
			}
			time.Sleep(time.Millisecond)
		}
		if !c.Settled() {
			t.Error("not settled")
		}
	})
}

// scan drives the rows one by one as the hal's scanner does and returns the
// keys whose column reads low.
func scan(t *testing.T, c *Cabinet) string {
	t.Helper()
	w := c.Wiring().Keypad
	var keys []byte
	for r := range w.Rows {
		for i, name := range w.Rows {
			l := gpio.High
			if i == r {
				l = gpio.Low
			}
			if err := pinOf(t, c, name).Out(l); err != nil {
				t.Fatal(err)
			}
		}
		for col, name := range w.Cols {
			if pinOf(t, c, name).Read() == gpio.Low {
				keys = append(keys, w.Layout[r][col])
			}
		}
	}
	return string(keys)
}

func TestKeypadMatrix(t *testing.T) {
	c := newCabinet(t, testWiring(1), Options{})
	for _, name := range c.Wiring().Keypad.Cols {
		if err := pinOf(t, c, name).In(gpio.PullUp, gpio.NoEdge); err != nil {
			t.Fatal(err)
		}
	}
	if got := scan(t, c); got != "" {
		t.Fatalf("nothing held, scan finds %q", got)
	}
	for _, k := range []byte(wiring.Keys) {
		if err := c.PressKey(k); err != nil {
			t.Fatal(err)
		}
		if got := scan(t, c); got != string(k) {
			t.Fatalf("holding %c, scan finds %q", k, got)
		}
		if err := c.ReleaseKey(k); err != nil {
			t.Fatal(err)
		}
	}
	if got := scan(t, c); got != "" {
		t.Fatalf("all released, scan finds %q", got)
	}
	// Two keys in the same column are told apart by their rows.
	for _, k := range []byte("2#") {
		if err := c.PressKey(k); err != nil {
			t.Fatal(err)
		}
	}
	if got := scan(t, c); got != "2#" {
		t.Fatalf("holding 2 and #, scan finds %q", got)
	}
	// With no row driven low, a held key pulls nothing.
	for _, name := range c.Wiring().Keypad.Rows {
		if err := pinOf(t, c, name).Out(gpio.High); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range c.Wiring().Keypad.Cols {
		if pinOf(t, c, name).Read() != gpio.High {
			t.Fatalf("column %s reads low with no row driven", name)
		}
	}
	if got := c.Scans(); got != 3+uint64(len(wiring.Keys)) {
		t.Fatalf("scans %d", got)
	}
	if err := c.PressKey('X'); !errors.Is(err, ErrNoKey) {
		t.Fatalf("PressKey(X): %v", err)
	}
	if !c.HasKey('#') || c.HasKey('E') {
		t.Fatal("HasKey")
	}

	w := testWiring(1)
	w.Keypad = nil
	c2 := newCabinet(t, w, Options{})
	if err := c2.PressKey('1'); !errors.Is(err, ErrNoKeypad) {
		t.Fatalf("PressKey without keypad: %v", err)
	}
}

// lcdWriter is a small HD44780 4-bit writer, as the hal drives it.
type lcdWriter struct {
	t     *testing.T
	rs, e gpio.PinIO
	d     [4]gpio.PinIO
	cols  int
}

func newLCDWriter(t *testing.T, c *Cabinet) *lcdWriter {
	d := c.Wiring().Display
	w := &lcdWriter{t: t, rs: pinOf(t, c, d.RS), e: pinOf(t, c, d.E), cols: d.Cols}
	for i, name := range d.Data {
		w.d[i] = pinOf(t, c, name)
	}
	return w
}

func (w *lcdWriter) nibble(rs bool, n byte) {
	must := func(err error) {
		if err != nil {
			w.t.Fatal(err)
		}
	}
	must(w.rs.Out(gpio.Level(rs)))
	for i, p := range w.d {
		must(p.Out(gpio.Level(n&(1<<i) != 0)))
	}
	must(w.e.Out(gpio.High))
	must(w.e.Out(gpio.Low))
}

func (w *lcdWriter) byte(rs bool, b byte) {
	w.nibble(rs, b>>4)
	w.nibble(rs, b&0x0f)
}

func (w *lcdWriter) init() {
	for _, n := range []byte{0x3, 0x3, 0x3, 0x2} {
		w.nibble(false, n)
	}
	for _, b := range []byte{0x28, 0x0c, 0x06, 0x01} {
		w.byte(false, b)
	}
}

func (w *lcdWriter) show(lines ...string) {
	for r, l := range lines {
		w.byte(false, 0x80|rowBase[r])
		l += strings.Repeat(" ", max(0, w.cols-len(l)))
		for i := range w.cols {
			w.byte(true, l[i])
		}
	}
}

func wantDisplay(t *testing.T, c *Cabinet, want ...string) {
	t.Helper()
	if got := c.Display(); !reflect.DeepEqual(got, want) {
		t.Fatalf("display %q, want %q", got, want)
	}
	if got := c.Snapshot().Display; !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot display %q, want %q", got, want)
	}
}

func TestLCD(t *testing.T) {
	c := newCabinet(t, testWiring(1), Options{})
	w := newLCDWriter(t, c)
	wantDisplay(t, c, "", "") // off at power-on
	w.init()
	wantDisplay(t, c, "", "")
	w.show("Enter code", "  * clears  # enter")
	wantDisplay(t, c, "Enter code", "  * clears  # enter")

	// A custom character in CGRAM changes nothing visible.
	w.byte(false, 0x40)
	for range 8 {
		w.byte(true, 0x1f)
	}
	w.byte(false, 0x80|0x40|3)
	w.byte(true, 'X')
	wantDisplay(t, c, "Enter code", "  *Xclears  # enter")

	// Clear, home, entry mode decrement, cursor shift.
	w.byte(false, 0x01)
	wantDisplay(t, c, "", "")
	w.byte(true, 'A')
	w.byte(true, 'B')
	w.byte(false, 0x02)
	w.byte(true, 'a')
	w.byte(false, 0x14) // cursor right
	w.byte(true, 'c')
	w.byte(false, 0x80|5)
	w.byte(false, 0x04) // decrement
	w.byte(true, 'z')
	w.byte(true, 'y')
	wantDisplay(t, c, "aBc yz", "")
	w.byte(false, 0x06)

	// Writing past the end of row 0 goes to DDRAM 0x14.., not visible on a
	// 2-row display; row 1 starts at 0x40.
	w.byte(false, 0x80)
	for i := range 30 {
		w.byte(true, byte('a'+i%26))
	}
	wantDisplay(t, c, "abcdefghijklmnopqrst", "")

	// Display off, then on again with the same content.
	w.byte(false, 0x08)
	wantDisplay(t, c, "", "")
	w.byte(false, 0x0c)
	wantDisplay(t, c, "abcdefghijklmnopqrst", "")

	// A stray nibble leaves the controller out of step; the init sequence
	// brings it back, as on a real one.
	w.nibble(false, 0x0)
	w.init()
	w.show("Door 07 open", "")
	wantDisplay(t, c, "Door 07 open", "")

	// Characters outside ASCII.
	w.byte(false, 0x80|0x40)
	for _, b := range []byte{0x7e, 0x00, 0xff, '!'} {
		w.byte(true, b)
	}
	wantDisplay(t, c, "Door 07 open", "→??!")
}

func TestLCDFourRows(t *testing.T) {
	wr := testWiring(1)
	wr.Display.Rows = 4
	c := newCabinet(t, wr, Options{})
	w := newLCDWriter(t, c)
	w.init()
	w.show("one", "two", "three", "four")
	wantDisplay(t, c, "one", "two", "three", "four")
}

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sim", "cabinet.json")
	c := newCabinet(t, testWiring(4), Options{StatePath: path})
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no state file after New: %v", err)
	}
	pulse(t, pinOf(t, c, "LOCK01"), 2*testMinPulse) // released by the coil timer
	if err := c.SetParcel(1, true); err != nil {
		t.Fatal(err)
	}
	if err := c.ForceDoor(3); err != nil {
		t.Fatal(err)
	}
	if err := c.SetFault(4, FaultJammedLock); err != nil {
		t.Fatal(err)
	}
	want := c.Snapshot().Compartments
	_ = c.Halt()

	// A new process finds the cabinet as it was.
	c2 := newCabinet(t, testWiring(4), Options{StatePath: path})
	if got := c2.Snapshot().Compartments; !reflect.DeepEqual(got, want) {
		t.Fatalf("reloaded\n%+v\nwant\n%+v", got, want)
	}

	// A smaller wiring ignores compartment 4, a larger one adds fresh ones.
	c3 := newCabinet(t, testWiring(2), Options{StatePath: path})
	if got := c3.Snapshot().Compartments; !reflect.DeepEqual(got, want[:2]) {
		t.Fatalf("smaller wiring: %+v", got)
	}
	c4 := newCabinet(t, testWiring(6), Options{StatePath: path})
	got := c4.Snapshot().Compartments
	fresh := CompartmentState{Number: 5, Size: "S", Door: DoorClosed, Latched: true, Fault: FaultNone}
	if !reflect.DeepEqual(got[:2], want[:2]) || got[4] != fresh {
		t.Fatalf("larger wiring: %+v", got)
	}

	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("left-over files: %v", entries)
	}
}

func TestCorruptStateFile(t *testing.T) {
	for name, content := range map[string]string{
		"syntax":  `{"version": 1, "compartments": [`,
		"empty":   ``,
		"door":    `{"version": 1, "compartments": [{"number": 1, "door": "ajar", "fault": "none"}]}`,
		"fault":   `{"version": 1, "compartments": [{"number": 1, "door": "open", "fault": "melted"}]}`,
		"version": `{"version": 7, "compartments": []}`,
		"field":   `{"version": 1, "compartments": [], "doors": 3}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cabinet.json")
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := New(testWiring(1), Options{StatePath: path})
			if !errors.Is(err, ErrCorruptState) || !strings.Contains(err.Error(), path) {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestMaxCoilsAtOnce(t *testing.T) {
	w := testWiring(4)
	w.Locks.MaxEnergised = 3
	c := newCabinet(t, w, Options{})
	locks := []gpio.PinIO{pinOf(t, c, "LOCK01"), pinOf(t, c, "LOCK02"), pinOf(t, c, "LOCK03")}
	for _, p := range locks {
		if err := p.Out(gpio.High); err != nil {
			t.Fatal(err)
		}
	}
	if c.CoilsOn() != 3 {
		t.Fatalf("coils on %d", c.CoilsOn())
	}
	if c.BudgetViolations() != 0 {
		t.Fatalf("violations %d within the budget", c.BudgetViolations())
	}
	for _, p := range locks {
		if err := p.Out(gpio.Low); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range locks {
		pulse(t, p, time.Millisecond)
	}
	if c.MaxCoilsAtOnce() != 3 || c.CoilsOn() != 0 {
		t.Fatalf("max %d, on %d", c.MaxCoilsAtOnce(), c.CoilsOn())
	}
	if log := c.PulseLog(); len(log) != 6 || log[0].Compartment != 1 || log[0].End.IsZero() {
		t.Fatalf("pulse log %+v", log)
	}
}

func TestBudgetViolation(t *testing.T) {
	w := testWiring(2) // max_energised 0 in code: taken as 1
	c, err := New(w, Options{MinPulse: testMinPulse})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Halt()
	a, b := pinOf(t, c, "LOCK01"), pinOf(t, c, "LOCK02")
	_ = a.Out(gpio.High)
	_ = b.Out(gpio.High)
	_ = a.Out(gpio.Low)
	_ = b.Out(gpio.Low)
	if c.BudgetViolations() != 1 {
		t.Errorf("violations %d, want 1", c.BudgetViolations())
	}
	if err := c.CheckInvariants(); err == nil || !strings.Contains(err.Error(), "power budget") {
		t.Errorf("CheckInvariants = %v", err)
	}
}

func TestPins(t *testing.T) {
	c := newCabinet(t, testWiring(2), Options{})
	if c.ByName("GPIO17") != nil {
		t.Fatal("ByName of an unknown pin is not nil")
	}
	door := pinOf(t, c, "DOOR02")
	if door.Name() != "DOOR02" || door.String() != "DOOR02" || door.Number() < 0 {
		t.Fatalf("name %s, number %d", door.Name(), door.Number())
	}
	if door.DefaultPull() != gpio.PullUp || pinOf(t, c, "LOCK01").DefaultPull() != gpio.Float {
		t.Fatal("DefaultPull")
	}
	if f := door.(pin.PinFunc).Func(); f != gpio.IN_LOW {
		t.Fatalf("function %s", f)
	}
	lock := pinOf(t, c, "LOCK02")
	if err := lock.Out(gpio.Low); err != nil {
		t.Fatal(err)
	}
	if f := lock.(pin.PinFunc).Func(); f != gpio.OUT_LOW || lock.Read() != gpio.Low {
		t.Fatalf("lock function %s", f)
	}
	if err := lock.(pin.PinFunc).SetFunc(gpio.OUT_HIGH); err != nil || lock.Read() != gpio.High {
		t.Fatalf("SetFunc(OUT_HIGH): %v", err)
	}
	if err := lock.(pin.PinFunc).SetFunc(gpio.OUT_LOW); err != nil {
		t.Fatal(err)
	}
	if err := lock.(pin.PinFunc).SetFunc(gpio.PWM); err == nil {
		t.Fatal("SetFunc(PWM) works")
	}
	if err := lock.PWM(gpio.DutyHalf, 0); err == nil {
		t.Fatal("PWM works")
	}
	if len(c.Pins()) != 2*3+8+6 {
		t.Fatalf("%d pins", len(c.Pins()))
	}

	// WaitForEdge sees the door spring open, times out, and ends on Halt.
	if err := door.In(gpio.PullUp, gpio.RisingEdge); err != nil {
		t.Fatal(err)
	}
	if door.Pull() != gpio.PullUp {
		t.Fatal("pull")
	}
	if door.WaitForEdge(5 * time.Millisecond) {
		t.Fatal("an edge on a quiet door")
	}
	if door.WaitForEdge(-1) {
		t.Fatal("an edge at once")
	}
	go func() {
		_ = lock.Out(gpio.High)
		time.Sleep(2 * testMinPulse)
		_ = lock.Out(gpio.Low)
	}()
	if !door.WaitForEdge(time.Second) {
		t.Fatal("no edge when the door sprang open")
	}
	done := make(chan bool)
	go func() { done <- door.WaitForEdge(0) }()
	time.Sleep(5 * time.Millisecond)
	if err := door.Halt(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		if got {
			t.Fatal("Halt reported an edge")
		}
	case <-time.After(time.Second):
		t.Fatal("Halt did not end WaitForEdge")
	}
}

func TestRegister(t *testing.T) {
	c := newCabinet(t, testWiring(1), Options{})
	if err := c.Register(); err != nil {
		t.Fatal(err)
	}
	defer c.Unregister()
	if gpioreg.ByName("LOCK01") != c.ByName("LOCK01") {
		t.Fatal("LOCK01 not registered")
	}
	// A second cabinet with the same names cannot register, and leaves
	// nothing behind.
	c2 := newCabinet(t, testWiring(1), Options{})
	if err := c2.Register(); err == nil {
		t.Fatal("registered twice")
	}
	c.Unregister()
	if gpioreg.ByName("LOCK01") != nil {
		t.Fatal("LOCK01 still registered")
	}
}

func TestSubscribe(t *testing.T) {
	c := newCabinet(t, testWiring(1), Options{})
	ch, cancel := c.Subscribe()
	defer cancel()
	if err := c.ForceDoor(1); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseDoor(1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("no change notified")
	}
	select {
	case <-ch:
		t.Fatal("a burst was not coalesced")
	default:
	}
	if err := c.CloseDoor(1); err != nil { // no change
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("notified without a change")
	default:
	}
	cancel()
	cancel()
	if err := c.ForceDoor(1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("notified after cancel")
	default:
	}
}

func TestBadWiring(t *testing.T) {
	dup := testWiring(2)
	dup.Compartments[1].Door = "LOCK01"
	noKeys := testWiring(1)
	noKeys.Keypad.Layout = []string{"123", "456", "789", "*0#"}
	gap := testWiring(2)
	gap.Compartments[1].Number = 3
	for name, w := range map[string]*wiring.Wiring{"duplicate": dup, "layout": noKeys, "gap": gap, "nil": nil} {
		if _, err := New(w, Options{}); !errors.Is(err, ErrBadWiring) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDefaultWiring(t *testing.T) {
	w, err := DefaultWiring()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int{}
	for _, k := range w.Compartments {
		sizes[k.Size]++
	}
	if w.Name != "SIM01 default cabinet" || len(w.Compartments) != 24 || !reflect.DeepEqual(sizes, map[string]int{"S": 8, "M": 8, "L": 6, "XL": 2}) {
		t.Fatalf("%s: %d compartments %v", w.Name, len(w.Compartments), sizes)
	}
	if w.Locks.Pulse != 300*time.Millisecond || w.Display.Cols != 20 || w.Display.Rows != 2 {
		t.Fatalf("locks %+v display %+v", w.Locks, w.Display)
	}
	c := newCabinet(t, w, Options{})
	for _, name := range []string{"LOCK01", "DOOR24", "PARCEL12", "KP_R1", "KP_C4", "LCD_RS", "LCD_E", "LCD_D4", "LCD_D7"} {
		pinOf(t, c, name)
	}
	lcd := newLCDWriter(t, c)
	lcd.init()
	lcd.show("Enter code")
	wantDisplay(t, c, "Enter code", "")
}

// TestKill9 kills a process that changed the cabinet with SIGKILL and
// checks that a new one finds the cabinet as it was.
func TestKill9(t *testing.T) {
	if path := os.Getenv("SIMULATOR_KILL9_STATE"); path != "" {
		c, err := New(testWiring(4), Options{StatePath: path, MinPulse: testMinPulse})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		lock := c.ByName("LOCK02")
		_ = lock.Out(gpio.High)
		time.Sleep(3 * testMinPulse) // released by the coil timer; the coil stays on
		_ = c.SetParcel(2, true)
		_ = c.SetFault(3, FaultSensorBounce)
		fmt.Println("ready")
		time.Sleep(time.Minute)
		os.Exit(1)
	}
	if testing.Short() {
		t.Skip("starts a process")
	}
	path := filepath.Join(t.TempDir(), "cabinet.json")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$")
	cmd.Env = append(os.Environ(), "SIMULATOR_KILL9_STATE="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		_ = cmd.Process.Kill()
		t.Fatalf("child: %q %v", line, err)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL on Unix
		t.Fatal(err)
	}
	_ = cmd.Wait()

	c := newCabinet(t, testWiring(4), Options{StatePath: path})
	want := []CompartmentState{
		{Number: 1, Size: "S", Door: DoorClosed, Latched: true, Fault: FaultNone},
		{Number: 2, Size: "S", Door: DoorOpen, Parcel: true, Fault: FaultNone},
		{Number: 3, Size: "S", Door: DoorClosed, Latched: true, Fault: FaultSensorBounce},
		{Number: 4, Size: "S", Door: DoorClosed, Latched: true, Fault: FaultNone},
	}
	if got := c.Snapshot().Compartments; !reflect.DeepEqual(got, want) {
		t.Fatalf("after kill -9:\n%+v\nwant\n%+v", got, want)
	}
	if c.CoilsOn() != 0 {
		t.Fatal("a coil is energised after the restart")
	}
}
