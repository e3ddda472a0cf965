package central

import (
	"errors"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/protocol"
)

// Send signs with the client's key what the locker's side receives on its
// topic; a client without a key refuses to send; the recorder keeps the
// messages in order, its Wait finds them and gives up after its time-out.
func TestSendSignsAndTheRecorderWaits(t *testing.T) {
	locker := NewRecorder()
	b := brokertest.Start(t, brokertest.Options{})
	kp, err := protocol.GenerateKeyPair("central-test")
	if err != nil {
		t.Fatal(err)
	}
	DialTest(t, Options{Broker: b.URL(), ClientID: "locker-side", Subscribe: []string{protocol.Topic("L1", "+")},
		OnMessage: locker.Record})
	c := DialTest(t, Options{Broker: b.URL(), ClientID: "central-side", Key: kp})

	now := time.Now().UTC().Truncate(time.Second)
	body := wire.GrantsBody{Kind: "grants", LockerID: "L1", IssuedAt: now, ExpiresAt: now.Add(time.Hour), Ops: []wire.GrantOp{}}
	if err := c.Send("L1", protocol.SuffixGrants, body); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(protocol.Topic("L1", protocol.SuffixCommands), []byte("not an envelope")); err != nil {
		t.Fatal(err)
	}
	m, ok := locker.Wait(10*time.Second, func(m Message) bool { return m.Topic == protocol.Topic("L1", protocol.SuffixCommands) })
	if !ok || string(m.Payload) != "not an envelope" {
		t.Fatalf("the raw publish: %v %q", ok, m.Payload)
	}
	all := locker.All()
	if len(all) != 2 || all[0].Topic != protocol.Topic("L1", protocol.SuffixGrants) {
		t.Fatalf("received %+v, want the grants then the command", all)
	}
	raw, keyID, err := protocol.Open(kp.Keyring(), all[0].Payload)
	if err != nil || keyID != "central-test" {
		t.Fatalf("the grants envelope does not verify: %v (key %q)", err, keyID)
	}
	if g, err := protocol.DecodeGrants(raw, "L1", now); err != nil || !g.IssuedAt.Equal(now) {
		t.Fatalf("the grants body: %v %+v", err, g)
	}

	nokey := DialTest(t, Options{Broker: b.URL(), ClientID: "no-key"})
	if err := nokey.Send("L1", protocol.SuffixGrants, body); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Send without a key: %v", err)
	}
	if _, ok := locker.Wait(100*time.Millisecond, func(Message) bool { return false }); ok {
		t.Fatal("Wait accepted nothing it was asked for")
	}
	if n := len(locker.All()); n != 2 {
		t.Fatalf("%d messages after the keyless send, want 2", n)
	}
}

// A clean-session client that reconnects subscribes again: after the
// broker restarts, traces still reach it, and Traces and Distinct read
// them back.
func TestReconnectSubscribesAgain(t *testing.T) {
	b := brokertest.Start(t, brokertest.Options{NoPersistence: true})
	rec := NewRecorder()
	DialTest(t, Options{Broker: b.URL(), ClientID: "central-reconnect", Reconnect: true,
		RetryInterval: 50 * time.Millisecond, MaxReconnectInterval: 200 * time.Millisecond,
		Subscribe: []string{protocol.Topic("+", protocol.SuffixTraces)}, OnMessage: rec.Record})
	locker := DialTest(t, Options{Broker: b.URL(), ClientID: "locker", Reconnect: true,
		RetryInterval: 50 * time.Millisecond, MaxReconnectInterval: 200 * time.Millisecond})
	trace := []byte(`{"event_id":"L1-1","seq":1,"type":"started"}`)
	if err := locker.Publish(protocol.Topic("L1", protocol.SuffixTraces), trace); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec.Wait(10*time.Second, Message.IsTrace); !ok {
		t.Fatal("no trace before the restart")
	}
	b.Restart(t)
	// Published until it arrives: the locker's side may reconnect first.
	deadline := time.Now().Add(20 * time.Second)
	for {
		locker.Publish(protocol.Topic("L1", protocol.SuffixTraces), []byte(`{"event_id":"L1-2","seq":2,"type":"door_opened"}`))
		if _, ok := rec.Wait(200*time.Millisecond, func(m Message) bool { return len(rec.All()) >= 2 }); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no trace after the broker's restart: not subscribed again")
		}
	}
	locker.Publish(protocol.Topic("L1", protocol.SuffixTraces), trace) // a duplicate
	rec.Wait(10*time.Second, func(Message) bool { return len(rec.All()) >= 3 })
	trs, err := rec.Traces()
	if err != nil {
		t.Fatal(err)
	}
	d := Distinct(trs)
	if len(trs) < 3 || len(d) != 2 || d[0].EventID != "L1-1" || d[1].EventID != "L1-2" {
		t.Fatalf("traces %+v, distinct %+v", trs, d)
	}
}
