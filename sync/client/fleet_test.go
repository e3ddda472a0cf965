package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/openlocker/locker/internal/waittest"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/client/clienttest"
)

// connectLog records when a link logged "connected".
type connectLog struct {
	mu    *sync.Mutex
	times *[]time.Time
}

func (h connectLog) Enabled(context.Context, slog.Level) bool { return true }
func (h connectLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h connectLog) WithGroup(string) slog.Handler            { return h }
func (h connectLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "connected" {
		h.mu.Lock()
		*h.times = append(*h.times, time.Now())
		h.mu.Unlock()
	}
	return nil
}

// A fleet of 50 links reconnecting after a broker restart spreads its
// reconnects over the back-off window (full jitter) instead of coming back
// in lock-step.
func TestFleetReconnectsSpreadOut(t *testing.T) {
	const fleet = 50
	b := brokertest.Start(t, brokertest.Options{NoPersistence: true})
	var mu sync.Mutex
	conns := make([][]time.Time, fleet)
	links := make([]*client.Link, fleet)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range fleet {
		link, err := client.New(client.Options{Broker: b.URL(), Keys: keys, Locker: clienttest.New(fmt.Sprintf("F%02d", i), 1),
			Logger:     slog.New(connectLog{&mu, &conns[i]}),
			BackoffMin: 100 * time.Millisecond, BackoffMax: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		links[i] = link
		wg.Add(1)
		go func() { defer wg.Done(); link.Run(ctx) }()
	}
	all := func(up bool) func() bool {
		return func() bool {
			for _, l := range links {
				if l.Connected() != up {
					return false
				}
			}
			return true
		}
	}
	waittest.For(t, 10*time.Second, all(true), "the fleet to connect")
	b.Stop()
	waittest.For(t, 5*time.Second, all(false), "the fleet to notice")
	time.Sleep(1500 * time.Millisecond) // attempts fail, ceilings grow
	restarted := time.Now()
	b.Restart(t)
	waittest.For(t, 15*time.Second, all(true), "the fleet to reconnect")

	var at []time.Duration
	mu.Lock()
	for _, ts := range conns {
		if len(ts) != 2 {
			t.Errorf("a link connected %d times", len(ts))
			continue
		}
		at = append(at, ts[1].Sub(restarted))
	}
	mu.Unlock()
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
}
