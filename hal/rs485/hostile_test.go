//go:build linux

package rs485

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openlocker/locker/hal/rs485/proto"
	"github.com/openlocker/locker/simulator/waittest"
)

// scriptPort is a serial port whose far side is a Go function: every frame
// the bus writes is handed to onWrite (on the bus worker's goroutine), which
// may queue bytes for the bus to read. It lets a test say exactly what
// arrives after which frame, without the timing of a pty and an emulator.
type scriptPort struct {
	in        chan []byte
	closeOnce sync.Once
	closed    chan struct{}
	onWrite   func(p *scriptPort, f []byte)
}

func newScriptPort(onWrite func(p *scriptPort, f []byte)) *scriptPort {
	return &scriptPort{in: make(chan []byte, 64), closed: make(chan struct{}), onWrite: onWrite}
}

func (p *scriptPort) send(b []byte) { p.in <- append([]byte(nil), b...) }

func (p *scriptPort) Read(buf []byte) (int, error) {
	select {
	case b := <-p.in:
		return copy(buf, b), nil
	case <-p.closed:
		return 0, io.EOF
	}
}

func (p *scriptPort) Write(f []byte) (int, error) {
	select {
	case <-p.closed:
		return 0, io.ErrClosedPipe
	default:
	}
	p.onWrite(p, append([]byte(nil), f...))
	return len(f), nil
}

func (p *scriptPort) Close() error { p.closeOnce.Do(func() { close(p.closed) }); return nil }

// runScript starts a bus of one board (addr, channels) of protocol p on
// port: New, Prime and Run, stopped when the test ends.
func runScript(t *testing.T, p proto.Protocol, addr, channels int, port *scriptPort) *Bus {
	t.Helper()
	bus, err := New(Config{Name: "BUS1", Protocol: p, OpenBit: true, Boards: []Board{{Address: addr, Channels: channels}}},
		func() (io.ReadWriteCloser, error) { return port, nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	if err := bus.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { defer close(done); _ = bus.Run(ctx) }()
	return bus
}

// TestStaleReplyDoesNotResolveAnUnlock (found by an attack): I15. A Kerong board stalls on a status
// query (Q1): the bus times out, waits for a quiet line and moves on. A
// keypad code then sends an unlock (U1); the board browns out on the coil
// and never answers again. Its late reply to Q1 — the status from *before*
// the unlock, lock closed — reaches the line just after the bus wrote its
// next query (Q2). The bus takes it for Q2's reply, "a status read after the
// unlock", clears the unlock's pending bit, and so lets a second unlock of
// the same lock (the lock worker's retry pulse: the door "reads" shut) go
// to a board that has not said one word since the first. I15: "another
// unlock of that lock is refused (ErrUnresolved) until a status of its
// board was read after it, and the hal's retry pulse is never sent blind
// to a board that does not answer".
func TestStaleReplyDoesNotResolveAnUnlock(t *testing.T) {
	const addr, ch = 1, 3
	var mu sync.Mutex
	var (
		stall, dead    bool
		held           []byte // the stalled reply to Q1
		unlocks        int
		queriesAfterU1 int
		staleSent      bool
	)
	closed, _ := proto.EncodeKerongStatus(proto.KerongStatus{Board: addr}) // every lock closed
	port := newScriptPort(func(p *scriptPort, f []byte) {
		c, err := proto.DecodeKerongCommand(f)
		if err != nil || c.Board != addr {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case c.Cmd == proto.KerongUnlock:
			unlocks++
			dead = true // the coil's inrush browns the board out: silent from now on
		case dead:
			queriesAfterU1++
			if held != nil { // Q1's reply, late, lands just after Q2 went out
				p.send(held)
				held, staleSent = nil, true
			}
		case stall:
			if held == nil {
				held = closed // the board is busy: it answers Q1 later
			}
		default:
			p.send(closed)
		}
	})
	bus := runScript(t, proto.Kerong, addr, 16, port)
	if st, _ := bus.BoardState(addr); !st.Up {
		t.Fatalf("primed: %+v", st)
	}

	mu.Lock()
	stall = true
	mu.Unlock()
	waittest.For(t, 3*time.Second, func() bool { return bus.Stats().Timeouts >= 1 }, "Q1 to time out")
	if err := bus.Unlock(context.Background(), addr, ch); err != nil {
		t.Fatal(err)
	}
	// Let the bus read what comes after the unlock: the stale reply, then
	// silence (three queries: the board is down by then).
	waittest.For(t, 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return queriesAfterU1 >= 4 }, "4 queries after the unlock")
	mu.Lock()
	if !staleSent {
		t.Fatal("the stale reply was not sent")
	}
	mu.Unlock()

	// The lock worker's retry pulse.
	err := bus.Unlock(context.Background(), addr, ch)
	time.Sleep(100 * time.Millisecond) // let the worker write it, if it does
	mu.Lock()
	n := unlocks
	mu.Unlock()
	st, _ := bus.BoardState(addr)
	if !errors.Is(err, ErrUnresolved) || n != 1 {
		t.Errorf("second unlock of board %d channel %d after a board that answered nothing since the first: err %v, %d unlock frames on the wire (want ErrUnresolved and 1); board state %+v",
			addr, ch, err, n, st)
	}
}

// TestSilentBoardDoesNotStarveTheBus (found by an attack): I16 (and I7 through it). After an
// unlock, the bus reads that board's status next (pollNext). If the board
// never answers again (it died, or its power went with the coil), pollNext
// is never cleared, and pollTarget picks that board before the round robin
// every time: no other board on the bus is ever polled again. They stay
// Up with their last status, so their doors and parcels are frozen at it —
// a door opened on board 0 is never seen (no door_opened, no deposit or
// pickup recorded, no door_forced) while the bus reports board 0 healthy.
// I16: "a board failing 3 polls in a row is down … keeps its last state
// unread" — board 0 fails nothing, it is just never read again, and is
// taken as read.
func TestSilentBoardDoesNotStarveTheBus(t *testing.T) {
	r := newRig(t, proto.Kerong, map[int]int{0: 16, 1: 16}, loadedMachine)
	waittest.For(t, 3*time.Second, func() bool { return r.state(0).Polls > 0 && r.state(1).Polls > 0 }, "a first poll of each board")
	r.boards.Silence(1, true) // board 1 dies (or loses its power) as the unlock goes out
	if err := r.bus.Unlock(context.Background(), 1, 2); err != nil {
		t.Fatal(err)
	}
	waittest.For(t, 5*time.Second, func() bool { return !r.state(1).Up }, "board 1 down")
	polls := r.state(0).Polls
	r.boards.SetOpen(0, 5, true) // a door of board 0 opens
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && r.state(0).Open&(1<<4) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if s := r.state(0); s.Open&(1<<4) == 0 {
		t.Errorf("board 0 not polled for 3s while board 1 is down after an unlock: polls %d → %d, state %+v (Up %v with its old status: door 5 still reads shut)",
			polls, s.Polls, s, s.Up)
	}
}

// TestLongReplyIsNotCutShort (found by an attack): I16 ("replies … decode whole"; a frame that
// is not the board's status is a failure, never taken as status). An 8A/80
// board of 32 channels wired with 24 (the locks in use; the wiring accepts
// any count 1–64, and the protocol says a reply's length is the board's and
// ends by silence) answers with four status bytes, S4 S3 S2 S1. The bus cuts
// the reply at the length the wiring implies (Groups8A80(24) = 3) and, when
// S1 = 33 (channels 1, 2, 5 and 6 open) and S4^S3^S2 = 80^ADDR, the cut
// "checks out": the real trailer 33 is read as its checksum. The status
// taken is S4 S3 S2 — every channel shifted by eight — with no error:
// doors 2, 5, 6, 9 and 24, open, read shut, and door 16, shut, reads open.
// So the lock worker's confirmation, door_opened and door_forced, and the
// status that resolves an unlock (I15) run on another door's bits.
func TestLongReplyIsNotCutShort(t *testing.T) {
	const addr = 1
	const board = uint64(0x00_80_01_33) // S4 S3 S2 S1: channels 1, 2, 5, 6, 9 and 24 open
	reply, err := proto.EncodeStatus8A80(proto.Status8A80{Addr: addr, Groups: 4, Bits: board})
	if err != nil {
		t.Fatal(err)
	}
	port := newScriptPort(func(p *scriptPort, f []byte) {
		if c, err := proto.DecodeCommand8A80(f); err == nil && c.Head == proto.Head8A80Query && c.Addr == addr {
			p.send(reply) // one burst: the whole eight bytes are there at once
		}
	})
	bus, err := New(Config{Name: "BUS1", Protocol: proto.P8A80, OpenBit: true, Boards: []Board{{Address: addr, Channels: 24}}},
		func() (io.ReadWriteCloser, error) { return port, nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := bus.Prime(ctx); err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	st, _ := bus.BoardState(addr)
	if want := board & (1<<24 - 1); st.Up && st.Open != want {
		t.Errorf("8-byte reply % x of a board wired with 24 channels: taken as status, open %024b; the board says %024b", reply, st.Open, want)
	}
	if st.Up || st.Err == nil || !strings.Contains(st.Err.Error(), "answers 4 status bytes (32 channels), the wiring gives it 24 channels") {
		t.Errorf("a 32-channel board wired with 24: state %+v, want down with an error that says so", st)
	}
}

// A board swapped while the locker runs for one with more channels (found
// by an attack on the first fix): the old board goes silent, so it is down;
// the new one's first reply is read to the end and checked against the
// wiring, in one read or two, never cut at the old length (where its
// checksum happens to hold) and taken with every channel shifted. Its last
// good status stays.
func TestSwappedBoardIsCheckedAgain(t *testing.T) {
	const addr = 1
	good, err := proto.EncodeStatus8A80(proto.Status8A80{Addr: addr, Groups: 3, Bits: 0x00_00_01})
	if err != nil {
		t.Fatal(err)
	}
	long, err := proto.EncodeStatus8A80(proto.Status8A80{Addr: addr, Groups: 4, Bits: 0x00_80_01_33})
	if err != nil {
		t.Fatal(err)
	}
	for _, reads := range [][][]byte{{long}, {long[:7], long[7:]}} {
		t.Run(fmt.Sprintf("%d reads", len(reads)), func(t *testing.T) {
			var mu sync.Mutex
			reply := [][]byte{good}
			port := newScriptPort(func(p *scriptPort, f []byte) {
				if c, err := proto.DecodeCommand8A80(f); err == nil && c.Head == proto.Head8A80Query && c.Addr == addr {
					mu.Lock()
					defer mu.Unlock()
					for _, b := range reply {
						p.send(b) // one USB read each
					}
				}
			})
			bus := runScript(t, proto.P8A80, addr, 24, port)
			if st, _ := bus.BoardState(addr); !st.Up || st.Open != 1 {
				t.Fatalf("a 24-channel reply: %+v, want up with channel 1 open", st)
			}
			mu.Lock()
			reply = nil // unplugged
			mu.Unlock()
			waittest.For(t, 5*time.Second, func() bool { st, _ := bus.BoardState(addr); return !st.Up }, "the board down")
			polls := bus.Stats().Polls + bus.Stats().Malformed
			mu.Lock()
			reply = reads // the bigger board
			mu.Unlock()
			waittest.For(t, 5*time.Second, func() bool { return bus.Stats().Malformed >= 3 }, "the new board's replies read")
			st, _ := bus.BoardState(addr)
			if st.Up || st.Open != 1 || st.Err == nil || !strings.Contains(st.Err.Error(), "answers 4 status bytes (32 channels), the wiring gives it 24 channels") {
				t.Errorf("a 32-channel board in place of a 24-channel one (%d polls before): %+v, want down with its last status (channel 1 open) and an error that says why", polls, st)
			}
		})
	}
}

// An unlock whose caller gave up while it waited behind a stuck
// transaction (a write that blocks on a wedged adapter) is never written:
// its release has ended with a lock fault, and a door opening long after
// would not be its (I15's late opening is credited for a minute only). Its
// lock is not left unresolved either: the next unlock of it goes out.
func TestAbandonedUnlockIsNeverWritten(t *testing.T) {
	const addr, ch = 1, 3
	closed, _ := proto.EncodeKerongStatus(proto.KerongStatus{Board: addr})
	var mu sync.Mutex
	var unlocks int
	wedge := make(chan struct{})
	var wedged sync.Once
	stuck := make(chan struct{})
	block := false
	port := newScriptPort(func(p *scriptPort, f []byte) {
		c, err := proto.DecodeKerongCommand(f)
		if err != nil || c.Board != addr {
			return
		}
		mu.Lock()
		if c.Cmd == proto.KerongUnlock {
			unlocks++
		}
		b := block
		mu.Unlock()
		if b && c.Cmd != proto.KerongUnlock {
			wedged.Do(func() { close(stuck) })
			<-wedge // the adapter's write hangs
		}
		p.send(closed)
	})
	bus := runScript(t, proto.Kerong, addr, 16, port)

	mu.Lock()
	block = true
	mu.Unlock()
	<-stuck
	uctx, ucancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := bus.Unlock(uctx, addr, ch)
	ucancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unlock behind a wedged write: %v, want its deadline", err)
	}
	mu.Lock()
	block = false
	mu.Unlock()
	close(wedge)
	time.Sleep(200 * time.Millisecond) // the worker goes on: it would write it now
	mu.Lock()
	n := unlocks
	mu.Unlock()
	if n != 0 {
		t.Errorf("%d unlock frames written for an unlock its caller gave up on before it was taken", n)
	}
	if err := bus.Unlock(context.Background(), addr, ch); err != nil {
		t.Errorf("the next unlock of the lock: %v, want it written", err)
	}
	mu.Lock()
	n = unlocks
	mu.Unlock()
	if n != 1 {
		t.Errorf("%d unlock frames after the next unlock, want 1", n)
	}
}
