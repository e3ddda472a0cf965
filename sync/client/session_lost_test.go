package client_test

import (
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/simulator/waittest"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/client/clienttest"
	"github.com/openlocker/locker/sync/protocol"
)

// Found by an attack (it failed before the fix). The link leaves an
// envelope whose apply failed for a transient reason, and every message
// behind it that it already holds in its inbox, unapplied and
// unacknowledged once the connection is lost, counting on the broker to
// deliver them again. A broker that lost the session (restarted
// without persistence, Mosquitto's default; or a crash before its autosave)
// delivers nothing again: the next connection says session_present=false,
// and the revoke the locker had already received is never applied, though
// it was in the locker's memory all along. The revoked code keeps working
// (I4, I11: "a revoke ... sent after any number of failed applies is
// delivered").
func TestRevokeHeldWhenTheBrokerLosesTheSession(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	b := brokertest.Start(t, brokertest.Options{NoPersistence: true})
	f := &failingLocker{Locker: clienttest.New(lockerID, 4)}
	link, _, logs := startLink(t, b.URL(), f, func(o *client.Options) { o.Transient = transientOnly })
	ce := newCentral(t, b.URL())

	base := time.Now().Add(-time.Minute)
	_, put := windowGrants(t, base, 0) // puts g-w0
	ce.publish(protocol.SuffixGrants, put)
	waittest.For(t, 10*time.Second, func() bool { return len(f.Grants()) == 1 }, "the put to be applied")

	// The disk fills; an unrelated envelope, then the revoke of g-w0 arrive.
	f.fail(errDiskFull)
	_, other := windowGrants(t, base, 1)
	ce.publish(protocol.SuffixGrants, other)
	_, revoke := revokeOf(t, base.Add(10*time.Second), "g-w0")
	ce.publish(protocol.SuffixGrants, revoke)
	waittest.For(t, 10*time.Second, func() bool { return f.failures.Load() >= 1 }, "a failed apply")
	time.Sleep(300 * time.Millisecond) // the revoke is in the link's inbox by now

	b.Restart(t) // the broker forgets the session
	waittest.For(t, 10*time.Second, func() bool { return !link.Connected() || connects(logs) >= 2 }, "the link to notice")
	waittest.For(t, 15*time.Second, func() bool { return connects(logs) >= 2 && link.Connected() }, "the link to reconnect")
	f.fail(nil) // the disk is back
	time.Sleep(3 * time.Second)

	revoked := false
	for _, g := range f.Grants() {
		for _, op := range g.Ops {
			if op.Op == "revoke" && op.GrantID == "g-w0" {
				revoked = true
			}
		}
	}
	if !revoked {
		t.Fatalf("I4/I11: the revoke of g-w0, received by the link before the broker restarted, was never applied "+
			"(%d bodies applied; session_present false on the new connection: %v)",
			len(f.Grants()), strings.Contains(logs.String(), "session_present=false"))
	}
}
