//go:build linux

package main

// End-to-end on RS485 cabinets: locker-sim with the Kerong wiring, its
// boards simulated behind a pseudo-terminal that the daemon's termios code
// opens, and with a device that exists (here a board emulator of the
// test's own on another pty) that the daemon then drives instead.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal/rs485/proto"
	"github.com/openlocker/locker/simulator/api"
	"github.com/openlocker/locker/simulator/rs485"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/protocol"
)

// kerongWiring writes the 48-door Kerong wiring with its bus on device.
func kerongWiring(t *testing.T, device string) string {
	t.Helper()
	b, err := os.ReadFile("../../testdata/wiring/kerong-48.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "/dev/ttyUSB0") {
		t.Fatal("kerong-48.yaml no longer names /dev/ttyUSB0")
	}
	path := filepath.Join(t.TempDir(), "kerong-48.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), "/dev/ttyUSB0", device)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *sim) rs485() api.RS485 {
	var v api.RS485
	if code := s.call("GET", "/api/rs485", nil, &v); code != 200 {
		s.t.Fatalf("GET /api/rs485: %d", code)
	}
	return v
}

// waitFrame waits until the bus view has a frame that match accepts.
func (s *sim) waitFrame(what string, match func(rs485.Frame) bool) rs485.Frame {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, b := range s.rs485().Buses {
			for _, f := range b.Frames {
				if match(f) {
					return f
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("no frame %s on the bus", what)
	return rs485.Frame{}
}

func TestRS485KerongCabinetDepositAndPickup(t *testing.T) {
	t.Parallel()
	b := brokertest.Start(t, brokertest.Options{})
	data := t.TempDir()
	const locker = "SIM01"
	prefix := "lockers/v1/" + locker + "/"
	c := newCentral(t, b.URL(), "central-rs485", prefix+"#")
	s := startSim(t, b.URL(), data, "-config", kerongWiring(t, filepath.Join(t.TempDir(), "ttyUSB-none")))

	view := s.rs485()
	if len(view.Buses) != 1 || len(view.Real) != 0 || view.Buses[0].Protocol != "kerong" || view.Buses[0].Baud != 19200 ||
		!strings.HasPrefix(view.Buses[0].PTY, "/dev/pts/") || len(view.Buses[0].Boards) != 3 {
		t.Fatalf("bus view %+v: want one simulated Kerong bus of three boards on a pty", view)
	}
	if !strings.Contains(s.logs.String(), "simulated kerong boards on /dev/pts/") {
		t.Fatalf("locker-sim does not say where its boards are:\n%s", s.logs.String())
	}
	if cab := s.cabinet(); len(cab.Compartments) != 48 {
		t.Fatalf("%d compartments, want 48", len(cab.Compartments))
	}
	c.wait("online status", func(m msg) bool {
		return m.Topic == prefix+"status" && strings.Contains(string(m.Payload), `"online"`)
	})
	kp, err := protocol.LoadKeyPair(filepath.Join(data, "central-dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	c.publish(prefix+"grants", sealWith(t, kp.KeyID, kp.Private,
		grantsBody(locker, now, depositWithPickup(locker, "g-1001", "123456", "654321", now))))
	c.wait("grants ack", func(m msg) bool { return m.Topic == prefix+"grants/ack" })

	// The first M compartment is 17: board 1, lock 1.
	s.keys("123456#")
	if n := s.waitOpenDoor(); n != 17 {
		t.Fatalf("deposit opened %d, want 17", n)
	}
	unlock := s.waitFrame("unlock of board 1 lock 1", func(f rs485.Frame) bool { return f.Hex == "02 10 31 03 46" })
	if unlock.Dir != rs485.ToBoard || unlock.Text != "board 1 lock 1: unlock" || unlock.Err != "" {
		t.Fatalf("unlock frame %+v", unlock)
	}
	s.do(17, "parcel", map[string]bool{"present": true})
	s.do(17, "door", map[string]string{"action": "close"})
	if dep := c.waitTrace("deposited", nil); dep.Compartment != 17 || dep.GrantID != "g-1001" {
		t.Fatalf("deposited = %+v", dep)
	}
	// The board's infrared bit shows the parcel: lock 1 of board 1.
	s.waitFrame("status with the parcel", func(f rs485.Frame) bool { return f.Text == "board 1 status: open none, parcels 1" })

	s.keys("654321#")
	if n := s.waitOpenDoor(); n != 17 {
		t.Fatalf("pickup opened %d, want 17", n)
	}
	s.do(17, "parcel", map[string]bool{"present": false})
	s.do(17, "door", map[string]string{"action": "close"})
	pu := c.waitTrace("picked_up", nil)
	if pu.Compartment != 17 || pu.GrantID != "g-1001-p" {
		t.Fatalf("picked_up = %+v", pu)
	}

	// Bus faults through the API: a board that stops answering is seen
	// by the daemon (a sensor_fault naming it), and answers again.
	var st rs485.BoardState
	if code := s.call("POST", "/api/rs485/BUS1/boards/2/fault", map[string]string{"fault": "no_answer"}, &st); code != 200 || st.Fault != rs485.FaultNoAnswer {
		t.Fatalf("fault: %d %+v", code, st)
	}
	// Its failures say "no reply", or, on a loaded machine whose simulated
	// boards answer late, "asked board 2, board 1 answered" (a make test
	// run): the fault names the board either way.
	c.waitTrace("sensor_fault", func(tr wire.Trace) bool {
		return tr.Seq > pu.Seq && strings.Contains(tr.Reason, "board 2")
	})
	if code := s.call("POST", "/api/rs485/BUS1/boards/2/fault", map[string]string{"fault": "none"}, &st); code != 200 {
		t.Fatalf("clear: %d", code)
	}
	if code := s.call("POST", "/api/rs485/BUS1/boards/0/power-cycle", map[string]int{"off_ms": 300}, &st); code != 200 || !st.Off {
		t.Fatalf("power-cycle: %d %+v", code, st)
	}
	s.waitFrame("an unanswered status while board 0 is off", func(f rs485.Frame) bool { return strings.Contains(f.Err, "power cycle") })
	var e map[string]string
	if code := s.call("POST", "/api/rs485/BUS1/boards/7/fault", map[string]string{"fault": "none"}, &e); code != 404 {
		t.Fatalf("fault on a missing board: %d %v", code, e)
	}
	if code := s.call("POST", "/api/rs485/BUS1/boards/0/fault", map[string]string{"fault": "smoke"}, &e); code != 400 {
		t.Fatalf("unknown fault: %d %v", code, e)
	}
}

// boardsBench is the physics of a bench: boards on a table, a lock
// whose feedback reads open once unlocked.
type boardsBench struct {
	mu   stdsync.Mutex
	open map[[2]int]bool
}

func (p *boardsBench) Unlock(board, ch int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open[[2]int{board, ch}] = true
}

func (p *boardsBench) Sense(board, ch int) (open, parcel, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open[[2]int{board, ch}], false, true
}

// TestRS485ExistingDeviceIsDriven: a wiring whose device exists is a real
// board on the technician's bench: locker-sim does not simulate it, the
// daemon drives it, and the page shows what the board reports.
func TestRS485ExistingDeviceIsDriven(t *testing.T) {
	t.Parallel()
	bench := &boardsBench{open: map[[2]int]bool{}}
	boards, err := rs485.New(rs485.Config{Name: "bench", Protocol: proto.Kerong, LockOpenBit: 1, Physics: bench,
		Boards: []rs485.Board{{Address: 0, Channels: 16}, {Address: 1, Channels: 16}, {Address: 2, Channels: 16}}})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := boards.ServePTY()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { boards.Close() })

	b := brokertest.Start(t, brokertest.Options{})
	data := t.TempDir()
	c := newCentral(t, b.URL(), "central-bench", "lockers/v1/SIM01/#")
	s := startSim(t, b.URL(), data, "-config", kerongWiring(t, dev))
	c.wait("online status", func(m msg) bool {
		return m.Topic == "lockers/v1/SIM01/status" && strings.Contains(string(m.Payload), `"online"`)
	})
	view := s.rs485()
	if len(view.Buses) != 0 || len(view.Real) != 1 || view.Real[0].Device != dev {
		t.Fatalf("bus view %+v: want the real device %s", view, dev)
	}
	if code := s.call("POST", "/api/rs485/BUS1/boards/0/fault", map[string]string{"fault": "no_answer"}, nil); code != 404 {
		t.Fatalf("a fault on a real board: %d, want 404", code)
	}
	// A technician opens compartment 20 (board 1, lock 4) with a command.
	var res json.RawMessage
	if code := s.call("POST", "/api/central/commands", map[string]any{"action": "open", "compartment": 20}, &res); code != 200 {
		t.Fatalf("command: %d %s", code, res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := s.cabinet().Compartments[19]
		if c.External && c.Door == "open" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("compartment 20 = %+v: want external, open as the board reports", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var unlocked bool
	for _, f := range boards.Frames() {
		unlocked = unlocked || f.Hex == "02 13 31 03 49"
	}
	if !unlocked {
		t.Fatal("the board on the device never received the unlock of board 1 lock 4")
	}

	// The page's frame view of the real bus: what the daemon wrote and
	// read, decoded, with what went wrong.
	realFrame := func(what string, match func(rs485.Frame) bool) rs485.Frame {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			for _, f := range s.rs485().Real[0].Frames {
				if match(f) {
					return f
				}
			}
		}
		t.Fatalf("no frame %s in the real bus's view: %+v", what, s.rs485().Real[0].Frames)
		return rs485.Frame{}
	}
	// The frames are the last 200: the unlock may have scrolled out, so
	// open another compartment (21: board 1, lock 5).
	if code := s.call("POST", "/api/central/commands", map[string]any{"action": "open", "compartment": 21}, &res); code != 200 {
		t.Fatalf("command: %d %s", code, res)
	}
	if f := realFrame("unlock of board 1 lock 5", func(f rs485.Frame) bool { return f.Hex == "02 14 31 03 4A" }); f.Dir != rs485.ToBoard ||
		f.Text != "board 1 lock 5: unlock" || f.Err != "" || f.Bus != "BUS1" {
		t.Fatalf("unlock frame %+v", f)
	}
	realFrame("a status of board 1 with locks 4 and 5 open", func(f rs485.Frame) bool {
		return f.Dir == rs485.FromBoard && f.Err == "" && strings.HasPrefix(f.Text, "board 1 status: open 4 5,")
	})
	if err := boards.SetFault(2, rs485.FaultBadChecksum); err != nil {
		t.Fatal(err)
	}
	realFrame("a bad checksum from board 2", func(f rs485.Frame) bool {
		return f.Dir == rs485.FromBoard && strings.Contains(f.Err, "checksum")
	})
	if err := boards.SetFault(2, rs485.FaultNoAnswer); err != nil {
		t.Fatal(err)
	}
	realFrame("a time-out of board 2", func(f rs485.Frame) bool {
		return f.Dir == rs485.FromBoard && strings.Contains(f.Err, "no reply") && f.Hex == ""
	})
}
