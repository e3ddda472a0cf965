//go:build linux

package hal

import (
	"context"
	"io"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/openlocker/locker/hal/rs485/proto"
	"github.com/openlocker/locker/hal/rs485/rs485test"
	"github.com/openlocker/locker/hal/rs485/serial"
	"github.com/openlocker/locker/hal/wiring"
)

// TestRS485Cabinet drives a mixed cabinet — two compartments on a Kerong
// board behind a pseudo-terminal, one on GPIO — through hal.New: a
// release sends one unlock frame and ends with LockReleased once the next
// status reads the door open; IR and door changes come as ParcelChanged
// and DoorChanged; a board that stops answering is a SensorFault "board
// BUS1/0" and recovers by itself.
func TestRS485Cabinet(t *testing.T) {
	boards := &rs485test.Boards{Protocol: proto.Kerong, Baud: 19200, Channels: map[int]int{0: 16}}
	w, path := kerongBus(t, `name: t
sensors: {debounce: 30ms, poll: 5ms}
locks: {confirm: 1s, cooldown: 0s}
rs485:
  - {name: BUS1, device: /dev/ttyFAKE0, protocol: kerong, boards: [{address: 0}]}
compartments:
  - {number: 1, size: S, bus: BUS1, board: 0, channel: 1}
  - {number: 2, size: M, bus: BUS1, board: 0, channel: 2}
  - {number: 3, size: L, lock: L3, door: D3}
`, boards)
	pins := map[string]gpio.PinIO{"L3": &fakePin{name: "L3"}, "D3": &fakePin{name: "D3"}}
	var opened string
	h, err := New(w, func(n string) gpio.PinIO { return pins[n] }, Options{OpenSerial: func(dev string, baud int) (io.ReadWriteCloser, error) {
		opened = dev
		return serial.Open(path, baud)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if opened != "/dev/ttyFAKE0" {
		t.Errorf("opened %q", opened)
	}
	if cs := h.Compartments(); !cs[0].HasOccupancy || cs[2].HasOccupancy {
		t.Errorf("occupancy: %+v", cs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	next := func(kind EventKind) Event {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case ev := <-h.Events():
				if ev.Kind == kind {
					return ev
				}
			case <-timeout:
				t.Fatalf("no %v event", kind)
			}
		}
	}

	start := time.Now()
	if err := h.Release(2); err != nil {
		t.Fatal(err)
	}
	if ev := next(DoorChanged); ev.Compartment != 2 || !ev.On {
		t.Errorf("door event %+v", ev)
	}
	if ev := next(LockReleased); ev.Compartment != 2 || ev.Err != nil {
		t.Errorf("release: %+v", ev)
	}
	t.Logf("Release to LockReleased (door read open by status polls, 30ms debounce): %v", time.Since(start).Round(time.Millisecond))
	if n := boards.Unlocks(0, 2); n != 1 {
		t.Errorf("%d unlock frames", n)
	}
	boards.SetIR(0, 1, true)
	if ev := next(ParcelChanged); ev.Compartment != 1 || !ev.On {
		t.Errorf("parcel event %+v", ev)
	}

	boards.Silence(0, true)
	ev := next(SensorFault)
	if ev.Source != "board BUS1/0" || ev.Compartment != 0 || ev.Err == nil {
		t.Errorf("fault %+v", ev)
	}
	// A release while the board is down: the frame goes out, the door
	// cannot be read, the release fails as a lock fault.
	if err := h.Release(1); err != nil {
		t.Fatal(err)
	}
	if ev := next(LockReleased); ev.Compartment != 1 || ev.Err == nil {
		t.Errorf("release on a silent board: %+v", ev)
	} else {
		t.Logf("release on a silent board: %v", ev.Err)
	}
	if n := boards.Unlocks(0, 1); n != 1 {
		t.Errorf("%d unlock frames to a silent board, want 1 (the retry is not sent blind)", n)
	}
	boards.Silence(0, false)
	if ev := next(SensorRecovered); ev.Source != "board BUS1/0" {
		t.Errorf("recovery %+v", ev)
	}
	// The silent board ignored that unlock; a new release works.
	if err := h.Release(1); err != nil {
		t.Fatal(err)
	}
	if ev := next(LockReleased); ev.Compartment != 1 || ev.Err != nil {
		t.Errorf("release after recovery: %+v", ev)
	}
	if n := boards.Unlocks(0, 1); n != 2 {
		t.Errorf("%d unlock frames, want 2", n)
	}
}

// TestBoardSilentAtStart: a board that does not answer when hal.New reads
// it leaves its compartments' sensors unread (Readable false), not "door
// closed, nothing inside"; the first poll reports it (SensorFault "board
// BUS1/0"); once it answers, its readings are the sensors' state with no
// change event (nothing changed that anyone saw) and the board recovers.
// The controller's start-up judges such a compartment only then
// (TestBootWaitsForUnreadSensors). A board whose first reply is cut short
// once is read again, not left unread (TestCrashKill9Kerong under load).
func TestBoardSilentAtStart(t *testing.T) {
	boards := &rs485test.Boards{Protocol: proto.Kerong, Baud: 19200, Channels: map[int]int{0: 16, 1: 16}}
	boards.SetOpen(0, 1, true)
	boards.SetIR(0, 1, true)
	boards.Corrupt(1) // board 0's first reply is bad: read again at start
	boards.Silence(1, true)
	w, path := kerongBus(t, `name: t
sensors: {debounce: 30ms, poll: 5ms}
locks: {confirm: 1s, cooldown: 0s}
rs485:
  - {name: BUS1, device: /dev/ttyFAKE0, protocol: kerong, boards: [{address: 0}, {address: 1}]}
compartments:
  - {number: 1, size: S, bus: BUS1, board: 0, channel: 1}
  - {number: 2, size: S, bus: BUS1, board: 1, channel: 1}
`, boards)
	h, err := New(w, func(string) gpio.PinIO { return nil }, Options{OpenSerial: func(_ string, baud int) (io.ReadWriteCloser, error) {
		return serial.Open(path, baud)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !h.Readable(1) {
		t.Error("compartment 1 unread after one bad reply at start")
	}
	if open, _ := h.DoorOpen(1); !open {
		t.Error("compartment 1's door reads closed")
	}
	if h.Readable(2) {
		t.Error("compartment 2 readable, its board never answered")
	}
	boards.SetOpen(1, 1, true)
	boards.SetIR(1, 1, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var got []Event
	timeout := time.After(5 * time.Second)
	wait := func(kind EventKind) {
		t.Helper()
		for {
			select {
			case ev := <-h.Events():
				got = append(got, ev)
				if ev.Kind == kind {
					return
				}
			case <-timeout:
				t.Fatalf("no %v event; got %+v", kind, got)
			}
		}
	}
	wait(SensorFault)
	if ev := got[len(got)-1]; ev.Source != "board BUS1/1" {
		t.Errorf("fault %+v", ev)
	}
	if h.Readable(2) {
		t.Error("compartment 2 readable while its board is silent")
	}
	boards.Silence(1, false)
	wait(SensorRecovered)
	time.Sleep(100 * time.Millisecond) // longer than the debounce: a change event would have come
	for len(h.Events()) > 0 {
		got = append(got, <-h.Events())
	}
	for _, ev := range got {
		if ev.Kind == DoorChanged || ev.Kind == ParcelChanged {
			t.Errorf("change event %+v for a first reading", ev)
		}
	}
	if !h.Readable(2) {
		t.Fatal("compartment 2 unread after its board answered")
	}
	open, _ := h.DoorOpen(2)
	present, _, _ := h.ParcelPresent(2)
	if !open || !present {
		t.Errorf("compartment 2 reads open %v, parcel %v; the board says both", open, present)
	}
}

// kerongBus parses the wiring yaml and serves boards behind a new
// pseudo-terminal; it returns the wiring and the path hal opens.
func kerongBus(t *testing.T, yaml string, boards *rs485test.Boards) (*wiring.Wiring, string) {
	t.Helper()
	w, err := wiring.Parse([]byte(yaml), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	master, path, err := serial.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	go boards.Serve(master)
	return w, path
}
