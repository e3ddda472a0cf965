package client_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/simulator/logtest"
	"github.com/openlocker/locker/simulator/waittest"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/central"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/client/clienttest"
	"github.com/openlocker/locker/sync/protocol"
)

const lockerID = "610091A01"

var (
	centralKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	rogueKey   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	keys       = protocol.Keyring{"central-2026": centralKey.Public().(ed25519.PublicKey)}
)

// testLogger collects the link's logs; they are printed only if the test
// fails (or LINK_LOG is set).
func testLogger(t *testing.T) (*slog.Logger, *logtest.Buffer) {
	buf := &logtest.Buffer{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("LINK_LOG") != "" {
			t.Logf("link log:\n%s", buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// startLink runs a link for f against url until the test ends (or stop is
// called) and waits for it to connect.
func startLink(t *testing.T, url string, f client.Locker, mod func(*client.Options)) (link *client.Link, stop func(), logs *logtest.Buffer) {
	t.Helper()
	logger, logs := testLogger(t)
	// The reconnect back-off is shortened: these tests cut connections and
	// restart the broker on the real clock. The link's other timings are
	// its own; faketime_test.go runs them on a fake clock.
	opts := client.Options{
		Broker:     url,
		Keys:       keys,
		Locker:     f,
		Logger:     logger,
		Software:   "0.3.0-test",
		BackoffMin: 20 * time.Millisecond,
		BackoffMax: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&opts)
	}
	link, err := client.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- link.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10 s of cancel")
		}
	})
	t.Cleanup(stop)
	waittest.For(t, 5*time.Second, link.Connected, "the link to connect")
	return link, stop, logs
}

// testCentral is a stand-in for the central server: the central test
// client (sync/central) with a persistent session that reconnects within
// 200 ms, recording everything published under the locker's prefix.
type testCentral struct {
	t   *testing.T
	c   *central.Client
	rec *central.Recorder
}

func newCentral(t *testing.T, url string) *testCentral {
	t.Helper()
	ce := &testCentral{t: t, rec: central.NewRecorder()}
	// Dial returns once the subscription is acknowledged.
	ce.c = central.DialTest(t, central.Options{Broker: url, ClientID: fmt.Sprintf("central-%d", time.Now().UnixNano()),
		Persistent: true, Reconnect: true, RetryInterval: 50 * time.Millisecond, MaxReconnectInterval: 200 * time.Millisecond,
		Subscribe: []string{protocol.Topic(lockerID, "#")}, OnMessage: ce.rec.Record, Wait: 5 * time.Second})
	return ce
}

func (ce *testCentral) publish(suffix string, payload []byte) {
	ce.t.Helper()
	if err := ce.c.Publish(protocol.Topic(lockerID, suffix), payload); err != nil {
		ce.t.Fatal(err)
	}
}

// get returns the payloads received on the locker's topic suffix, in order.
func (ce *testCentral) get(suffix string) [][]byte {
	var out [][]byte
	for _, m := range ce.rec.All() {
		if m.Topic == protocol.Topic(lockerID, suffix) {
			out = append(out, m.Payload)
		}
	}
	return out
}

// seqs returns the seq of every trace received, in order of arrival.
func (ce *testCentral) seqs() []int64 {
	trs, err := ce.rec.Traces()
	if err != nil {
		ce.t.Fatal(err)
	}
	out := make([]int64, 0, len(trs))
	for _, tr := range trs {
		out = append(out, tr.Seq)
	}
	return out
}

// retained reads the retained message of a topic with a fresh client (nil
// when none comes within 500 ms of subscribing).
func retained(t *testing.T, url, suffix string) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	c, err := central.Dial(central.Options{Broker: url, ClientID: fmt.Sprintf("reader-%d", time.Now().UnixNano()),
		Subscribe: []string{protocol.Topic(lockerID, suffix)}, Wait: 5 * time.Second,
		OnMessage: func(m central.Message) {
			if m.Retained {
				select {
				case got <- m.Payload:
				default:
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case p := <-got:
		return p
	case <-time.After(500 * time.Millisecond):
		return nil
	}
}

func seal(t *testing.T, keyID string, priv ed25519.PrivateKey, v any) []byte {
	t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	env, err := protocol.Seal(keyID, priv, body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func grants(issued time.Time, ops int) wire.GrantsBody {
	g := wire.GrantsBody{
		Kind: "grants", LockerID: lockerID,
		IssuedAt: issued.UTC().Truncate(time.Second), ExpiresAt: issued.Add(time.Hour).UTC().Truncate(time.Second),
	}
	for i := range ops {
		g.Ops = append(g.Ops, wire.GrantOp{
			Op: "put", GrantID: fmt.Sprintf("g-%d", i), Version: 1, Action: "deposit", Size: "M",
			Holder: "13488888888", CodeHash: wire.CodeHash(lockerID, "123456"),
		})
	}
	return g
}

func command(id, action string, n int, expires time.Time) wire.Command {
	return wire.Command{
		Kind: "command", LockerID: lockerID, CommandID: id, Action: action, Compartment: n,
		IssuedAt: time.Now().UTC().Add(-time.Minute), ExpiresAt: expires.UTC(),
	}
}

// (a) A signed grants envelope reaches ApplyGrants and its ack comes back;
// commands are executed once and answered.
func TestGrantsAndCommands(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	b := brokertest.Start(t, brokertest.Options{})
	f := clienttest.New(lockerID, 4)
	_, _, logs := startLink(t, b.URL(), f, nil)
	ce := newCentral(t, b.URL())

	g := grants(time.Now(), 2)
	ce.publish(protocol.SuffixGrants, seal(t, "central-2026", centralKey, g))
	waittest.For(t, 5*time.Second, func() bool { return len(ce.get(protocol.SuffixGrantsAck)) == 1 }, "the grants ack")
	if got := f.Grants(); len(got) != 1 || len(got[0].Ops) != 2 || got[0].Ops[0].Holder != "13488888888" {
		t.Fatalf("ApplyGrants got %+v", got)
	}
	var ack map[string]any
	if err := json.Unmarshal(ce.get(protocol.SuffixGrantsAck)[0], &ack); err != nil {
		t.Fatal(err)
	}
	if ack["issued_at"] != g.IssuedAt.Format(time.RFC3339) || ack["applied"] != 2.0 || ack["stale"] != 0.0 {
		t.Errorf("ack = %v", ack)
	}
	if r, ok := ack["rejected"].([]any); !ok || len(r) != 0 {
		t.Errorf("ack rejected = %#v, want []", ack["rejected"])
	}

	// Commands: executed, a repeat is a duplicate, an expired one is refused.
	cmd := command("c-77", "open", 7, time.Now().Add(time.Minute))
	ce.publish(protocol.SuffixCommands, seal(t, "central-2026", centralKey, cmd))
	ce.publish(protocol.SuffixCommands, seal(t, "central-2026", centralKey, cmd))
	ce.publish(protocol.SuffixCommands, seal(t, "central-2026", centralKey, command("c-78", "disable", 2, time.Now().Add(-time.Second))))
	waittest.For(t, 5*time.Second, func() bool { return len(ce.get(protocol.SuffixCommandsResult)) == 3 }, "three command results")
	var results []wire.CommandResult
	for _, p := range ce.get(protocol.SuffixCommandsResult) {
		var r wire.CommandResult
		if err := json.Unmarshal(p, &r); err != nil {
			t.Fatal(err)
		}
		results = append(results, r)
	}
	want := []wire.CommandResult{
		{CommandID: "c-77", OK: true},
		{CommandID: "c-77", OK: false, Error: "duplicate"},
		{CommandID: "c-78", OK: false, Error: protocol.ErrExpired.Error()},
	}
	if !slices.Equal(results, want) {
		t.Errorf("results = %+v, want %+v", results, want)
	}
	if got := f.Commands(); len(got) != 1 || got[0].Compartment != 7 {
		t.Errorf("Execute got %+v", got)
	}
	if got := f.Rejections(); !slices.Equal(got, []string{protocol.ErrExpired.Error()}) {
		t.Errorf("rejections = %q", got)
	}
	// Holders never reach the logs.
	if strings.Contains(logs.String(), "13488888888") || strings.Contains(logs.String(), "3488") {
		t.Errorf("a holder appears in the logs")
	}
}

// (b) Bad envelopes are rejected with a reason, never applied, and the link
// keeps serving.
func TestRejectedEnvelopes(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	b := brokertest.Start(t, brokertest.Options{})
	f := clienttest.New(lockerID, 4)
	link, _, _ := startLink(t, b.URL(), f, nil)
	ce := newCentral(t, b.URL())

	good := grants(time.Now(), 1)
	other := good
	other.LockerID = "610091A02"
	expired := grants(time.Now().Add(-2*time.Hour), 1)
	cmdAsGrants := command("c-1", "open", 1, time.Now().Add(time.Minute))
	goodBody, _ := json.Marshal(good)
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(centralKey, goodBody))

	cases := []struct {
		name    string
		payload []byte
		reason  error
	}{
		{"forged signature", seal(t, "central-2026", rogueKey, good), protocol.ErrBadSignature},
		{"unknown key", seal(t, "rogue", rogueKey, good), protocol.ErrUnknownKey},
		{"foreign locker", seal(t, "central-2026", centralKey, other), protocol.ErrWrongLocker},
		{"expired", seal(t, "central-2026", centralKey, expired), protocol.ErrExpired},
		{"wrong kind", seal(t, "central-2026", centralKey, cmdAsGrants), protocol.ErrWrongKind},
		{"malformed base64", []byte(`{"key_id":"central-2026","body":"not*base64","sig":"` + sig + `"}`), protocol.ErrMalformed},
		{"malformed JSON", []byte(`{"key_id":`), protocol.ErrMalformed},
		{"signed non-JSON body", mustSealRaw(t, []byte("hello")), protocol.ErrMalformed},
		{"oversized", bytes.Repeat([]byte("A"), 1<<20), protocol.ErrTooLarge},
		{"empty", []byte{}, protocol.ErrMalformed},
	}
	for i, c := range cases {
		ce.publish(protocol.SuffixGrants, c.payload)
		waittest.For(t, 5*time.Second, func() bool { return len(f.Rejections()) == i+1 }, "rejection of %s", c.name)
		if got := f.Rejections()[i]; !strings.HasPrefix(got, c.reason.Error()) {
			t.Errorf("%s: reason %q, want %q…", c.name, got, c.reason)
		}
	}
	if got := f.Grants(); len(got) != 0 {
		t.Fatalf("ApplyGrants called %d times for bad envelopes", len(got))
	}
	if n := len(ce.get(protocol.SuffixGrantsAck)); n != 0 {
		t.Errorf("%d acks for bad envelopes", n)
	}
	// Still serving.
	ce.publish(protocol.SuffixGrants, seal(t, "central-2026", centralKey, good))
	waittest.For(t, 5*time.Second, func() bool { return len(f.Grants()) == 1 }, "the good envelope to be applied")
	if !link.Connected() {
		t.Error("link not connected")
	}
}

func mustSealRaw(t *testing.T, body []byte) []byte {
	env, err := protocol.Seal("central-2026", centralKey, body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// (c) 500 events reach the central in seq order; the outbox empties only
// through AckEvent.
func TestOutboxDrain(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	b := brokertest.Start(t, brokertest.Options{})
	f := clienttest.New(lockerID, 4)
	ce := newCentral(t, b.URL())
	f.Append("door_opened", 200) // waiting before the link starts
	startLink(t, b.URL(), f, nil)
	f.Append("door_closed", 300)

	waittest.For(t, 10*time.Second, func() bool { return len(f.Outbox()) == 0 }, "the outbox to empty")
	waittest.For(t, 5*time.Second, func() bool { return len(ce.seqs()) >= 500 }, "500 traces at the central")
	got := ce.seqs()
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("trace %d has seq %d: not in order (%v…)", i, s, got[max(0, i-3):min(len(got), i+3)])
		}
	}
	if len(got) != 500 {
		t.Errorf("central got %d traces, want 500", len(got))
	}
	acks := f.Acks()
	slices.Sort(acks)
	if len(acks) != 500 || acks[0] != 1 || acks[499] != 500 || len(slices.Compact(acks)) != 500 {
		t.Errorf("%d acks, want each of 1..500 once", len(acks))
	}
}

// An event is acknowledged only on its own PUBACK: traffic held in a stalled
// relay acknowledges nothing, and after the cut everything is sent again on
// the new connection.
func TestNoAckWithoutPuback(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	b := brokertest.Start(t, brokertest.Options{})
	r := brokertest.NewRelay(t, b.Addr())
	f := clienttest.New(lockerID, 4)
	ce := newCentral(t, b.URL())
	link, _, _ := startLink(t, r.URL(), f, func(o *client.Options) { o.InFlight = 5 })

	r.Stall()
	f.Append("door_opened", 12)
	time.Sleep(300 * time.Millisecond)
	if acks := f.Acks(); len(acks) != 0 {
		t.Fatalf("events acknowledged without a PUBACK: %v", acks)
	}
	r.Cut() // the link's connection dies; it reconnects through the relay
	waittest.For(t, 5*time.Second, func() bool { return len(f.Outbox()) == 0 }, "the outbox to empty after the cut")
	waittest.For(t, 5*time.Second, func() bool { return len(ce.seqs()) >= 12 }, "12 traces")
	got := ce.seqs()
	if !slices.Equal(got, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}) {
		t.Errorf("central got %v", got) // nothing reached the broker before the cut
	}
	if !link.Connected() {
		t.Error("not connected after the cut")
	}
}

// (d) The broker stops for a while and comes back: the link reconnects,
// subscribes again and drains what was recorded meanwhile.
func TestBrokerRestart(t *testing.T) {
	for _, persistent := range []bool{true, false} {
		t.Run(fmt.Sprintf("persistence=%v", persistent), func(t *testing.T) {
			t.Parallel() // a Mosquitto of its own; the two start together, so no free-port probe falls in the other's restart
			b := brokertest.Start(t, brokertest.Options{NoPersistence: !persistent})
			f := clienttest.New(lockerID, 4)
			ce := newCentral(t, b.URL())
			link, _, _ := startLink(t, b.URL(), f, nil)

			f.Append("door_opened", 50)
			waittest.For(t, 5*time.Second, func() bool { return len(f.Outbox()) == 0 }, "the first events to drain")

			b.Stop()
			waittest.For(t, 5*time.Second, func() bool { return !link.Connected() }, "the link to notice")
			f.Append("door_closed", 100)
			time.Sleep(1500 * time.Millisecond) // a few failed attempts with back-off
			b.Restart(t)
			waittest.For(t, 10*time.Second, link.Connected, "the link to reconnect")
			waittest.For(t, 10*time.Second, ce.c.IsConnected, "the central to reconnect")

			// Subscribed again: a grants envelope sent now is applied.
			ce.publish(protocol.SuffixGrants, seal(t, "central-2026", centralKey, grants(time.Now(), 1)))
			waittest.For(t, 5*time.Second, func() bool { return len(f.Grants()) == 1 }, "grants after the restart")
			waittest.For(t, 10*time.Second, func() bool { return len(f.Outbox()) == 0 }, "the outbox to empty")

			if persistent {
				// With persistent sessions on both sides, nothing is lost.
				waittest.For(t, 5*time.Second, func() bool {
					got := ce.seqs()
					slices.Sort(got)
					return len(slices.Compact(got)) == 150
				}, "all 150 seqs at the central")
			}
			acks := f.Acks()
			slices.Sort(acks)
			if len(slices.Compact(acks)) != 150 {
				t.Errorf("acks cover %d events, want 150", len(acks))
			}
		})
	}
}

type statusMsg struct {
	State        string      `json:"state"`
	LockerID     string      `json:"locker_id"`
	Software     string      `json:"software"`
	Time         string      `json:"time"`
	LastSeq      int64       `json:"last_seq"`
	Compartments wire.Counts `json:"compartments"`
}

func readStatus(t *testing.T, url string) (statusMsg, []byte) {
	t.Helper()
	p := retained(t, url, protocol.SuffixStatus)
	var s statusMsg
	if p != nil {
		if err := json.Unmarshal(p, &s); err != nil {
			t.Fatalf("status %q: %v", p, err)
		}
	}
	return s, p
}

// (e) Retained status and compartments, an update, and the last will when
// the connection dies without a DISCONNECT. (How updates are spaced is
// TestStatusThrottleOnTheFakeClock's.)
func TestStatusCompartmentsAndWill(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	b := brokertest.Start(t, brokertest.Options{})
	r := brokertest.NewRelay(t, b.Addr())
	f := clienttest.New(lockerID, 3)
	startLink(t, r.URL(), f, nil)

	var st statusMsg
	waittest.For(t, 5*time.Second, func() bool { st, _ = readStatus(t, b.URL()); return st.State == "online" }, "online status")
	if st.LockerID != lockerID || st.Software != "0.3.0-test" || st.Compartments.Total != 3 || st.Compartments.Free != 3 {
		t.Errorf("status = %+v", st)
	}
	if _, err := time.Parse(wire.TimeFormat, st.Time); err != nil {
		t.Errorf("status time %q: %v", st.Time, err)
	}
	var rep wire.CompartmentsReport
	if err := json.Unmarshal(retained(t, b.URL(), protocol.SuffixCompartments), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.LockerID != lockerID || len(rep.Compartments) != 3 || rep.Time == "" {
		t.Errorf("compartments = %+v", rep)
	}

	// A change reaches the broker, retained (within the 1 s throttle).
	f.SetCompartment(2, "disabled", "open")
	waittest.For(t, 5*time.Second, func() bool {
		var rep wire.CompartmentsReport
		json.Unmarshal(retained(t, b.URL(), protocol.SuffixCompartments), &rep)
		return len(rep.Compartments) == 3 && rep.Compartments[1].State == "disabled" && rep.Compartments[1].Door == "open"
	}, "the compartments change")

	// The connection dies without DISCONNECT: the broker publishes the will.
	r.Refuse(true)
	r.Cut()
	var raw []byte
	waittest.For(t, 5*time.Second, func() bool { st, raw = readStatus(t, b.URL()); return st.State == "offline" }, "the last will")
	if want := `{"state":"offline","locker_id":"610091A01"}`; string(raw) != want {
		t.Errorf("will = %s, want %s", raw, want)
	}
}

// A clean shutdown publishes the offline status itself and returns promptly.
func TestCleanShutdown(t *testing.T) {
	b := brokertest.Start(t, brokertest.Options{})
	f := clienttest.New(lockerID, 2)
	_, stop, _ := startLink(t, b.URL(), f, nil)
	waittest.For(t, 5*time.Second, func() bool { st, _ := readStatus(t, b.URL()); return st.State == "online" }, "online status")
	start := time.Now()
	stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if st, raw := readStatus(t, b.URL()); st.State != "offline" {
		t.Errorf("status after shutdown = %s", raw)
	}
}

// The link keeps trying while the broker is not there at all, and stops when
// asked.
func TestRunWithoutBroker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newFakeBroker()
		b.setRefuse(true)
		link, err := client.NewWithDial(client.Options{Broker: "tcp://fake:1883", Keys: keys, Locker: clienttest.New(lockerID, 1),
			Logger: slog.New(slog.DiscardHandler)}, b.dial)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := link.Run(ctx); err != nil {
			t.Errorf("Run = %v", err)
		}
		if n := len(b.dialTimes()); n < 6 {
			t.Errorf("%d attempts in a minute, want it to keep trying (at least 6: the first at once, then within ceilings of 1+2+4+8+16 s)", n)
		}
		if link.Connected() {
			t.Error("connected to nothing")
		}
		if err := link.Run(context.Background()); err == nil {
			t.Error("second Run accepted")
		}
	})
}

func TestNewChecksOptions(t *testing.T) {
	f := clienttest.New(lockerID, 1)
	good := client.Options{Broker: "tcp://127.0.0.1:1", Keys: keys, Locker: f}
	if _, err := client.New(good); err != nil {
		t.Fatalf("New(good): %v", err)
	}
	for name, mod := range map[string]func(*client.Options){
		"no locker":      func(o *client.Options) { o.Locker = nil },
		"no broker":      func(o *client.Options) { o.Broker = "" },
		"no keys":        func(o *client.Options) { o.Keys = nil },
		"short key":      func(o *client.Options) { o.Keys = protocol.Keyring{"k": make([]byte, 5)} },
		"other id":       func(o *client.Options) { o.LockerID = "other" },
		"too much":       func(o *client.Options) { o.InFlight = 21 },
		"negative":       func(o *client.Options) { o.InFlight = -1 },
		"bad locker id":  func(o *client.Options) { o.Locker = clienttest.New("a/b", 1) },
		"backoff upside": func(o *client.Options) { o.BackoffMin, o.BackoffMax = time.Minute, time.Second },
	} {
		o := good
		mod(&o)
		if _, err := client.New(o); err == nil {
			t.Errorf("New accepted %s", name)
		}
	}
}

// grantsFor is grants for another locker id.
func grantsFor(id string, issued time.Time, ops int) wire.GrantsBody {
	g := grants(issued, ops)
	g.LockerID = id
	for i := range g.Ops {
		g.Ops[i].CodeHash = wire.CodeHash(id, "123456")
	}
	return g
}

// readDoc reads a file of docs/.
func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
