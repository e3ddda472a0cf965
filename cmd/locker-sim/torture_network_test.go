package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/central"
	"github.com/openlocker/locker/sync/protocol"
)

// TestTortureNetwork: deposits, pickups and grant syncs go on while the
// network to the broker is cut again and again — short cuts of a live
// connection and offline spells with every reconnect refused — and the
// broker restarts now and then. At the end every grants envelope was
// acknowledged, every deposit and pickup was reported, and the central's
// listener has every event exactly once after de-duplication by event_id,
// with seq gapless from 1.
//
//	LOCKER_TORTURE=1 go test -run TestTortureNetwork -v ./cmd/locker-sim/
func TestTortureNetwork(t *testing.T) {
	t.Parallel()
	target := scaled(t, "LOCKER_NETWORK_CUTS", 10, 300, 2000)
	seed := uint64(envInt(t, "LOCKER_TORTURE_SEED", int(time.Now().UnixNano()%1e9)))
	restartEvery := max(5, target/6)
	t.Logf("network torture: %d cuts, LOCKER_TORTURE_SEED=%d", target, seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	b := brokertest.Start(t, brokertest.Options{Extra: []string{"max_queued_messages 0"}})
	relay := brokertest.NewRelay(t, b.Addr())
	data := t.TempDir()
	const locker = "SIM01"
	prefix := "lockers/v1/" + locker + "/"
	ln := newListener(t, b.URL(), prefix+"traces")
	c := newSurvivingCentral(t, b.URL(), prefix+"grants/ack")
	// The back-off is short so that hundreds of cuts fit in minutes; the
	// link's own tests check the back-off itself.
	s := startSimFast(t, relay.URL(), data, "-quiet", "-backoff-min", "50ms", "-backoff-max", "500ms")
	kp, err := protocol.LoadKeyPair(filepath.Join(data, "central-dev.json"))
	if err != nil {
		t.Fatal(err)
	}

	// The cutter: while the rounds run, the link is cut at random moments.
	var cuts, offline, restarts atomic.Int64
	var brokerMu stdsync.Mutex // a restart and a grants send do not overlap
	stop := make(chan struct{})
	cutterDone := make(chan struct{})
	go func() {
		defer close(cutterDone)
		r := rand.New(rand.NewPCG(seed, 11))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(200+r.IntN(800)) * time.Millisecond):
			}
			if r.IntN(3) == 0 { // an offline spell: reconnects are refused for a while
				relay.Refuse(true)
				relay.Cut()
				offline.Add(1)
				select {
				case <-stop:
				case <-time.After(time.Duration(100+r.IntN(900)) * time.Millisecond):
				}
				relay.Refuse(false)
			} else {
				relay.Cut()
			}
			if n := cuts.Add(1); n%int64(restartEvery) == 0 { // and now and then the broker restarts
				brokerMu.Lock()
				b.Restart(t)
				brokerMu.Unlock()
				restarts.Add(1)
			}
		}
	}()

	// sendGrants publishes one envelope and sends it again until its ack
	// comes, as the central server does.
	sent := 0
	sendGrants := func(ops ...wire.GrantOp) {
		t.Helper()
		now := time.Now().UTC().Truncate(time.Millisecond)
		env := sealWith(t, kp.KeyID, kp.Private, grantsBody(locker, now, ops...))
		stamp := wire.FormatTime(now)
		deadline := time.Now().Add(90 * time.Second)
		for {
			brokerMu.Lock()
			c.cl.Publish(prefix+"grants", env) // no ack: sent again below
			brokerMu.Unlock()
			sent++
			until := time.Now().Add(3 * time.Second)
			for time.Now().Before(until) {
				if c.has(stamp) {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			if time.Now().After(deadline) {
				t.Fatalf("no ack for the grants of %s within 90 s of resending", stamp)
			}
		}
	}

	type parcel struct {
		i           int
		compartment int
	}
	var waiting []parcel // deposited, not yet picked up
	deposits, pickups, next := 0, 0, 0
	for cuts.Load() < int64(target) {
		switch {
		case len(waiting) > 0 && (len(waiting) >= 12 || rng.IntN(2) == 0):
			k := rng.IntN(len(waiting))
			p := waiting[k]
			waiting = append(waiting[:k], waiting[k+1:]...)
			s.keys(fmt.Sprintf("62%04d#", p.i))
			if n := s.waitOpenDoor(); n != p.compartment {
				t.Fatalf("pickup %d opened %d, want %d", p.i, n, p.compartment)
			}
			s.do(p.compartment, "parcel", map[string]bool{"present": false})
			s.closeDoor(p.compartment)
			pickups++
		default:
			i := next
			next++
			sendGrants(depositWithPickup(locker, fmt.Sprintf("g-%d", i), fmt.Sprintf("52%04d", i), fmt.Sprintf("62%04d", i), time.Now().UTC()))
			s.keys(fmt.Sprintf("52%04d#", i))
			n := s.waitOpenDoor()
			s.do(n, "parcel", map[string]bool{"present": true})
			s.closeDoor(n)
			waiting = append(waiting, parcel{i, n})
			deposits++
		}
	}
	close(stop)
	<-cutterDone
	relay.Refuse(false)

	// Everything drains.
	deadline := time.Now().Add(60 * time.Second)
	// What the listener heard is read before what the locker recorded, and
	// the two are compared as read together: an event recorded after the
	// listener was read makes the locker's count the larger, and the loop
	// waits another round instead of comparing a stale count.
	var last int64
	var got []wire.Trace
	for {
		got = ln.distinct()
		last, _ = outboxState(t, data)
		pending := s.outboxLen()
		parcels := 0
		for _, tr := range got {
			if tr.Type == "deposited" || tr.Type == "picked_up" {
				parcels++
			}
		}
		if pending == 0 && int64(len(got)) >= last && parcels >= deposits+pickups {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained within 60 s: last seq %d, %d pending, the listener has %d distinct", last, pending, len(got))
		}
		time.Sleep(100 * time.Millisecond)
	}
	lost := 0
	types := map[string]int{}
	for i, tr := range got {
		if tr.Seq != int64(i+1) {
			lost++
			t.Errorf("first occurrence %d is seq %d (%s): not gapless and in order", i, tr.Seq, tr.EventID)
			break
		}
		types[tr.Type]++
	}
	if int64(len(got)) != last {
		lost++
		t.Errorf("the listener has %d distinct events, the locker recorded %d", len(got), last)
	}
	if types["deposited"] != deposits || types["picked_up"] != pickups {
		lost++
		t.Errorf("%d deposited and %d picked_up received, want %d and %d", types["deposited"], types["picked_up"], deposits, pickups)
	}
	printTortureRow("network cuts, broker restarts", int(cuts.Load()+restarts.Load()), "cuts", lost, fmt.Sprintf(
		"%d cuts (%d offline spells with reconnects refused) and %d broker restarts during %d deposits, %d pickups, %d grants envelopes (%d sends with resends); %d events, %d deliveries with duplicates, seq gapless",
		cuts.Load(), offline.Load(), restarts.Load(), deposits, pickups, next, sent, len(got), len(ln.all())))
}

// survivingCentral is the central server's grants side: a persistent
// session that reconnects by itself, so that a broker restart loses none
// of its acks.
type survivingCentral struct {
	cl   *central.Client
	acks *central.Recorder
}

func newSurvivingCentral(t *testing.T, broker, topic string) *survivingCentral {
	t.Helper()
	c := &survivingCentral{acks: central.NewRecorder()}
	c.cl = central.DialTest(t, central.Options{Broker: broker, ClientID: "central-torture-grants", Persistent: true,
		Reconnect: true, RetryInterval: 100 * time.Millisecond, MaxReconnectInterval: 300 * time.Millisecond,
		Wait: 5 * time.Second, Subscribe: []string{topic}, OnMessage: c.acks.Record})
	return c
}

// has says whether the ack of the envelope issued at issuedAt arrived.
func (c *survivingCentral) has(issuedAt string) bool {
	want, err := time.Parse(time.RFC3339Nano, issuedAt)
	if err != nil {
		return false
	}
	for _, m := range c.acks.All() {
		var ack wire.GrantsAck
		if json.Unmarshal(m.Payload, &ack) == nil && ack.IssuedAt.Equal(want) {
			return true
		}
	}
	return false
}
