package contract_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/central"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/client/clienttest"
	"github.com/openlocker/locker/sync/contract"
	"github.com/openlocker/locker/sync/protocol"
)

const docPath = "../../docs/asyncapi.yaml"

func load(t *testing.T) *contract.Contract {
	t.Helper()
	c, err := contract.Load(docPath)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var key = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func sealed(t *testing.T, body string) string {
	t.Helper()
	env, err := protocol.Seal("central-2026", key, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return string(env)
}

const (
	grantsBody = `{"kind":"grants","locker_id":"610091A01","issued_at":"2026-11-22T10:00:00Z","expires_at":"2026-11-22T11:00:00Z","snapshot":false,"ops":[
	 {"op":"put","grant_id":"g-1001","version":1,"action":"deposit","size":"M","parcel_id":"JT3084743373888","holder":"13488888888",
	  "code_hash":"` + hash64 + `","valid_from":"2026-11-22T10:00:00Z","valid_until":"2026-11-23T10:00:00Z","uses":1,
	  "pickup":{"grant_id":"g-1002","holder":"13499996666","code_hash":"` + hash64 + `","valid_until":"2026-11-25T10:00:00Z"}},
	 {"op":"revoke","grant_id":"g-0999","version":7}]}`
	commandBody = `{"kind":"command","locker_id":"610091A01","command_id":"c-77","issued_at":"2026-11-22T10:00:00Z","expires_at":"2026-11-22T10:01:00Z","action":"open","compartment":7,"reason":"customer service"}`
	hash64      = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	trace       = `{"event_id":"610091A01-42","seq":42,"time":"2026-11-22T10:03:12.345Z","type":"deposited","compartment":7,"parcel_id":"JT3084743373888","grant_id":"g-1001","actor":"134****8888","content":"Parcel JT3084743373888 deposited in compartment 07"}`
	status      = `{"state":"online","locker_id":"610091A01","software":"0.3.0","time":"2026-11-22T10:03:12.345Z","last_seq":42,"outbox":0,"compartments":{"total":24,"free":10,"reserved":1,"occupied":11,"expired":1,"disabled":1,"fault":0}}`
	will        = `{"state":"offline","locker_id":"610091A01"}`
	comps       = `{"locker_id":"610091A01","time":"2026-11-22T10:03:12.345Z","compartments":[{"number":7,"size":"M","state":"occupied","door":"closed","parcel_id":"JT3084743373888"}]}`
	ack         = `{"issued_at":"2026-11-22T10:00:00Z","applied":2,"stale":0,"rejected":[{"grant_id":"g-1003","error":"code_hash in use by another grant"}]}`
	result      = `{"command_id":"c-77","ok":true,"error":""}`
)

// The examples of docs/protocol.md are valid, each on its own topic; broken
// variants are not.
func TestProtocolExamples(t *testing.T) {
	c := load(t)
	p := "lockers/v1/610091A01/"
	for _, tc := range []struct {
		topic, payload string
		ok             bool
	}{
		{p + "grants", sealed(t, grantsBody), true},
		{p + "commands", sealed(t, commandBody), true},
		{p + "grants/ack", ack, true},
		{p + "commands/result", result, true},
		{p + "traces", trace, true},
		{p + "status", status, true},
		{p + "status", strings.Replace(status, `"outbox":0`, `"outbox":0,"db_bytes":40960`, 1), true},
		{p + "status", will, true},
		{p + "compartments", comps, true},

		{p + "grants", sealed(t, commandBody), false},                                                  // a command body on grants
		{p + "commands", sealed(t, strings.Replace(commandBody, `"open"`, `"explode"`, 1)), false},     // unknown action
		{p + "grants", sealed(t, strings.Replace(grantsBody, hash64, "ABC", 1)), false},                // bad code hash
		{p + "grants", sealed(t, strings.Replace(grantsBody, `"version":7`, `"version":0`, 1)), false}, // version 0
		{p + "grants", `{"key_id":"k","body":"not base64!","sig":"x"}`, false},
		{p + "traces", strings.Replace(trace, `"134****8888"`, `"13488888888"`, 1), false}, // a full phone number
		{p + "traces", strings.Replace(trace, `"deposited"`, `"teleported"`, 1), false},
		{p + "traces", strings.Replace(trace, `.345Z`, `.345+08:00`, 1), false}, // not UTC
		{p + "traces", strings.Replace(trace, `"seq":42`, `"seq":4.2`, 1), false},
		{p + "traces", strings.Replace(trace, `"content"`, `"undocumented"`, 1), false},
		{p + "status", `{"state":"offline","locker_id":"610091A01","extra":1}`, false},
		{p + "status", `{"state":"online","locker_id":"610091A01"}`, false},
		{p + "compartments", strings.Replace(comps, `"occupied"`, `"haunted"`, 1), false},
		{p + "grants/ack", `{"issued_at":"2026-11-22T10:00:00Z","applied":-1,"stale":0,"rejected":[]}`, false},
		{p + "commands/result", `{"command_id":"c-77","ok":"yes","error":""}`, false},
		{p + "traces", `not json`, false},
	} {
		_, err := c.Validate(tc.topic, []byte(tc.payload))
		if (err == nil) != tc.ok {
			t.Errorf("%s %.80s…: err = %v, want ok = %v", tc.topic, tc.payload, err, tc.ok)
		}
	}
	if _, err := c.Validate("lockers/v1/610091A01/elsewhere", []byte(`{}`)); err == nil {
		t.Error("a topic of no channel validated")
	}
}

// The contract names every topic of docs/protocol.md, and the wire types of
// controller/wire marshal into valid messages.
func TestWireTypesMatchTheContract(t *testing.T) {
	c := load(t)
	for _, suffix := range []string{protocol.SuffixGrants, protocol.SuffixCommands, protocol.SuffixGrantsAck,
		protocol.SuffixCommandsResult, protocol.SuffixTraces, protocol.SuffixStatus, protocol.SuffixCompartments} {
		if _, err := c.Validate(protocol.Topic("L1", suffix), []byte(`{}`)); err != nil && strings.Contains(err.Error(), "no channel") {
			t.Errorf("no channel for %s", suffix)
		}
	}
	now := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
	until := now.Add(time.Hour)
	one := 1
	body, _ := json.Marshal(wire.GrantsBody{Kind: "grants", LockerID: "L1", IssuedAt: now, ExpiresAt: until, Snapshot: true,
		Ops: []wire.GrantOp{{Op: "put", GrantID: "g-1", Version: 3, Action: "pickup", Compartment: 2, ParcelID: "P",
			CodeHash: hash64, ValidFrom: &now, ValidUntil: &until, Uses: &one}, {Op: "revoke", GrantID: "g-2", Version: 9}}})
	if err := c.ValidateSchema("GrantsBody", body); err != nil {
		t.Errorf("wire.GrantsBody: %v\n%s", err, body)
	}
	cmd, _ := json.Marshal(wire.Command{Kind: "command", LockerID: "L1", CommandID: "c", IssuedAt: now, ExpiresAt: until, Action: "disable", Compartment: 1})
	if err := c.ValidateSchema("CommandBody", cmd); err != nil {
		t.Errorf("wire.Command: %v\n%s", err, cmd)
	}
}

// Every message a link publishes during a real Mosquitto run — traces,
// acks, results, retained status with db_bytes and compartments, and the
// offline status — is valid.
func TestLinkMessagesAreValid(t *testing.T) {
	c := load(t)
	b := brokertest.Start(t, brokertest.Options{})
	const id = "610091A01"

	rec := central.NewRecorder()
	ce := central.DialTest(t, central.Options{Broker: b.URL(), ClientID: "central", Wait: 5 * time.Second,
		Subscribe: []string{"lockers/v1/#"}, OnMessage: rec.Record})

	f := clienttest.NewBatching(id, 3)
	link, err := client.New(client.Options{Broker: b.URL(), Keys: protocol.Keyring{"central-2026": key.Public().(ed25519.PublicKey)},
		Locker: f, Logger: slog.New(slog.DiscardHandler), Software: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { link.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for !link.Connected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	pub := func(suffix, payload string) {
		if err := ce.Publish(protocol.Topic(id, suffix), []byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	fresh := func(body string) string {
		now := time.Now().UTC()
		body = strings.ReplaceAll(body, "2026-11-22T10:00:00Z", now.Format(time.RFC3339))
		body = strings.ReplaceAll(body, "2026-11-22T11:00:00Z", now.Add(time.Hour).Format(time.RFC3339))
		return strings.ReplaceAll(body, "2026-11-22T10:01:00Z", now.Add(time.Minute).Format(time.RFC3339))
	}
	pub("grants", sealed(t, fresh(grantsBody)))
	pub("commands", sealed(t, fresh(commandBody)))
	pub("commands", sealed(t, fresh(commandBody))) // duplicate
	pub("commands", sealed(t, commandBody))        // expired: rejected, answered
	f.Append("door_opened", 5)
	f.SetCompartment(2, "occupied", "closed")
	time.Sleep(500 * time.Millisecond)
	cancel()
	<-done
	time.Sleep(200 * time.Millisecond)

	got := rec.All()
	seen := map[string]int{}
	for _, m := range got {
		name, err := c.Validate(m.Topic, m.Payload)
		if err != nil {
			t.Errorf("invalid message on %s: %v\n%s", m.Topic, err, m.Payload)
		}
		seen[name]++
	}
	for _, want := range []string{"grants", "command", "grantsAck", "commandResult", "trace", "status", "compartments"} {
		if seen[want] == 0 {
			t.Errorf("no %s message seen (%v)", want, seen)
		}
	}
	t.Logf("validated %d messages: %v", len(got), seen)
}
