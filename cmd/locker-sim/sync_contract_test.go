package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/contract"
	"github.com/openlocker/locker/sync/protocol"
)

// TestPublishedMessagesMatchTheContract drives the real daemon through a
// day's worth of protocol — grants applied, stale and rejected, commands
// run, repeated and expired, a forged envelope, a deposit, a pickup, a
// cancelled deposit, a forced door, a keypad lockout, a snapshot and a clean
// shutdown — and validates every message seen on lockers/v1/# (the central's
// signed envelopes included) against docs/asyncapi.yaml.
func TestPublishedMessagesMatchTheContract(t *testing.T) {
	t.Parallel()
	ct, err := contract.Load("../../docs/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := brokertest.Start(t, brokertest.Options{})
	data := t.TempDir()
	const locker = "SIM01"
	prefix := "lockers/v1/" + locker + "/"
	c := newCentral(t, b.URL(), "central-contract", "lockers/v1/#")
	s := startSimFast(t, b.URL(), data)
	c.wait("online status", func(m msg) bool {
		return m.Topic == prefix+"status" && bytes.Contains(m.Payload, []byte(`"online"`))
	})
	kp, err := protocol.LoadKeyPair(filepath.Join(data, "central-dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	count := func(suffix string) int {
		n := 0
		for _, m := range c.all() {
			if m.Topic == prefix+suffix {
				n++
			}
		}
		return n
	}
	waitCount := func(suffix string, n int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for count(suffix) < n {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d messages on %s within 15 s", n, suffix)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	sendGrants := func(body wire.GrantsBody) {
		t.Helper()
		before := count("grants/ack")
		c.publish(prefix+"grants", sealWith(t, kp.KeyID, kp.Private, body))
		waitCount("grants/ack", before+1)
	}
	until := now.Add(24 * time.Hour)
	reserved := wire.GrantOp{Op: "put", GrantID: "g-2", Version: 1, Action: "deposit", Compartment: 3,
		Holder: "13411112222", CodeHash: wire.CodeHash(locker, "311111"), ValidUntil: &until}
	dup := reserved
	dup.GrantID, dup.Compartment = "g-3", 4
	dup.CodeHash = wire.CodeHash(locker, "111111")
	sendGrants(grantsBody(locker, now, depositWithPickup(locker, "g-1", "111111", "211111", now), reserved, dup,
		wire.GrantOp{Op: "revoke", GrantID: "g-9", Version: 5}))
	sendGrants(grantsBody(locker, now, depositWithPickup(locker, "g-1", "111111", "211111", now))) // stale

	command := func(id, action string, n int, expires time.Time) {
		c.publish(prefix+"commands", sealWith(t, kp.KeyID, kp.Private, wire.Command{Kind: "command", LockerID: locker,
			CommandID: id, IssuedAt: now, ExpiresAt: expires, Action: action, Compartment: n, Reason: "contract test"}))
	}
	command("c-1", "open", 5, now.Add(time.Minute))
	command("c-1", "open", 5, now.Add(time.Minute)) // duplicate
	command("c-2", "disable", 6, now.Add(time.Minute))
	command("c-3", "enable", 6, now.Add(time.Minute))
	command("c-4", "open", 7, now.Add(-time.Minute)) // expired
	waitCount("commands/result", 5)
	c.waitTrace("door_opened", func(tr wire.Trace) bool { return tr.Compartment == 5 })
	s.closeDoor(5)
	c.waitTrace("door_closed", func(tr wire.Trace) bool { return tr.Compartment == 5 })

	_, forger, _ := ed25519.GenerateKey(rand.Reader)
	forged := grantsBody(locker, now)
	forged.Ops = []wire.GrantOp{}
	c.publish(prefix+"grants", sealWith(t, kp.KeyID, forger, forged))
	c.waitTrace("envelope_rejected", nil)

	// Deposit, pickup, a cancelled deposit, a forced door.
	s.keys("111111#")
	n := s.waitOpenDoor()
	s.do(n, "parcel", map[string]bool{"present": true})
	s.closeDoor(n)
	c.waitTrace("deposited", nil)
	s.keys("211111#")
	s.waitOpenDoor()
	s.do(n, "parcel", map[string]bool{"present": false})
	s.closeDoor(n)
	c.waitTrace("picked_up", nil)
	s.keys("311111#")
	if got := s.waitOpenDoor(); got != 3 {
		t.Fatalf("the reserved deposit opened %d", got)
	}
	s.closeDoor(3)
	c.waitTrace("deposit_cancelled", nil)
	s.do(10, "door", map[string]string{"action": "force"})
	c.waitTrace("door_forced", nil)
	for range 5 {
		s.keys("999999#")
	}
	c.waitTrace("keypad_lockout", nil)

	// A snapshot that names nothing revokes everything.
	snap := grantsBody(locker, now)
	snap.Snapshot, snap.Ops = true, []wire.GrantOp{}
	sendGrants(snap)

	s.stop() // clean shutdown: the offline status
	c.wait("offline status", func(m msg) bool {
		return m.Topic == prefix+"status" && bytes.Contains(m.Payload, []byte(`"offline"`))
	})

	seen := map[string]int{}
	var types []string
	for _, m := range c.all() {
		name, err := ct.Validate(m.Topic, m.Payload)
		if err != nil {
			t.Errorf("%v\n%s", err, m.Payload)
			continue
		}
		seen[name]++
		if name == "trace" {
			var tr wire.Trace
			json.Unmarshal(m.Payload, &tr)
			if !slices.Contains(types, tr.Type) {
				types = append(types, tr.Type)
			}
		}
	}
	for _, want := range []string{"grants", "command", "grantsAck", "commandResult", "trace", "status", "compartments"} {
		if seen[want] == 0 {
			t.Errorf("no %s message seen", want)
		}
	}
	t.Logf("validated %d messages %v; trace types: %s", len(c.all()), seen, strings.Join(types, " "))
}
