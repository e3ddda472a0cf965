package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/simulator/logtest"
	"github.com/openlocker/locker/simulator/waittest"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/client/clienttest"
	"github.com/openlocker/locker/sync/protocol"
)

// errDiskFull stands for the controller's storage failing for a while (its
// text is SQLite's).
var errDiskFull = errors.New("database or disk is full")

// errCorrupt stands for a failure that does not go away by itself.
var errCorrupt = errors.New("database disk image is malformed")

// failingLocker fails ApplyGrants with err while it is set, as the
// controller does while its data folder cannot be written.
type failingLocker struct {
	*clienttest.Locker
	err      atomic.Pointer[error]
	failures atomic.Int64
}

func (f *failingLocker) fail(err error) {
	if err == nil {
		f.err.Store(nil)
		return
	}
	f.err.Store(&err)
}

func (f *failingLocker) ApplyGrants(ctx context.Context, body *wire.GrantsBody) (wire.GrantsAck, error) {
	if p := f.err.Load(); p != nil {
		f.failures.Add(1)
		return wire.GrantsAck{}, *p
	}
	return f.Locker.ApplyGrants(ctx, body)
}

// transientOnly is the classifier the daemon passes (store.Unavailable), for
// the test's two errors.
func transientOnly(err error) bool { return errors.Is(err, errDiskFull) }

// windowEnvelopes is more than Mosquitto's max_inflight_messages (20).
const windowEnvelopes = 25

// windowGrants returns grants envelope i: one put of its own grant.
func windowGrants(t *testing.T, base time.Time, i int) (wire.GrantsBody, []byte) {
	g := grants(base.Add(time.Duration(i)*time.Second), 0)
	g.Ops = []wire.GrantOp{{
		Op: "put", GrantID: fmt.Sprintf("g-w%d", i), Version: 1, Action: "deposit", Size: "M",
		Holder: "13488888888", CodeHash: wire.CodeHash(lockerID, fmt.Sprintf("%06d", 100000+i)),
	}}
	return g, seal(t, "central-2026", centralKey, g)
}

func revokeOf(t *testing.T, issued time.Time, grantID string) (wire.GrantsBody, []byte) {
	g := grants(issued, 0)
	g.Ops = []wire.GrantOp{{Op: "revoke", GrantID: grantID, Version: 2}}
	return g, seal(t, "central-2026", centralKey, g)
}

// connects counts the connections the link made, from its log.
func connects(logs *logtest.Buffer) int { return strings.Count(logs.String(), "msg=connected ") }

func decodeAcks(t *testing.T, msgs [][]byte) []wire.GrantsAck {
	t.Helper()
	var out []wire.GrantsAck
	for _, p := range msgs {
		var a wire.GrantsAck
		if err := json.Unmarshal(p, &a); err != nil {
			t.Fatalf("grants ack %q: %v", p, err)
		}
		out = append(out, a)
	}
	return out
}

// More grants envelopes than Mosquitto's in-flight window (20) are sent
// while they fail to apply for a transient reason (a full disk). None is
// acknowledged before it is applied, and yet the link never stops
// receiving: once the storage is back (after the first failed apply; the
// retry comes 1 s later), every one of them is applied, in order, and a
// revoke and a command sent afterwards are delivered and applied, on the
// same TCP connection.
//
// Before the fix the link left each failed envelope unacknowledged and went
// on to the next: the ones that failed were never applied on that
// connection (and after 20 the broker's window was full and nothing more —
// no grant, no command, no revoke — was delivered until it broke).
func TestTransientApplyFailuresDoNotStarveTheLink(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	b := brokertest.Start(t, brokertest.Options{})
	f := &failingLocker{Locker: clienttest.New(lockerID, 4)}
	f.fail(errDiskFull)
	_, _, logs := startLink(t, b.URL(), f, func(o *client.Options) { o.Transient = transientOnly })
	ce := newCentral(t, b.URL())

	base := time.Now().Add(-time.Minute)
	var want []time.Time
	for i := range windowEnvelopes {
		g, env := windowGrants(t, base, i)
		want = append(want, g.IssuedAt)
		ce.publish(protocol.SuffixGrants, env)
	}
	// The disk stays full while all of them are sent, until an apply failed.
	waittest.For(t, 20*time.Second, func() bool { return f.failures.Load() >= 1 }, "a failed apply")
	if n := len(ce.get(protocol.SuffixGrantsAck)); n != 0 {
		t.Fatalf("%d grants acks while nothing could be applied", n)
	}
	f.fail(nil) // space is freed

	rev, env := revokeOf(t, base.Add(time.Hour), "g-w0")
	want = append(want, rev.IssuedAt)
	ce.publish(protocol.SuffixGrants, env)
	ce.publish(protocol.SuffixCommands, seal(t, "central-2026", centralKey, command("c-w1", "disable", 3, time.Now().Add(time.Minute))))

	waittest.For(t, 20*time.Second, func() bool { return len(f.Commands()) == 1 && len(f.Grants()) >= len(want) },
		"the revoke and the command after the outage")
	waittest.For(t, 10*time.Second, func() bool {
		return len(ce.get(protocol.SuffixGrantsAck)) == len(want) && len(ce.get(protocol.SuffixCommandsResult)) == 1
	}, "the grants acks and the command result")

	// Each envelope applied once, in the order the central sent them.
	got := f.Grants()
	if len(got) != len(want) {
		t.Fatalf("%d grants bodies applied, want %d", len(got), len(want))
	}
	for i, g := range got {
		if !g.IssuedAt.Equal(want[i]) {
			t.Fatalf("grants body %d issued at %v, want %v (out of order or repeated)", i, g.IssuedAt, want[i])
		}
	}
	if last := got[len(got)-1]; len(last.Ops) != 1 || last.Ops[0].Op != "revoke" || last.Ops[0].GrantID != "g-w0" {
		t.Fatalf("last body applied = %+v, want the revoke of g-w0", last.Ops)
	}
	for i, a := range decodeAcks(t, ce.get(protocol.SuffixGrantsAck)) {
		if a.Applied != 1 || len(a.Rejected) != 0 || !a.IssuedAt.Equal(want[i]) {
			t.Errorf("grants ack %d = %+v", i, a)
		}
	}
	if n := connects(logs); n != 1 {
		t.Errorf("the link connected %d times, want 1 (it must not need a new connection to receive again)", n)
	}
}

// A grants envelope that the Locker refuses as a whole for a reason that does
// not go away by itself is acknowledged, with a grants ack that rejects every
// op, and never blocks the messages behind it: more of them than the
// broker's window, then a revoke and a command, all delivered on one
// connection.
func TestFinalApplyFailuresAreAckedAndDoNotStarveTheLink(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	b := brokertest.Start(t, brokertest.Options{})
	f := &failingLocker{Locker: clienttest.New(lockerID, 4)}
	f.fail(errCorrupt)
	_, _, logs := startLink(t, b.URL(), f, func(o *client.Options) { o.Transient = transientOnly })
	ce := newCentral(t, b.URL())

	base := time.Now().Add(-time.Minute)
	for i := range windowEnvelopes {
		_, env := windowGrants(t, base, i)
		ce.publish(protocol.SuffixGrants, env)
	}
	waittest.For(t, 20*time.Second, func() bool { return len(ce.get(protocol.SuffixGrantsAck)) == windowEnvelopes },
		"a grants ack for each refused envelope")
	if n := f.failures.Load(); n != windowEnvelopes {
		t.Errorf("ApplyGrants failed %d times, want %d (once each: a final failure is not retried)", n, windowEnvelopes)
	}
	for i, a := range decodeAcks(t, ce.get(protocol.SuffixGrantsAck)) {
		want := fmt.Sprintf("g-w%d", i)
		if a.Applied != 0 || len(a.Rejected) != 1 || a.Rejected[0].GrantID != want ||
			a.Rejected[0].Error != "envelope not applied: internal error" {
			t.Errorf("grants ack %d = %+v, want %s rejected as not applied", i, a, want)
		}
	}

	f.fail(nil)
	_, env := revokeOf(t, base.Add(time.Hour), "g-w0")
	ce.publish(protocol.SuffixGrants, env)
	ce.publish(protocol.SuffixCommands, seal(t, "central-2026", centralKey, command("c-w2", "disable", 3, time.Now().Add(time.Minute))))
	waittest.For(t, 10*time.Second, func() bool {
		return len(f.Grants()) == 1 && len(f.Commands()) == 1 && len(ce.get(protocol.SuffixCommandsResult)) == 1 &&
			len(ce.get(protocol.SuffixGrantsAck)) == windowEnvelopes+1
	}, "the revoke and the command after the refused envelopes")
	if g := f.Grants()[0]; g.Ops[0].Op != "revoke" {
		t.Errorf("applied %+v, want the revoke", g.Ops)
	}
	if n := connects(logs); n != 1 {
		t.Errorf("the link connected %d times, want 1", n)
	}
}

// When the connection is lost while an envelope waits to be applied, it is
// left unacknowledged, and so are the messages behind it on that
// connection: the broker delivers them all again on the next connection,
// and each is applied once, in the order sent.
func TestApplyRetryGivesUpOnALostConnection(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	b := brokertest.Start(t, brokertest.Options{})
	relay := brokertest.NewRelay(t, b.Addr())
	f := &failingLocker{Locker: clienttest.New(lockerID, 4)}
	f.fail(errDiskFull)
	_, _, logs := startLink(t, relay.URL(), f, func(o *client.Options) { o.Transient = transientOnly })
	ce := newCentral(t, b.URL())

	base := time.Now().Add(-time.Minute)
	var want []time.Time
	for i := range 5 {
		g, env := windowGrants(t, base, i)
		want = append(want, g.IssuedAt)
		ce.publish(protocol.SuffixGrants, env)
	}
	waittest.For(t, 10*time.Second, func() bool { return f.failures.Load() >= 1 }, "a failed apply")
	relay.Cut()
	waittest.For(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "the broker delivers them again") },
		"the retry to give up on the lost connection")
	waittest.For(t, 10*time.Second, func() bool { return connects(logs) == 2 }, "the link to connect again")
	before := f.failures.Load()
	waittest.For(t, 10*time.Second, func() bool { return f.failures.Load() > before }, "the envelope delivered again")
	f.fail(nil)

	waittest.For(t, 10*time.Second, func() bool { return len(ce.get(protocol.SuffixGrantsAck)) == len(want) }, "a grants ack for each envelope")
	got := f.Grants()
	if len(got) != len(want) {
		t.Fatalf("%d grants bodies applied, want %d", len(got), len(want))
	}
	for i, g := range got {
		if !g.IssuedAt.Equal(want[i]) {
			t.Fatalf("grants body %d issued at %v, want %v (out of order or repeated)", i, g.IssuedAt, want[i])
		}
	}
}
