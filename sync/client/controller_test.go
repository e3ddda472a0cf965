package client_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/openlocker/locker/controller"
	"github.com/openlocker/locker/controller/clocktest"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/simulator/waittest"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/protocol"
)

// These tests run the link against the real controller (with an idle
// cabinet) where the controller's own judgement matters: its time, and the
// ops it refuses.

// idleCabinet is a cabinet where nothing happens: two closed, empty
// compartments without occupancy sensors.
type idleCabinet struct{ events chan hal.Event }

func (idleCabinet) Compartments() []hal.Compartment {
	return []hal.Compartment{{Number: 1, Size: "M"}, {Number: 2, Size: "M"}}
}
func (idleCabinet) Release(int) error                     { return nil }
func (idleCabinet) DoorOpen(int) (bool, error)            { return false, nil }
func (idleCabinet) ParcelPresent(int) (bool, bool, error) { return false, false, nil }
func (idleCabinet) Show(...string) error                  { return nil }
func (c idleCabinet) Events() <-chan hal.Event            { return c.events }

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "locker.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// runController runs a controller on st until the returned stop is called
// (or the test ends), and waits until it is ready.
func runController(t *testing.T, st *store.Store, clock controller.Clock) (*controller.Controller, func()) {
	t.Helper()
	ctl, err := controller.New(controller.Options{LockerID: lockerID, Store: st, Cabinet: idleCabinet{make(chan hal.Event)}, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller Run: %v", err)
		}
	})
	t.Cleanup(stop)
	select {
	case <-ctl.Ready():
	case err := <-done:
		t.Fatalf("controller Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("controller not ready")
	}
	return ctl, stop
}

// traceReasons returns the reason of every trace of type typ the central
// received.
func traceReasons(t *testing.T, ce *testCentral, typ string) []string {
	t.Helper()
	var out []string
	for _, p := range ce.get(protocol.SuffixTraces) {
		var tr struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(p, &tr); err != nil {
			t.Fatalf("trace %q: %v", p, err)
		}
		if tr.Type == typ {
			out = append(out, tr.Reason)
		}
	}
	return out
}

// putOp is a valid deposit grant at time now.
func putOp(id string, version int64, code string, now time.Time) wire.GrantOp {
	until := now.Add(48 * time.Hour).UTC()
	return wire.GrantOp{Op: "put", GrantID: id, Version: version, Action: "deposit", Size: "M",
		Holder: "13488888888", CodeHash: wire.CodeHash(lockerID, code), ValidUntil: &until}
}

// A board that booted in 1970 (no real-time clock, no NTP yet) judges
// envelopes at the controller's time — the last trusted time plus the time
// since start — not at its raw clock: an envelope that expired before the
// power cut is refused, a fresh one is applied. Judged by the raw clock, as
// the link did when it was given no clock (time.Now), the expired envelope
// would pass.
func TestEnvelopeExpiryUsesTheControllerTime(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	st := openStore(t)
	trusted := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	clock := clocktest.New(trusted)        // the board's wall clock
	_, stop := runController(t, st, clock) // records the trusted time
	stop()

	clock.Set(time.Unix(0, 0).UTC()) // power cut; back without a clock
	ctl, _ := runController(t, st, clock)
	if now := ctl.Now(); now.Before(trusted) {
		t.Fatalf("controller time %v, want the estimate from %v", now, trusted)
	}

	b := brokertest.Start(t, brokertest.Options{})
	startLink(t, b.URL(), ctl, func(o *client.Options) { o.Now = ctl.Now })
	ce := newCentral(t, b.URL())

	expired := wire.GrantsBody{Kind: "grants", LockerID: lockerID,
		IssuedAt: trusted.Add(-2 * time.Hour), ExpiresAt: trusted.Add(-time.Hour),
		Ops: []wire.GrantOp{putOp("g-old", 1, "111111", trusted.Add(-2*time.Hour))}}
	fresh := wire.GrantsBody{Kind: "grants", LockerID: lockerID,
		IssuedAt: trusted.Add(-time.Minute), ExpiresAt: trusted.Add(time.Hour),
		Ops: []wire.GrantOp{putOp("g-new", 1, "222222", trusted)}}

	// The hole this closes: by the board's raw clock the expired one is fresh.
	body, err := json.Marshal(expired)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.DecodeGrants(body, lockerID, clock.Now()); err != nil {
		t.Fatalf("by the raw 1970 clock: %v (the test no longer shows the hole)", err)
	}

	ce.publish(protocol.SuffixGrants, seal(t, "central-2026", centralKey, expired))
	ce.publish(protocol.SuffixGrants, seal(t, "central-2026", centralKey, fresh))
	waittest.For(t, 10*time.Second, func() bool { return len(ce.get(protocol.SuffixGrantsAck)) >= 1 }, "the fresh envelope's ack")
	waittest.For(t, 10*time.Second, func() bool { return len(traceReasons(t, ce, "envelope_rejected")) >= 1 }, "the envelope_rejected trace")

	acks := decodeAcks(t, ce.get(protocol.SuffixGrantsAck))
	if len(acks) != 1 || !acks[0].IssuedAt.Equal(fresh.IssuedAt) || acks[0].Applied != 1 {
		t.Fatalf("grants acks %+v, want one for the fresh envelope with 1 applied", acks)
	}
	if r := traceReasons(t, ce, "envelope_rejected"); len(r) != 1 || r[0] != protocol.ErrExpired.Error() {
		t.Errorf("envelope_rejected reasons %q, want one %q", r, protocol.ErrExpired)
	}
}

// The controller refuses malformed ops one by one in its grants ack; such an
// envelope is acknowledged like any other, so more of them than the
// broker's window never hold up what comes after: a put, its revoke and a
// command all arrive and take effect, on one connection.
func TestRefusedOpsDoNotStarveTheLink(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	st := openStore(t)
	ctl, _ := runController(t, st, controller.WallClock)
	b := brokertest.Start(t, brokertest.Options{})
	_, _, logs := startLink(t, b.URL(), ctl, func(o *client.Options) { o.Now = ctl.Now })
	ce := newCentral(t, b.URL())

	now := time.Now().UTC().Truncate(time.Second)
	body := func(i int, ops ...wire.GrantOp) wire.GrantsBody {
		return wire.GrantsBody{Kind: "grants", LockerID: lockerID,
			IssuedAt: now.Add(time.Duration(i) * time.Second), ExpiresAt: now.Add(time.Hour), Ops: ops}
	}
	for i := range windowEnvelopes {
		ce.publish(protocol.SuffixGrants, seal(t, "central-2026", centralKey,
			body(i, wire.GrantOp{Op: "frobnicate", GrantID: "g-bad", Version: int64(i + 1)})))
	}
	ce.publish(protocol.SuffixGrants, seal(t, "central-2026", centralKey, body(100, putOp("g-1", 1, "333333", now))))
	ce.publish(protocol.SuffixGrants, seal(t, "central-2026", centralKey, body(101, wire.GrantOp{Op: "revoke", GrantID: "g-1", Version: 2})))
	ce.publish(protocol.SuffixCommands, seal(t, "central-2026", centralKey, command("c-r1", "disable", 2, time.Now().Add(time.Minute))))

	waittest.For(t, 20*time.Second, func() bool {
		return len(ce.get(protocol.SuffixGrantsAck)) == windowEnvelopes+2 && len(ce.get(protocol.SuffixCommandsResult)) == 1
	}, "every grants ack and the command result")
	acks := decodeAcks(t, ce.get(protocol.SuffixGrantsAck))
	for i, a := range acks[:windowEnvelopes] {
		if a.Applied != 0 || len(a.Rejected) != 1 || a.Rejected[0].GrantID != "g-bad" {
			t.Errorf("ack %d = %+v, want g-bad rejected", i, a)
		}
	}
	if put, rev := acks[windowEnvelopes], acks[windowEnvelopes+1]; put.Applied != 1 || rev.Applied != 1 {
		t.Errorf("put ack %+v, revoke ack %+v: want each applied", put, rev)
	}
	var res wire.CommandResult
	if err := json.Unmarshal(ce.get(protocol.SuffixCommandsResult)[0], &res); err != nil || res.CommandID != "c-r1" || !res.OK {
		t.Errorf("command result %+v (%v), want c-r1 ok", res, err)
	}
	rep, err := ctl.Compartments(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Compartments[1].State; s != "disabled" {
		t.Errorf("compartment 2 is %s after the disable command", s)
	}
	if n := connects(logs); n != 1 {
		t.Errorf("the link connected %d times, want 1", n)
	}
}
