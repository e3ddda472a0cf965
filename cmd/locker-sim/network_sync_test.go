package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/central"
	"github.com/openlocker/locker/sync/protocol"
)

// listener is the central server's trace listener: a persistent session
// (clean session off, a fixed client id) that reconnects by itself, so that
// it misses nothing while the broker restarts.
type listener struct {
	mu     stdsync.Mutex
	traces []wire.Trace // in order of arrival, duplicates included
}

func newListener(t *testing.T, broker, topic string) *listener {
	t.Helper()
	l := &listener{}
	central.DialTest(t, central.Options{Broker: broker, ClientID: "central-listener", Persistent: true,
		Reconnect: true, RetryInterval: 100 * time.Millisecond, MaxReconnectInterval: 300 * time.Millisecond,
		Subscribe: []string{topic}, OnMessage: func(m central.Message) {
			var tr wire.Trace
			if err := json.Unmarshal(m.Payload, &tr); err != nil {
				t.Errorf("trace is not JSON: %s", m.Payload)
				return
			}
			l.mu.Lock()
			l.traces = append(l.traces, tr)
			l.mu.Unlock()
		}})
	return l
}

func (l *listener) all() []wire.Trace {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]wire.Trace(nil), l.traces...)
}

// distinct returns the first occurrence of each event_id, in arrival order.
func (l *listener) distinct() []wire.Trace { return central.Distinct(l.all()) }

// TestNetworkCutsBrokerRestartAndCrash: deposits and pickups go on through
// the HTTP API while the network to the broker is cut again and again, the
// broker restarts once and the locker is killed with SIGKILL once. At the end
// the central's listener has every event exactly once after de-duplication
// by event_id, seq gapless from 1, and the first occurrences in seq order.
func TestNetworkCutsBrokerRestartAndCrash(t *testing.T) {
	t.Parallel()
	b := brokertest.Start(t, brokertest.Options{Extra: []string{"max_queued_messages 0"}})
	r := brokertest.NewRelay(t, b.Addr())
	data := t.TempDir()
	const locker = "SIM01"
	prefix := "lockers/v1/" + locker + "/"
	ln := newListener(t, b.URL(), prefix+"traces")
	s := startSimFast(t, r.URL(), data, "-quiet")

	kp, err := protocol.LoadKeyPair(filepath.Join(data, "central-dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The grants for the whole test, while the network is up.
	const parcels = 6
	now := time.Now().UTC()
	var ops []wire.GrantOp
	for i := range parcels {
		ops = append(ops, depositWithPickup(locker, fmt.Sprintf("g-%d", i), fmt.Sprintf("5100%02d", i), fmt.Sprintf("6100%02d", i), now))
	}
	c := newCentral(t, b.URL(), "central-grants", prefix+"#")
	c.wait("online status", func(m msg) bool {
		return m.Topic == prefix+"status" && strings.Contains(string(m.Payload), `"online"`)
	})
	c.publish(prefix+"grants", sealWith(t, kp.KeyID, kp.Private, grantsBody(locker, now, ops...)))
	c.wait("grants ack", func(m msg) bool { return strings.Contains(string(m.Payload), fmt.Sprintf(`"applied":%d`, parcels)) })

	offline := func(d time.Duration) { // the mobile link goes away for a while
		r.Refuse(true)
		r.Cut()
		time.AfterFunc(d, func() { r.Refuse(false) })
	}
	compartment := map[int]int{}
	deposit := func(i int) {
		s.keys(fmt.Sprintf("5100%02d#", i))
		n := s.waitOpenDoor()
		compartment[i] = n
		s.do(n, "parcel", map[string]bool{"present": true})
		s.closeDoor(n)
	}
	pickup := func(i int) {
		s.keys(fmt.Sprintf("6100%02d#", i))
		n := s.waitOpenDoor()
		if n != compartment[i] {
			t.Fatalf("pickup %d opened %d, want %d", i, n, compartment[i])
		}
		s.do(n, "parcel", map[string]bool{"present": false})
		s.closeDoor(n)
	}

	deposit(0)
	offline(700 * time.Millisecond)
	deposit(1)
	pickup(0)
	r.Cut() // a short cut while connected
	deposit(2)

	// The locker dies mid-way, with events still in its outbox (offline).
	offline(2 * time.Second)
	deposit(3)
	if _, pending := outboxState(t, data); pending == 0 {
		t.Log("the outbox was empty at the crash")
	}
	s.kill9()
	s = startSimFast(t, r.URL(), data, "-quiet")
	pickup(1)

	// The broker restarts (its persistence keeps both sessions).
	b.Restart(t)
	deposit(4)
	pickup(2)
	offline(500 * time.Millisecond)
	pickup(3)
	r.Cut()
	deposit(5)
	pickup(4)
	pickup(5)

	// Everything drains.
	deadline := time.Now().Add(45 * time.Second)
	var last int64
	var got []wire.Trace
	for {
		// What the listener has is read before what the locker recorded,
		// and the two are compared as read together: read after, it could
		// hold events recorded since, and be compared with a count of the
		// locker's that is already old.
		got = ln.distinct()
		last, _ = outboxState(t, data)
		pending := s.outboxLen()
		pickedUp := 0
		for _, tr := range got {
			if tr.Type == "picked_up" {
				pickedUp++
			}
		}
		if pending == 0 && int64(len(got)) >= last && pickedUp == parcels {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained within 45 s: last seq %d, %d pending, listener has %d distinct", last, pending, len(got))
		}
		time.Sleep(100 * time.Millisecond)
	}
	types := map[string]int{}
	for i, tr := range got {
		if tr.Seq != int64(i+1) || tr.EventID != fmt.Sprintf("%s-%d", locker, i+1) {
			var seqs []int64
			for _, tr := range got {
				seqs = append(seqs, tr.Seq)
			}
			t.Fatalf("first occurrence %d is seq %d (%s): not gapless and in order: %v", i, tr.Seq, tr.EventID, seqs)
		}
		types[tr.Type]++
	}
	if int64(len(got)) != last {
		t.Errorf("listener has %d distinct events, the locker recorded %d", len(got), last)
	}
	if types["deposited"] != parcels || types["picked_up"] != parcels || types["started"] != 2 {
		t.Errorf("event types: %v", types)
	}
	t.Logf("%d events (%d deliveries with duplicates): %v", len(got), len(ln.all()), types)
}
