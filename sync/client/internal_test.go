package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"log/slog"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/protocol"
)

// (f) Full jitter within bounds, growth to the cap, and a reset only after a
// stable connection.
func TestBackoff(t *testing.T) {
	b := newBackoff(time.Second, 5*time.Minute, 30*time.Second)
	var asked []int64
	b.rnd = func(n int64) int64 { asked = append(asked, n); return n - 1 } // always the top

	wantCeil := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300}
	for i, w := range wantCeil {
		w *= time.Second
		if got := b.next(); got != w {
			t.Fatalf("attempt %d: sleep %v, want the ceiling %v", i, got, w)
		}
		if asked[i] != int64(w)+1 {
			t.Fatalf("attempt %d: random range [0,%d), want [0,%d]", i, asked[i], w)
		}
	}
	for range 100 { // no overflow however long the broker stays away
		if d := b.next(); d != 5*time.Minute {
			t.Fatalf("after many attempts: %v", d)
		}
	}

	// A connection that drops at once does not reset the count...
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.connected(t0)
	b.lost(t0.Add(5 * time.Second))
	if got := b.next(); got != 5*time.Minute {
		t.Errorf("after a short connection: %v, want 5m", got)
	}
	// ...a stable one does.
	b.connected(t0)
	b.lost(t0.Add(30 * time.Second))
	if got := b.next(); got != time.Second {
		t.Errorf("after a stable connection: %v, want 1s", got)
	}
	// lost without connected (a failed attempt) does not reset.
	b.lost(t0.Add(time.Hour))
	if got := b.next(); got != 2*time.Second {
		t.Errorf("after lost without connected: %v, want 2s", got)
	}

	// With the real random source every sleep is within [0, ceiling].
	r := newBackoff(10*time.Millisecond, 80*time.Millisecond, time.Second)
	seen := map[time.Duration]bool{}
	for i := range 1000 {
		ceil := r.ceiling()
		d := r.next()
		if d < 0 || d > ceil {
			t.Fatalf("attempt %d: %v not in [0, %v]", i, d, ceil)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct sleeps in 1000: not jittered", len(seen))
	}
}

func TestThrottle(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	th := throttle{every: 10 * time.Second}
	if ok, w := th.due(t0); ok || w != 0 {
		t.Errorf("clean: due %v wait %v", ok, w)
	}
	th.dirty = true
	if ok, _ := th.due(t0); !ok {
		t.Error("first change not due at once")
	}
	th.last, th.dirty = t0, true
	if ok, w := th.due(t0.Add(3 * time.Second)); ok || w != 7*time.Second {
		t.Errorf("change after 3 s: due %v wait %v, want the 10 s mark", ok, w)
	}
	if ok, _ := th.due(t0.Add(10 * time.Second)); !ok {
		t.Error("not due at the 10 s mark")
	}
}

// stub is a Locker that counts acknowledgements.
type stub struct {
	acks []int64
}

func (s *stub) LockerID() string { return "L1" }
func (s *stub) ApplyGrants(context.Context, *wire.GrantsBody) (wire.GrantsAck, error) {
	return wire.GrantsAck{}, nil
}
func (s *stub) Execute(context.Context, *wire.Command) (wire.CommandResult, error) {
	return wire.CommandResult{}, nil
}
func (s *stub) RejectEnvelope(context.Context, string) error { return nil }
func (s *stub) PendingEvents(context.Context, int64, int) ([]wire.OutboxEvent, error) {
	return nil, nil
}
func (s *stub) AckEvent(_ context.Context, seq int64) error { s.acks = append(s.acks, seq); return nil }
func (s *stub) EventsAppended() <-chan struct{}             { return nil }
func (s *stub) Status(context.Context) (wire.Status, error) {
	return wire.Status{}, nil
}
func (s *stub) Compartments(context.Context) (wire.CompartmentsReport, error) {
	return wire.CompartmentsReport{}, nil
}
func (s *stub) Changed() <-chan struct{} { return nil }

func newTestLink(t *testing.T, l Locker) *Link {
	t.Helper()
	link, err := New(Options{
		Broker: "tcp://127.0.0.1:1", Locker: l, Logger: slog.New(slog.DiscardHandler),
		Keys: protocol.Keyring{"k": make(ed25519.PublicKey, ed25519.PublicKeySize)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// doneToken is a paho token that completed without error, as paho completes
// old tokens when a session is resumed, PUBACK or not.
type doneToken struct{ err error }

func (d doneToken) Wait() bool                     { return true }
func (d doneToken) WaitTimeout(time.Duration) bool { return true }
func (d doneToken) Error() error                   { return d.err }
func (d doneToken) Done() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// Completions from an earlier connection never remove events.
func TestSettleIgnoresOldEpochs(t *testing.T) {
	st := &stub{}
	l := newTestLink(t, st)
	old := &session{lost: make(chan struct{})}
	l.mu.Lock()
	l.epoch++
	old.epoch = l.epoch
	l.cur = old
	l.mu.Unlock()

	if !l.settle(context.Background(), old, flight{seq: 1, tok: doneToken{}}, nil, nil) {
		t.Fatal("settle on the current connection gave up")
	}
	l.lose(old) // connection lost: the epoch moves on
	if l.settle(context.Background(), old, flight{seq: 2, tok: doneToken{}}, nil, nil) {
		t.Error("settle went on after the connection was lost")
	}
	// A new connection does not make the old one's tokens count.
	cur := &session{lost: make(chan struct{})}
	l.mu.Lock()
	l.epoch++
	cur.epoch = l.epoch
	l.cur = cur
	l.mu.Unlock()
	if l.settle(context.Background(), old, flight{seq: 3, tok: doneToken{}}, nil, nil) {
		t.Error("settle accepted a token of an old connection")
	}
	if len(st.acks) != 1 || st.acks[0] != 1 {
		t.Errorf("acks = %v, want [1]", st.acks)
	}
}

type fakeMessage struct {
	topic   string
	payload []byte
}

func (m fakeMessage) Duplicate() bool   { return false }
func (m fakeMessage) Qos() byte         { return 1 }
func (m fakeMessage) Retained() bool    { return false }
func (m fakeMessage) Topic() string     { return m.topic }
func (m fakeMessage) MessageID() uint16 { return 1 }
func (m fakeMessage) Payload() []byte   { return m.payload }
func (m fakeMessage) Ack()              {}

// A flood never blocks the paho handler nor grows memory: beyond InboxSize
// messages are dropped and counted; oversized payloads are not copied.
func TestOnMessageNeverBlocks(t *testing.T) {
	l := newTestLink(t, &stub{})
	payload := []byte(`{"key_id":"k","body":"","sig":""}`)
	done := make(chan struct{})
	go func() {
		for range 10 * InboxSize {
			l.onMessage(&session{}, fakeMessage{topic: l.t.grants, payload: payload})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("onMessage blocked")
	}
	if got, want := l.Dropped(), int64(9*InboxSize); got != want {
		t.Errorf("Dropped = %d, want %d", got, want)
	}
	in := <-l.inbox
	if !bytes.Equal(in.payload, payload) || &in.payload[0] == &payload[0] {
		t.Error("payload not copied")
	}
	for len(l.inbox) > 0 {
		<-l.inbox
	}
	l.onMessage(&session{}, fakeMessage{topic: l.t.grants, payload: make([]byte, protocol.MaxEnvelope+1)})
	if in := <-l.inbox; in.payload != nil || in.size != protocol.MaxEnvelope+1 {
		t.Errorf("oversized message: payload %d bytes, size %d", len(in.payload), in.size)
	}
}
