package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/simulator/logtest"
	"github.com/openlocker/locker/simulator/waittest"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/client/clienttest"
	"github.com/openlocker/locker/sync/protocol"
)

// The link's timings, at their defaults, on the fake clock of a synctest
// bubble and the in-memory broker (fakebroker_test.go). These are the
// defaults of docs/protocol.md and link.go; the tests state them again so
// that a change of one is a deliberate change of a test too.
const (
	backoffMin  = time.Second
	backoffMax  = 5 * time.Minute
	stableAfter = 30 * time.Second
	statusEvery = 10 * time.Second
	compsEvery  = time.Second
	drainEvery  = 15 * time.Second
	redeliver   = 5 * time.Second
	retryMin    = time.Second
	retryMax    = 30 * time.Second
	pingTimeout = 10 * time.Second
	pingCheck   = 5 * time.Second // paho looks at the keep-alive every 5 s
)

// ceiling is the back-off's bound before attempt n (from 0).
func ceiling(n int) time.Duration {
	c := backoffMin
	for range n {
		if c >= backoffMax {
			break
		}
		c *= 2
	}
	return min(c, backoffMax)
}

// The first connection is made at once; while the broker refuses, the
// attempts wait the back-off's ceiling (1 s doubling to 5 min; the random
// source here always draws the top of the range); a connection lost before
// it was up for 30 s does not start the back-off again, one lost after
// does.
func TestBackoffOnTheFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newFakeBroker()
		b.setRefuse(true)
		start := time.Now()
		top := func(n int64) int64 { return n - 1 }
		runFakeLink(t, b, clienttest.New(lockerID, 1), nil, top)

		// The ceilings up to 256 s add up to 511 s; then two of 5 min.
		time.Sleep(20 * time.Minute)
		synctest.Wait()
		dials := b.dialTimes()
		if len(dials) != 12 || !dials[0].Equal(start) {
			t.Fatalf("%d attempts in 20 min, the first after %v; want 12, the first at once", len(dials), dials[0].Sub(start))
		}
		for k := 1; k < len(dials); k++ {
			if gap := dials[k].Sub(dials[k-1]); gap != ceiling(k-1) {
				t.Errorf("attempt %d came %v after the last, want the ceiling %v", k, gap, ceiling(k-1))
			}
		}

		// The broker accepts again: connected at the next attempt.
		b.setRefuse(false)
		waittest.For(t, backoffMax, b.connected, "a connection at the next attempt")
		up := b.connTimes()[0]
		if want := dials[len(dials)-1].Add(backoffMax); !up.Equal(want) {
			t.Errorf("connected %v after the last refused attempt, want %v", up.Sub(dials[len(dials)-1]), backoffMax)
		}
		// Lost before stableAfter: the next attempt still waits 5 min.
		time.Sleep(time.Until(up.Add(stableAfter - time.Second)))
		lost := time.Now()
		b.cut()
		time.Sleep(backoffMax)
		synctest.Wait()
		conns := b.connTimes()
		if len(conns) != 2 || conns[1].Sub(lost) != backoffMax {
			t.Fatalf("after a connection of %v: reconnected %v later, want %v (no reset)", stableAfter-time.Second, conns[len(conns)-1].Sub(lost), backoffMax)
		}
		// Up for stableAfter: the back-off starts again from backoffMin.
		time.Sleep(stableAfter)
		lost = time.Now()
		b.cut()
		time.Sleep(backoffMax)
		synctest.Wait()
		conns = b.connTimes()
		if len(conns) != 3 || conns[2].Sub(lost) != backoffMin {
			t.Fatalf("after a connection of %v: reconnected %v later, want %v (reset)", stableAfter, conns[len(conns)-1].Sub(lost), backoffMin)
		}
	})
}

// runFakeLink runs a link for f on b until the test ends (or stop is
// called), inside a synctest bubble; rnd, if not nil, is its back-off's
// random source.
func runFakeLink(t *testing.T, b *fakeBroker, f client.Locker, mod func(*client.Options), rnd func(int64) int64) (link *client.Link, stop func(), logs *logtest.Buffer) {
	t.Helper()
	logger, logs := testLogger(t)
	opts := client.Options{Broker: "tcp://fake:1883", Keys: keys, Locker: f, Logger: logger, Software: "0.3.0-test"}
	if mod != nil {
		mod(&opts)
	}
	link, err := client.NewWithDial(opts, b.dial)
	if err != nil {
		t.Fatal(err)
	}
	if rnd != nil {
		client.SetBackoffRandom(link, rnd)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- link.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(stop)
	return link, stop, logs
}

// An idle connection is kept alive by a PINGREQ once nothing was sent or
// received for the keep-alive (30 s; paho looks every 5 s); a broker that
// stops answering them is given up pingTimeout (10 s) after the unanswered
// ping, and the link connects again.
func TestKeepAliveOnTheFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, b, _, _ := startFakeLink(t, clienttest.New(lockerID, 1), nil)
		up := time.Now()
		time.Sleep(2*time.Minute + time.Second)
		synctest.Wait()
		pings := b.pingTimes()
		if len(pings) < 3 {
			t.Fatalf("%d pings in 2 min idle, want one about every %v", len(pings), client.KeepAlive)
		}
		last := up
		for i, p := range pings {
			if gap := p.Sub(last); gap < client.KeepAlive || gap > client.KeepAlive+pingCheck {
				t.Errorf("ping %d came %v after the last packet, want %v to %v", i, gap, client.KeepAlive, client.KeepAlive+pingCheck)
			}
			last = p
		}
		if n := len(b.connTimes()); n != 1 {
			t.Fatalf("%d connections while the pings were answered, want 1", n)
		}

		b.setMutePings(true)
		muted := time.Now()
		time.Sleep(client.KeepAlive + pingCheck + pingTimeout + pingCheck + backoffMin)
		synctest.Wait()
		conns := b.connTimes()
		if len(conns) != 2 {
			t.Fatalf("%d connections, want a second one after the unanswered ping", len(conns))
		}
		pings = b.pingTimes()
		unanswered := pings[len(pings)-1]
		if unanswered.Before(muted) {
			t.Fatal("no ping after the broker went mute")
		}
		if d := conns[1].Sub(unanswered); d < pingTimeout || d > pingTimeout+pingCheck+backoffMin {
			t.Errorf("reconnected %v after the unanswered ping, want the ping time-out %v (+ up to %v of paho's check and the back-off)",
				d, pingTimeout, pingCheck+backoffMin)
		}
	})
}

// The retained status and compartments are published at once on connect;
// then a burst of changes gives one compartments message at the 1 s mark
// and one status message at the 10 s mark, each with the last state.
func TestStatusThrottleOnTheFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := clienttest.New(lockerID, 3)
		_, b, _, _ := startFakeLink(t, f, nil)
		t0 := time.Now()
		for _, sfx := range []string{protocol.SuffixStatus, protocol.SuffixCompartments} {
			if m := b.published(sfx); len(m) != 1 || !m[0].at.Equal(t0) || !m[0].retained {
				t.Fatalf("%s: %d messages at connect, want one, retained, at once", sfx, len(m))
			}
		}
		time.Sleep(300 * time.Millisecond)
		for i := range 30 {
			f.SetCompartment(2, []string{"occupied", "free"}[i%2], "closed")
			time.Sleep(5 * time.Millisecond)
		}
		f.SetCompartment(2, "disabled", "open")
		time.Sleep(time.Minute)
		synctest.Wait()

		comps := b.published(protocol.SuffixCompartments)
		if len(comps) != 2 || !comps[1].at.Equal(t0.Add(compsEvery)) {
			t.Fatalf("compartments messages at %v, want two: at connect and at the %v mark", times(comps, t0), compsEvery)
		}
		var rep wire.CompartmentsReport
		if err := json.Unmarshal(comps[1].payload, &rep); err != nil || rep.Compartments[1].State != "disabled" || rep.Compartments[1].Door != "open" {
			t.Errorf("compartments after the burst = %s (%v), want 2 disabled and open", comps[1].payload, err)
		}
		status := b.published(protocol.SuffixStatus)
		if len(status) != 2 || !status[1].at.Equal(t0.Add(statusEvery)) {
			t.Fatalf("status messages at %v, want two: at connect and at the %v mark", times(status, t0), statusEvery)
		}
		var st statusMsg
		if err := json.Unmarshal(status[1].payload, &st); err != nil || st.Compartments.Disabled != 1 || st.State != "online" {
			t.Errorf("status after the burst = %s (%v), want online with 1 disabled", status[1].payload, err)
		}
	})
}

// times lists when msgs were published, from t0.
func times(msgs []fakeMsg, t0 time.Time) []time.Duration {
	var out []time.Duration
	for _, m := range msgs {
		out = append(out, m.at.Sub(t0))
	}
	return out
}

// deafLocker never signals EventsAppended: only the drain's safety-net
// poll finds its events.
type deafLocker struct{ *clienttest.Locker }

func (deafLocker) EventsAppended() <-chan struct{} { return nil }

// Events appended without a signal, or after the outbox could not be read,
// are published at the safety-net poll: drainEvery (15 s) after connect,
// and every drainEvery after.
func TestOutboxSafetyNetOnTheFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := deafLocker{clienttest.New(lockerID, 1)}
		_, b, _, _ := startFakeLink(t, f, nil)
		t0 := time.Now()
		f.Append("door_opened", 3)
		time.Sleep(drainEvery - time.Millisecond)
		synctest.Wait()
		if n := len(b.published(protocol.SuffixTraces)); n != 0 {
			t.Fatalf("%d traces before the safety-net poll, from a locker that never signals", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if tr := b.published(protocol.SuffixTraces); len(tr) != 3 || !tr[0].at.Equal(t0.Add(drainEvery)) {
			t.Fatalf("traces at %v, want 3 at the %v poll", times(tr, t0), drainEvery)
		}
		if n := len(f.Outbox()); n != 0 {
			t.Errorf("%d events left in the outbox after their PUBACKs", n)
		}

		// The outbox cannot be read for a while: tried again at the next poll.
		f.FailPending(errors.New("database is locked"))
		f.Append("door_closed", 2)
		time.Sleep(drainEvery)
		synctest.Wait()
		f.FailPending(nil)
		if n := len(b.published(protocol.SuffixTraces)); n != 3 {
			t.Fatalf("%d traces while the outbox could not be read, want the 3 from before", n)
		}
		time.Sleep(drainEvery)
		synctest.Wait()
		if tr := b.published(protocol.SuffixTraces); len(tr) != 5 || !tr[4].at.Equal(t0.Add(3*drainEvery)) {
			t.Fatalf("traces at %v, want 5, the last 2 at the %v poll", times(tr, t0), 3*drainEvery)
		}
	})
}

// gateLocker holds the link's worker in RejectEnvelope until open is
// closed (or the link stops), so that the messages after the first wait.
type gateLocker struct {
	*clienttest.Locker
	open    chan struct{}
	waiting atomic.Bool // RejectEnvelope was called
}

func (g *gateLocker) RejectEnvelope(ctx context.Context, reason string) error {
	g.waiting.Store(true)
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Locker.RejectEnvelope(ctx, reason)
}

// Messages dropped from a full inbox are not acknowledged; once none was
// dropped for redeliver (5 s) and the inbox is empty, the link reconnects
// at the next check (every second) and the broker delivers them again:
// each message is handled exactly once.
func TestRedeliveryAfterDropsOnTheFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &gateLocker{Locker: clienttest.New(lockerID, 1), open: make(chan struct{})}
		link, b, _, logs := startFakeLink(t, f, nil)
		const flood = client.InboxSize + 36
		for range flood {
			b.send(protocol.Topic(lockerID, protocol.SuffixGrants), []byte(`{"key_id":"x","body":"%%%","sig":"y"}`))
		}
		synctest.Wait()
		lastDrop := time.Now()
		// The worker holds one; the inbox the next InboxSize.
		if d := link.Dropped(); d != flood-1-client.InboxSize {
			t.Fatalf("%d dropped, want %d", d, flood-1-client.InboxSize)
		}
		time.Sleep(2 * time.Second)
		close(f.open) // the worker catches up
		synctest.Wait()
		if n := len(f.Rejections()); n != 1+client.InboxSize {
			t.Fatalf("%d handled, want %d", n, 1+client.InboxSize)
		}
		time.Sleep(redeliver + 2*time.Second)
		synctest.Wait()
		conns := b.connTimes()
		if len(conns) != 2 {
			t.Fatalf("%d connections, want a reconnect for the dropped messages", len(conns))
		}
		if d := conns[1].Sub(lastDrop); d < redeliver || d > redeliver+time.Second {
			t.Errorf("reconnected %v after the last drop, want %v (+ up to the 1 s check)", d, redeliver)
		}
		if n := len(f.Rejections()); n != flood {
			t.Errorf("%d messages handled in all, want each of the %d once: %s", n, flood, logs)
		}
		if n := b.unackedCount(); n != 0 {
			t.Errorf("%d messages left unacknowledged at the broker", n)
		}
		// And the link goes on serving.
		_, env := windowGrants(t, time.Now(), 0)
		b.send(protocol.Topic(lockerID, protocol.SuffixGrants), env)
		synctest.Wait()
		if n := len(f.Grants()); n != 1 {
			t.Errorf("a good envelope after the flood applied %d times, want once", n)
		}
	})
}

// timedLocker records when ApplyGrants is called and fails the first fails
// calls with a transient error.
type timedLocker struct {
	*clienttest.Locker
	mu    sync.Mutex
	fails int
	calls []time.Time
}

func (l *timedLocker) ApplyGrants(ctx context.Context, body *wire.GrantsBody) (wire.GrantsAck, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	fail := len(l.calls) <= l.fails
	l.mu.Unlock()
	if fail {
		return wire.GrantsAck{}, errDiskFull
	}
	return l.Locker.ApplyGrants(ctx, body)
}

func (l *timedLocker) callTimes() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.calls...)
}

// A grants envelope whose apply fails for a transient reason is tried again
// after 1 s, the wait doubling up to 30 s, until it applies; then it is
// acknowledged once.
func TestApplyRetryScheduleOnTheFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &timedLocker{Locker: clienttest.New(lockerID, 4), fails: 7}
		_, b, _, _ := startFakeLink(t, f, func(o *client.Options) { o.Transient = transientOnly })
		_, env := windowGrants(t, time.Now(), 0)
		b.send(protocol.Topic(lockerID, protocol.SuffixGrants), env)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		calls := f.callTimes()
		want := []time.Duration{retryMin, 2 * retryMin, 4 * retryMin, 8 * retryMin, 16 * retryMin, retryMax, retryMax}
		if len(calls) != len(want)+1 {
			t.Fatalf("%d attempts, want %d", len(calls), len(want)+1)
		}
		for i, w := range want {
			if gap := calls[i+1].Sub(calls[i]); gap != w {
				t.Errorf("attempt %d came %v after the last, want %v", i+2, gap, w)
			}
		}
		if acks := b.published(protocol.SuffixGrantsAck); len(acks) != 1 || !acks[0].at.Equal(calls[len(calls)-1]) {
			t.Errorf("%d grants acks, want one, as soon as applied", len(acks))
		}
		if n := b.unackedCount(); n != 0 {
			t.Errorf("the envelope is still unacknowledged at the broker")
		}
	})
}

// An envelope that expires while it waits for the storage is dropped as
// expired (by the link's clock, Options.Now) at the first retry after its
// expiry, not applied late; the next one is applied.
func TestEnvelopeExpiringWhileItWaitsIsDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &timedLocker{Locker: clienttest.New(lockerID, 4), fails: 1 << 30}
		_, b, _, _ := startFakeLink(t, f, func(o *client.Options) { o.Transient = transientOnly })
		g, env := windowGrants(t, time.Now(), 0)
		b.send(protocol.Topic(lockerID, protocol.SuffixGrants), env)
		time.Sleep(time.Until(g.ExpiresAt) + retryMax)
		synctest.Wait()
		if r := f.Rejections(); len(r) != 1 || r[0] != protocol.ErrExpired.Error() {
			t.Fatalf("rejections %q, want the envelope dropped as expired within %v of its expiry", r, retryMax)
		}
		calls := f.callTimes()
		if last := calls[len(calls)-1]; !last.Before(g.ExpiresAt) {
			t.Errorf("tried at %v, after its expiry at %v", last, g.ExpiresAt)
		}
		f.mu.Lock()
		f.fails = 0
		f.mu.Unlock()
		_, env = windowGrants(t, time.Now(), 1)
		b.send(protocol.Topic(lockerID, protocol.SuffixGrants), env)
		synctest.Wait()
		if got := f.Grants(); len(got) != 1 || got[0].Ops[0].GrantID != "g-w1" {
			t.Errorf("applied %d bodies, want only the fresh one", len(got))
		}
		if acks := b.published(protocol.SuffixGrantsAck); len(acks) != 1 {
			t.Errorf("%d grants acks, want the fresh one's", len(acks))
		}
	})
}
