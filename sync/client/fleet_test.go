package client_test

import (
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openlocker/locker/sync/client/clienttest"
)

// A fleet of 50 links reconnecting after a broker restart spreads its
// reconnects over the back-off window (full jitter) instead of coming back
// in lock-step. On the fake clock, at the link's real back-off (1 s
// doubling), with the broker down for 10 s.
func TestFleetReconnectsSpreadOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const fleet = 50
		brokers := make([]*fakeBroker, fleet)
		for i := range fleet {
			brokers[i] = newFakeBroker()
			runFakeLink(t, brokers[i], clienttest.New(fmt.Sprintf("F%02d", i), 1), nil, nil)
		}
		synctest.Wait()
		for i, b := range brokers {
			if !b.connected() {
				t.Fatalf("link %d did not connect", i)
			}
		}
		for _, b := range brokers { // the broker stops
			b.setRefuse(true)
			b.cut()
		}
		time.Sleep(10 * time.Second) // attempts fail, ceilings grow
		restarted := time.Now()
		for _, b := range brokers {
			b.setRefuse(false)
		}
		time.Sleep(backoffMax)
		synctest.Wait()

		var at []time.Duration
		for i, b := range brokers {
			conns := b.connTimes()
			if len(conns) != 2 {
				t.Fatalf("link %d connected %d times, want twice", i, len(conns))
			}
			at = append(at, conns[1].Sub(restarted))
		}
		slices.Sort(at)
		spread := at[len(at)-1] - at[0]
		// The most reconnects in any 300 ms window.
		most := 0
		for i := range at {
			j := i
			for j < len(at) && at[j]-at[i] < 300*time.Millisecond {
				j++
			}
			most = max(most, j-i)
		}
		t.Logf("reconnects after the restart from %v to %v (spread %v); at most %d of %d in any 300 ms",
			at[0].Round(time.Millisecond), at[len(at)-1].Round(time.Millisecond), spread.Round(time.Millisecond), most, len(at))
		if spread < time.Second {
			t.Errorf("the fleet reconnected within %v: lock-step", spread)
		}
		if most > len(at)*6/10 {
			t.Errorf("%d of %d reconnects within 300 ms", most, len(at))
		}
	})
}
