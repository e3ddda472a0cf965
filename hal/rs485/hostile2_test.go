//go:build linux

package rs485

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/openlocker/locker/hal/rs485/proto"
	"github.com/openlocker/locker/simulator/waittest"
)

// TestSecondUnlockKeepsTheFirstsResolve (found by an attack on the first fix): I15. A Kerong board stalls on
// two status queries (Q1, Q2: two failures in a row, their replies held).
// A keypad code unlocks channel 3 (U3): 1 + 2 good statuses must now come
// before U3 counts as resolved. The board then lets its two held replies go,
// one per query: both are statuses from before U3 (every lock closed).
// Between them a second customer unlocks channel 5 of the same board (U5).
// The first late reply reset the board's failures to 0, so U5 sets the
// board's resolve counter to 1 + 0 = 1, lowering U3's 2 still needed: the
// second late reply — Q2's, from before U3 — clears U3 too. The lock
// worker's retry pulse (the door "reads" shut) then writes U3 a second
// time to a board that has not said one word about anything after U3.
func TestSecondUnlockKeepsTheFirstsResolve(t *testing.T) {
	const addr, chA, chB = 1, 3, 5
	closed, _ := proto.EncodeKerongStatus(proto.KerongStatus{Board: addr})
	var mu sync.Mutex
	var (
		phase   = "normal" // normal, stall, late
		held    [][]byte
		unlocks = map[int]int{}
		sent    int // late replies let go
	)
	var bus *Bus
	errB := make(chan error, 1)
	port := newScriptPort(func(p *scriptPort, f []byte) {
		c, err := proto.DecodeKerongCommand(f)
		if err != nil || c.Board != addr {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if c.Cmd == proto.KerongUnlock {
			unlocks[c.Lock]++
			if c.Lock == chA {
				phase = "late"
			}
			return
		}
		switch phase {
		case "normal":
			p.send(closed)
		case "stall":
			held = append(held, closed) // busy: it answers later
		case "late":
			if len(held) == 0 {
				return // browned out by the coil: silent from now on
			}
			if sent == 0 {
				// A second customer's code for channel 5 comes now.
				go func() { errB <- bus.Unlock(context.Background(), addr, chB) }()
				deadline := time.Now().Add(2 * time.Second)
				for len(bus.unlocks) == 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
			p.send(held[0])
			held = held[1:]
			sent++
		}
	})
	bus = runScript(t, proto.Kerong, addr, 16, port)
	if st, _ := bus.BoardState(addr); !st.Up {
		t.Fatalf("primed: %+v", st)
	}
	mu.Lock()
	phase = "stall"
	mu.Unlock()
	waittest.For(t, 3*time.Second, func() bool { return bus.Stats().Timeouts >= 2 }, "Q1 and Q2 to time out")
	if err := bus.Unlock(context.Background(), addr, chA); err != nil {
		t.Fatal(err)
	}
	if err := <-errB; err != nil {
		t.Fatalf("unlock of channel %d: %v", chB, err)
	}
	// Both late replies read (and maybe U3 cleared by them).
	waittest.For(t, 3*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return sent == 2
	}, "both late replies sent")
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		bus.mu.Lock()
		p := bus.boards[0].pending
		bus.mu.Unlock()
		if p == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	// The lock worker's retry pulse for channel 3.
	uctx, ucancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	err := bus.Unlock(uctx, addr, chA)
	ucancel()
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	n := unlocks[chA]
	mu.Unlock()
	if n != 1 {
		t.Errorf("channel %d unlocked %d times (retry: %v); every status read since its first unlock was a late reply to a query "+
			"written before it (I15: not resent until a status read after it)", chA, n, err)
	}
}
