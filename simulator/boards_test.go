//go:build linux

package simulator

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/openlocker/locker/hal/rs485/proto"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator/rs485"
)

func kerong48(t *testing.T, opts Options) *Cabinet {
	t.Helper()
	w, err := wiring.Load("../testdata/wiring/kerong-48.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cab, err := New(w, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cab.Halt() })
	return cab
}

// TestBoardUnlockReleasesTheLatch: an unlock frame on the pty fires the
// compartment's coil for the board's pulse (echoed with a status), within
// the power budget, and the door springs ajar; the status then reads it
// open with its parcel; a jammed latch holds and reads closed.
func TestBoardUnlockReleasesTheLatch(t *testing.T) {
	cab := kerong48(t, Options{})
	if len(cab.RS485()) != 1 || cab.RS485Bus("BUS1") == nil || len(cab.RealBuses()) != 0 || cab.External(17) {
		t.Fatalf("buses %v, real %v", cab.RS485(), cab.RealBuses())
	}
	port, err := cab.OpenSerial("/dev/ttyUSB0", 19200)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	p := port.(interface{ SetReadDeadline(time.Time) error })
	read := func(n int) []byte {
		t.Helper()
		p.SetReadDeadline(time.Now().Add(3 * time.Second))
		var got []byte
		buf := make([]byte, 32)
		for len(got) < n {
			k, err := port.Read(buf)
			got = append(got, buf[:k]...)
			if err != nil {
				t.Fatalf("after % x: %v", got, err)
			}
		}
		return got
	}
	if err := cab.SetFault(18, FaultJammedLock); err != nil {
		t.Fatal(err)
	}
	for _, lock := range []int{1, 2} { // compartments 17 and 18
		f, _ := proto.KerongUnlockFrame(1, lock)
		port.Write(f)
		if _, err := proto.DecodeKerongStatus(read(9), 1); err != nil {
			t.Fatalf("echo: %v", err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			s, _ := cab.Stats(16 + lock)
			if s.Pulses == 1 && !s.Energised {
				if s.LastPulse < cab.boardPulse || s.LastPulse > wiring.MaxPulse {
					t.Fatalf("compartment %d: pulse %v, want the board's %v", 16+lock, s.LastPulse, cab.boardPulse)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("compartment %d: stats %+v", 16+lock, s)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	c17, _ := cab.Compartment(17)
	c18, _ := cab.Compartment(18)
	if c17.Door != DoorOpen || c17.Latched || c18.Door != DoorClosed || !c18.Latched {
		t.Fatalf("17 %+v, 18 %+v: want 17 ajar, 18 jammed shut", c17, c18)
	}
	if err := cab.SetParcel(17, true); err != nil {
		t.Fatal(err)
	}
	q, _ := proto.KerongStatusFrame(1)
	port.Write(q)
	st, err := proto.DecodeKerongStatus(read(9), 1)
	if err != nil || !st.LockBit(1) || st.LockBit(2) || !st.IRBit(1) || st.IRBit(2) {
		t.Fatalf("status %+v, %v: want lock 1 open with a parcel, lock 2 closed", st, err)
	}
	// A stuck-closed door sensor is the board's feedback too.
	if err := cab.SetFault(17, FaultSensorStuckClosed); err != nil {
		t.Fatal(err)
	}
	port.Write(q)
	if st, _ := proto.DecodeKerongStatus(read(9), 1); st.LockBit(1) {
		t.Fatal("a feedback stuck closed reads open")
	}
	if err := cab.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// TestBoardSilentUnlock: boards that answer nothing to an unlock (as some
// Kerong boards do) still fire the coil; the next status reads it open.
func TestBoardSilentUnlock(t *testing.T) {
	cab := kerong48(t, Options{KerongSilentUnlock: true})
	port, err := cab.OpenSerial("/dev/ttyUSB0", 19200)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	p := port.(interface{ SetReadDeadline(time.Time) error })
	f, _ := proto.KerongUnlockFrame(0, 3) // compartment 3
	port.Write(f)
	p.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 32)
	if k, err := port.Read(buf); k > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the unlock was answered: % x, %v", buf[:k], err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if c, _ := cab.Compartment(3); c.Door == DoorOpen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("compartment 3 did not open")
		}
		time.Sleep(5 * time.Millisecond)
	}
	q, _ := proto.KerongStatusFrame(0)
	port.Write(q)
	p.SetReadDeadline(time.Now().Add(3 * time.Second))
	var got []byte
	for len(got) < 9 {
		k, err := port.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			t.Fatalf("after % x: %v", got, err)
		}
	}
	if st, err := proto.DecodeKerongStatus(got, 0); err != nil || !st.LockBit(3) {
		t.Fatalf("status %+v, %v: want lock 3 open", st, err)
	}
}

// TestBoardOnARealDevice: a bus whose device is real is not simulated;
// its compartments are external, and OpenSerial opens the device itself.
func TestBoardOnARealDevice(t *testing.T) {
	cab := kerong48(t, Options{RealDevice: func(dev string) bool { return dev == "/dev/ttyUSB0" }})
	if len(cab.RS485()) != 0 || len(cab.RealBuses()) != 1 || !cab.External(1) || !cab.External(48) {
		t.Fatalf("simulated %d, real %v, external(1) %v", len(cab.RS485()), cab.RealBuses(), cab.External(1))
	}
	if _, err := cab.OpenSerial("/dev/ttyUSB0", 19200); err == nil {
		t.Fatal("opened /dev/ttyUSB0 on a machine without it")
	}
	// A real device that is a pty: OpenSerial opens it.
	bus, err := rs485.New(rs485.Config{Protocol: proto.Kerong, Physics: nullBoardPhysics{}, Boards: []rs485.Board{{Address: 0, Channels: 16}}})
	if err != nil {
		t.Fatal(err)
	}
	path, err := bus.ServePTY()
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	port, err := cab.OpenSerial(path, 19200)
	if err != nil {
		t.Fatal(err)
	}
	port.Close()
}

type nullBoardPhysics struct{}

func (nullBoardPhysics) Unlock(int, int)                   {}
func (nullBoardPhysics) Sense(int, int) (bool, bool, bool) { return false, false, true }
