package client_test

import (
	"context"

	"testing"
	"testing/synctest"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/client/clienttest"
	"github.com/openlocker/locker/sync/protocol"
)

// loseSession makes the fake broker forget the client's session (a broker
// without persistence restarted) and cuts the live connection.
func (b *fakeBroker) loseSession() {
	b.mu.Lock()
	b.session = false
	b.unacked = nil
	b.mu.Unlock()
	b.cut()
}

func revokedIn(f *failingLocker, id string) bool {
	for _, g := range f.Grants() {
		for _, op := range g.Ops {
			if op.Op == "revoke" && op.GrantID == id {
				return true
			}
		}
	}
	return false
}

// The held messages of a connection whose broker lost the session are
// replayed on the next connection B, bound to it. If their apply fails
// again (the disk is still full) and B is lost in turn, the worker holds
// them as B's, counting on the broker to deliver them again; the broker
// kept B's session (session_present true on C) but never had them, as they
// came on A: the held revoke is dropped and never applied (I4, I11).
func TestReplayedRevokeSurvivesALostReplayConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &failingLocker{Locker: clienttest.New(lockerID, 4)}
		link, b, _, logs := startFakeLink(t, f, func(o *client.Options) { o.Transient = transientOnly })
		topic := protocol.Topic(lockerID, protocol.SuffixGrants)
		base := time.Now()
		_, put := windowGrants(t, base, 0)
		b.send(topic, put)
		synctest.Wait()
		if len(f.Grants()) != 1 {
			t.Fatal("the put was not applied")
		}

		f.fail(errDiskFull)
		_, revoke := revokeOf(t, base.Add(time.Second), "g-w0")
		b.send(topic, revoke)
		synctest.Wait() // the worker retries the revoke with back-off

		b.loseSession() // connection A gone, and the broker's session with it
		time.Sleep(time.Minute)
		synctest.Wait()
		if !link.Connected() || connects(logs) != 2 {
			t.Fatalf("connection B not made (%d connects)", connects(logs))
		}
		// B said session_present false: the revoke is replayed on B, and
		// still fails. B is cut; the broker keeps B's session.
		b.cut()
		time.Sleep(time.Minute)
		synctest.Wait()
		if !link.Connected() || connects(logs) != 3 {
			t.Fatalf("connection C not made (%d connects)", connects(logs))
		}
		f.fail(nil) // the disk is back
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if !revokedIn(f, "g-w0") {
			t.Fatalf("I4/I11: the revoke of g-w0, received before the broker lost the session, was never applied "+
				"(replayed on B, B lost, dropped on C with session_present true; %d bodies applied, %d unacked at the broker)",
				len(f.Grants()), b.unackedCount())
		}
	})
}

// gatedLocker is a failingLocker whose Execute waits for gate.
type gatedLocker struct {
	failingLocker
	gate chan struct{}
}

func (g *gatedLocker) Execute(ctx context.Context, cmd *wire.Command) (wire.CommandResult, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return wire.CommandResult{}, ctx.Err()
	}
	return g.failingLocker.Execute(ctx, cmd)
}

// A message of connection A still in the inbox when A is lost with the
// broker's session is handled after the worker has read the next
// connection's resumption notice (the worker's select picks the notice or
// the inbox at random once both are ready): the notice found nothing held
// and was thrown away; the revoke then fails for a transient reason,
// is held as A's, and no notice ever comes for it while B lives. The broker
// lost it: the revoke is never applied (I4, I11). Run a number of times:
// each run misses it with probability about 1/2.
func TestResumptionReadBeforeTheMessageFails(t *testing.T) {
	const runs = 16
	missed := 0
	for range runs {
		synctest.Test(t, func(t *testing.T) {
			f := &gatedLocker{failingLocker: failingLocker{Locker: clienttest.New(lockerID, 4)}, gate: make(chan struct{})}
			_, b, _, logs := startFakeLink(t, f, func(o *client.Options) { o.Transient = transientOnly })
			base := time.Now()
			_, put := windowGrants(t, base, 0)
			b.send(protocol.Topic(lockerID, protocol.SuffixGrants), put)
			synctest.Wait()
			if len(f.Grants()) != 1 {
				t.Fatal("the put was not applied")
			}

			f.fail(errDiskFull)
			b.send(protocol.Topic(lockerID, protocol.SuffixCommands),
				seal(t, "central-2026", centralKey, command("c-1", "open", 1, base.Add(time.Hour))))
			_, revoke := revokeOf(t, base.Add(time.Second), "g-w0")
			b.send(protocol.Topic(lockerID, protocol.SuffixGrants), revoke)
			synctest.Wait() // the worker is in Execute; the revoke waits in the inbox

			b.loseSession()
			time.Sleep(time.Minute)
			synctest.Wait()
			if connects(logs) != 2 {
				t.Fatalf("connection B not made (%d connects)", connects(logs))
			}
			close(f.gate)
			time.Sleep(time.Minute)
			synctest.Wait()
			f.fail(nil) // the disk is back
			time.Sleep(5 * time.Minute)
			synctest.Wait()
			if !revokedIn(&f.failingLocker, "g-w0") {
				missed++
			}
		})
	}
	if missed > 0 {
		t.Fatalf("I4/I11: in %d of %d runs the revoke of g-w0, in the inbox when the broker lost the session, was never applied "+
			"(held as the lost connection's after the new connection's notice was read and thrown away)", missed, runs)
	}
}
