package client_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/internal/waittest"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/client/clienttest"
	"github.com/openlocker/locker/sync/protocol"
)

// stuckLocker never finishes applying grants: it stands for a locker that
// dies between receiving a message and applying it.
type stuckLocker struct {
	*clienttest.Locker
	started chan struct{}
}

func (s *stuckLocker) ApplyGrants(ctx context.Context, _ *wire.GrantsBody) (wire.GrantsAck, error) {
	close(s.started)
	<-ctx.Done()
	return wire.GrantsAck{}, ctx.Err()
}

// A grants message is acknowledged to the broker only once applied: when the
// locker goes away before, the broker delivers it again on the next
// connection of the same (persistent) session.
func TestGrantsRedeliveredWhenNotApplied(t *testing.T) {
	b := brokertest.Start(t, brokertest.Options{})
	stuck := &stuckLocker{Locker: clienttest.New(lockerID, 2), started: make(chan struct{})}
	_, stop, _ := startLink(t, b.URL(), stuck, nil)
	ce := newCentral(t, b.URL())
	ce.publish(protocol.SuffixGrants, seal(t, "central-2026", centralKey, grants(time.Now(), 1)))
	select {
	case <-stuck.started:
	case <-time.After(5 * time.Second):
		t.Fatal("ApplyGrants not called")
	}
	stop() // the "crash": ApplyGrants never returned

	f := clienttest.New(lockerID, 2)
	startLink(t, b.URL(), f, nil)
	waittest.For(t, 5*time.Second, func() bool { return len(f.Grants()) == 1 }, "the grants to be delivered again")
	waittest.For(t, 5*time.Second, func() bool { return len(ce.get(protocol.SuffixGrantsAck)) >= 1 }, "the grants ack")
	time.Sleep(300 * time.Millisecond) // and nothing more comes
	if n := len(f.Grants()); n != 1 {
		t.Errorf("applied %d times", n)
	}
	if n := len(ce.get(protocol.SuffixGrantsAck)); n != 1 {
		t.Errorf("%d grants acks, want 1", n)
	}
}

// A flood of junk on the grants topic: the link acknowledges only what it
// has handled, so Mosquitto holds most of the flood back; what still
// overflows the inbox is not acknowledged, and once the flood is over the
// link reconnects and the broker delivers it again. A good envelope after
// the flood is applied.
//
// The broker's queue is unbounded here (max_queued_messages 0): with the
// default 1000 it dropped a varying part of the flood (1,850 to 2,150 of
// 3,000 reached the locker), and no count of what must arrive held.
func TestJunkFloodIsThrottledByTheBroker(t *testing.T) {
	b := brokertest.Start(t, brokertest.Options{Extra: []string{"max_queued_messages 0"}})
	f := clienttest.New(lockerID, 2)
	link, _, logs := startLink(t, b.URL(), f, func(o *client.Options) { o.RedeliverAfter = 300 * time.Millisecond })
	ce := newCentral(t, b.URL())
	const flood = 3000
	for i := range flood {
		tok := ce.c.Publish(protocol.Topic(lockerID, protocol.SuffixGrants), 1, false, []byte(`{"key_id":"x","body":"%%%","sig":"`+string(rune('a'+i%26))+`"}`))
		if i%500 == 499 {
			tok.WaitTimeout(5 * time.Second)
		}
	}
	ce.publish(protocol.SuffixGrants, seal(t, "central-2026", centralKey, grants(time.Now(), 1)))
	waittest.For(t, 20*time.Second, func() bool { return len(f.Grants()) == 1 }, "the good envelope after the flood")
	if d := link.Dropped(); d > 0 {
		waittest.For(t, 5*time.Second, func() bool {
			return strings.Contains(logs.String(), "delivers the dropped messages again") && link.Connected()
		}, "a reconnect for the %d dropped messages", d)
	}
	// Every message reaches the locker, the dropped ones redelivered.
	waittest.For(t, 20*time.Second, func() bool { return len(f.Rejections()) >= flood }, "every junk message to be handled")
	t.Logf("%d junk messages sent, %d dropped from the inbox and delivered again, %d handled",
		flood, link.Dropped(), len(f.Rejections()))
}
