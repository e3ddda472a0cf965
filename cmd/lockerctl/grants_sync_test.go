package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/central"
	"github.com/openlocker/locker/sync/contract"
	"github.com/openlocker/locker/sync/protocol"
)

// fakeLocker answers every grants envelope with an ack and every command
// with a result, and keeps what it received.
type fakeLocker struct {
	envs *central.Recorder
}

// startFakeLocker connects as locker id; mods set how (TLS, credentials).
func startFakeLocker(t *testing.T, url, id string, mods ...func(*central.Options)) *fakeLocker {
	t.Helper()
	f := &fakeLocker{envs: central.NewRecorder()}
	in := make(chan central.Message, 64)
	o := central.Options{Broker: url, ClientID: "fake-" + id, Wait: 5 * time.Second,
		Subscribe: []string{protocol.Topic(id, "grants"), protocol.Topic(id, "commands")},
		OnMessage: func(m central.Message) {
			f.envs.Record(m)
			in <- m // answered below: a handler does not publish
		}}
	for _, mod := range mods {
		mod(&o)
	}
	cl := central.DialTest(t, o)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case m := <-in:
				if strings.HasSuffix(m.Topic, "/grants") {
					cl.PublishAsync(protocol.Topic(id, "grants/ack"), []byte(`{"issued_at":"2026-11-22T10:00:00Z","applied":1,"stale":0,"rejected":[]}`))
					continue
				}
				cl.PublishAsync(protocol.Topic(id, "commands/result"), []byte(`{"command_id":"c-1","ok":true,"error":""}`))
			case <-done:
				return
			}
		}
	}()
	return f
}

func (f *fakeLocker) received() []central.Message { return f.envs.All() }

// grant transfer, grant snapshot, put, revoke and command sign bodies that
// match docs/asyncapi.yaml; transfer keeps the id with a higher version and
// the new holder's code; snapshot sends the file's ops with snapshot true.
func TestGrantTransferSnapshotAndContract(t *testing.T) {
	bin := build(t)
	ct, err := contract.Load("../../docs/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := brokertest.Start(t, brokertest.Options{})
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "central.json")
	kp, _ := protocol.GenerateKeyPair("dev")
	if err := protocol.SaveKeyPair(keyFile, kp); err != nil {
		t.Fatal(err)
	}
	f := startFakeLocker(t, b.URL(), "L1")
	run := func(args ...string) string {
		t.Helper()
		args = append(args, "-broker", b.URL(), "-locker", "L1", "-key", keyFile)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("lockerctl %s: %v\n%s", strings.Join(args[:2], " "), err, out)
		}
		return string(out)
	}
	run("grant", "put", "-id", "g-7", "-version", "5", "-action", "deposit", "-compartment", "3", "-holder", "13488888888", "-code", "123456")
	run("grant", "transfer", "-id", "g-7", "-action", "deposit", "-compartment", "3", "-holder", "13499996666", "-code", "654321")
	ops := `[{"op":"put","grant_id":"g-8","version":2,"action":"service","code_hash":"` + wire.CodeHash("L1", "777777") +
		`","valid_until":"2030-01-01T00:00:00Z"},{"op":"revoke","grant_id":"g-9","version":3}]`
	opsFile := filepath.Join(dir, "grants.json")
	os.WriteFile(opsFile, []byte(ops), 0o600)
	run("grant", "snapshot", "-file", opsFile)
	os.WriteFile(opsFile, []byte(`[]`), 0o600)
	run("grant", "snapshot", "-file", opsFile)
	run("grant", "revoke", "-id", "g-7")
	run("command", "-id", "c-1", "-action", "open", "-compartment", "3")

	envs := f.received()
	if len(envs) != 6 {
		t.Fatalf("the locker received %d envelopes, want 6", len(envs))
	}
	var bodies []wire.GrantsBody
	for _, m := range envs {
		if _, err := ct.Validate(m.Topic, m.Payload); err != nil {
			t.Errorf("lockerctl signed an invalid message: %v\n%s", err, m.Payload)
		}
		body, _, err := protocol.Open(kp.Keyring(), m.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(m.Topic, "/grants") {
			var g wire.GrantsBody
			json.Unmarshal(body, &g)
			bodies = append(bodies, g)
		}
	}
	put, transfer := bodies[0].Ops[0], bodies[1].Ops[0]
	if transfer.GrantID != "g-7" || transfer.Version <= put.Version || transfer.CodeHash != wire.CodeHash("L1", "654321") ||
		transfer.Holder != "13499996666" || bodies[1].Snapshot {
		t.Errorf("transfer op = %+v (put was version %d)", transfer, put.Version)
	}
	if !bodies[2].Snapshot || len(bodies[2].Ops) != 2 || bodies[2].Ops[1].Op != "revoke" {
		t.Errorf("snapshot = %+v", bodies[2])
	}
	if !bodies[3].Snapshot || bodies[3].Ops == nil || len(bodies[3].Ops) != 0 {
		t.Errorf("empty snapshot = %+v", bodies[3])
	}

	// Refusals: transfer without the new holder's code, a snapshot file that is not a list.
	if out, err := exec.Command(bin, "grant", "transfer", "-id", "g-7", "-holder", "1", "-broker", b.URL()).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "-code is required") {
		t.Errorf("transfer without -code: %v\n%s", err, out)
	}
	os.WriteFile(opsFile, []byte(`{"op":"put"}`), 0o600)
	if out, err := exec.Command(bin, "grant", "snapshot", "-file", opsFile, "-broker", b.URL()).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "want a JSON list of ops") {
		t.Errorf("snapshot of a non-list: %v\n%s", err, out)
	}
	for _, cmd := range [][]string{{"grant", "transfer", "-h"}, {"grant", "snapshot", "-h"}, {"watch", "-h"}} {
		out, err := exec.Command(bin, cmd...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "-broker") {
			t.Errorf("lockerctl %s: %v\n%s", strings.Join(cmd, " "), err, out)
		}
	}
}

// watch prints what the locker publishes, one line per message with its
// topic; retained messages are marked; what the central sends is left out.
func TestWatch(t *testing.T) {
	bin := build(t)
	b := brokertest.Start(t, brokertest.Options{})
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("locker-L1"))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(50)
	pub.Publish("lockers/v1/L1/status", 1, true, `{"state":"online","locker_id":"L1"}`).WaitTimeout(5 * time.Second)

	var out bytes.Buffer
	cmd := exec.Command(bin, "watch", "-broker", b.URL(), "-locker", "L1", "-count", "3", "-for", "10s")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // subscribed
	pub.Publish("lockers/v1/L1/grants", 1, false, `{"key_id":"x"}`).WaitTimeout(5 * time.Second)
	pub.Publish("lockers/v1/L2/traces", 1, false, `{"seq":9}`).WaitTimeout(5 * time.Second)
	pub.Publish("lockers/v1/L1/traces", 1, false, `{"seq":1}`).WaitTimeout(5 * time.Second)
	pub.Publish("lockers/v1/L1/grants/ack", 1, false, `{"applied":1}`).WaitTimeout(5 * time.Second)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watch: %v\n%s", err, &out)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], `lockers/v1/L1/status (retained) {"state":"online","locker_id":"L1"}`) ||
		!strings.Contains(lines[1], `lockers/v1/L1/traces {"seq":1}`) || !strings.Contains(lines[2], "lockers/v1/L1/grants/ack") {
		t.Errorf("watch printed:\n%s", &out)
	}
}
