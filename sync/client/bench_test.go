package client_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/client/clienttest"
)

// memLocker is an in-memory outbox with cheap reads and batched acks, so
// that the benchmark measures the link, not a store.
type memLocker struct {
	*clienttest.Locker
	mu    sync.Mutex
	evs   []wire.OutboxEvent
	acked map[int64]bool
	done  chan struct{}
}

func newMemLocker(id string, n int) *memLocker {
	m := &memLocker{Locker: clienttest.New(id, 1), acked: map[int64]bool{}, done: make(chan struct{})}
	for i := 1; i <= n; i++ {
		p, _ := json.Marshal(wire.Trace{EventID: fmt.Sprintf("%s-%d", id, i), Seq: int64(i), Time: "2026-11-22T10:03:12.345Z",
			Type: "door_opened", Compartment: 1 + i%24, Content: "Door 07 opened"})
		m.evs = append(m.evs, wire.OutboxEvent{Seq: int64(i), Payload: p})
	}
	return m
}

func (m *memLocker) PendingEvents(_ context.Context, after int64, limit int) ([]wire.OutboxEvent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, _ := slices.BinarySearchFunc(m.evs, after+1, func(e wire.OutboxEvent, s int64) int { return cmp.Compare(e.Seq, s) })
	var out []wire.OutboxEvent
	for ; i < len(m.evs) && len(out) < limit; i++ {
		if !m.acked[m.evs[i].Seq] {
			out = append(out, m.evs[i])
		}
	}
	return out, nil
}

func (m *memLocker) AckEvents(_ context.Context, seqs []int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range seqs {
		m.acked[s] = true
	}
	if len(m.acked) == len(m.evs) {
		select {
		case <-m.done:
		default:
			close(m.done)
		}
	}
	return nil
}

func (m *memLocker) AckEvent(ctx context.Context, seq int64) error {
	return m.AckEvents(ctx, []int64{seq})
}

// BenchmarkDrainBacklog drains 100,000 traces to Mosquitto through the link
// (20 in flight, the most the link allows) and, as the baseline in the same
// run, publishes the same payloads with raw paho QoS 1 and 100 in flight.
// The broker allows 100 in flight (max_inflight_messages 100) so that the
// baseline is not held back by it; the link stays at its own bound of 20.
func BenchmarkDrainBacklog(b *testing.B) {
	const n = 100_000
	br := brokertest.Start(b, brokertest.Options{NoPersistence: true, Extra: []string{"max_inflight_messages 100"}})
	var linkTime, rawTime time.Duration
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("BENCH%d", i)
		m := newMemLocker(id, n)
		link, err := client.New(client.Options{Broker: br.URL(), Keys: keys, Locker: m, InFlight: client.MaxInFlight,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		start := time.Now()
		go func() { link.Run(ctx); close(stopped) }()
		select {
		case <-m.done:
		case <-time.After(2 * time.Minute):
			b.Fatal("the link did not drain within 2 min")
		}
		linkTime += time.Since(start)
		cancel()
		<-stopped

		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(br.URL()).SetClientID("raw-" + id).SetCleanSession(true))
		start = time.Now()
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
		topic := "lockers/v1/" + id + "/traces"
		var window []mqtt.Token
		for _, ev := range m.evs {
			if len(window) == 100 {
				if !window[0].WaitTimeout(10*time.Second) || window[0].Error() != nil {
					b.Fatal("raw publish failed")
				}
				window = window[1:]
			}
			window = append(window, c.Publish(topic, 1, false, []byte(ev.Payload)))
		}
		for _, tok := range window {
			tok.WaitTimeout(10 * time.Second)
		}
		rawTime += time.Since(start)
		c.Disconnect(0)
	}
	linkRate := float64(n*b.N) / linkTime.Seconds()
	rawRate := float64(n*b.N) / rawTime.Seconds()
	b.ReportMetric(linkRate, "link-events/s")
	b.ReportMetric(rawRate, "paho100-events/s")
	b.ReportMetric(linkRate/rawRate, "ratio")
	b.ReportMetric(0, "ns/op")
}
