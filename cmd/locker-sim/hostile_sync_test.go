package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/protocol"
)

// TestHostileInputChangesNothing extends TestBadEnvelopesChangeNothing: a
// replayed old envelope, a revoked grant's older put, a stale version, a
// transfer (the old code stops working), and then a flood of thousands of
// junk messages on grants and commands — forged, foreign, expired, unknown
// key ids, bad base64, replays, 1 MB payloads. Nothing changes, the keypad
// keeps answering quickly during the flood, and memory does not grow.
func TestHostileInputChangesNothing(t *testing.T) {
	t.Parallel()
	b := brokertest.Start(t, brokertest.Options{})
	data := t.TempDir()
	const locker = "SIM01"
	prefix := "lockers/v1/" + locker + "/"
	c := newCentral(t, b.URL(), "central-hostile", prefix+"#")
	s := startSimFast(t, b.URL(), data, "-quiet")
	c.wait("online status", func(m msg) bool { return m.Topic == prefix+"status" })
	kp, err := protocol.LoadKeyPair(filepath.Join(data, "central-dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	acks := func() []wire.GrantsAck {
		var out []wire.GrantsAck
		for _, m := range c.all() {
			if m.Topic == prefix+"grants/ack" {
				var a wire.GrantsAck
				json.Unmarshal(m.Payload, &a)
				out = append(out, a)
			}
		}
		return out
	}
	send := func(env []byte) wire.GrantsAck {
		t.Helper()
		n := len(acks())
		c.publish(prefix+"grants", env)
		deadline := time.Now().Add(10 * time.Second)
		for len(acks()) <= n {
			if time.Now().After(deadline) {
				t.Fatal("no grants ack within 10 s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return acks()[n]
	}
	wrong := func(code string) {
		t.Helper()
		if d := strings.Join(s.keys(code+"#"), " "); !strings.Contains(d, "Wrong code") {
			t.Fatalf("code %s…: display %q, want a wrong code", code[:2], d)
		}
	}
	until := now.Add(24 * time.Hour)
	put := func(id string, version int64, code string) wire.GrantOp {
		return wire.GrantOp{Op: "put", GrantID: id, Version: version, Action: "deposit", Size: "M",
			Holder: "13488888888", CodeHash: wire.CodeHash(locker, code), ValidUntil: &until}
	}

	// A revoked grant's older put, replayed byte for byte, stays revoked.
	oldPut := sealWith(t, kp.KeyID, kp.Private, grantsBody(locker, now, put("g-r", 2, "810001")))
	if a := send(oldPut); a.Applied != 1 {
		t.Fatalf("put: %+v", a)
	}
	if a := send(sealWith(t, kp.KeyID, kp.Private, grantsBody(locker, now, wire.GrantOp{Op: "revoke", GrantID: "g-r", Version: 3}))); a.Applied != 1 {
		t.Fatalf("revoke: %+v", a)
	}
	if a := send(oldPut); a.Stale != 1 || a.Applied != 0 {
		t.Fatalf("replayed put: %+v", a)
	}
	wrong("810001")
	// A transfer: the old holder's code no longer opens anything; a stale
	// version of the old put does not bring it back.
	send(sealWith(t, kp.KeyID, kp.Private, grantsBody(locker, now, put("g-t", 5, "820001"))))
	send(sealWith(t, kp.KeyID, kp.Private, grantsBody(locker, now, put("g-t", 6, "820002"))))
	if a := send(sealWith(t, kp.KeyID, kp.Private, grantsBody(locker, now, put("g-t", 4, "820001")))); a.Stale != 1 {
		t.Fatalf("stale version: %+v", a)
	}
	wrong("820001")
	wrong("820003") // keep the lockout count below five: a good code resets it below
	s.keys("820002#")
	n := s.waitOpenDoor()
	s.closeDoor(n) // nothing inside: deposit_cancelled
	c.waitTrace("deposit_cancelled", nil)

	// The flood.
	_, forger, _ := ed25519.GenerateKey(rand.Reader)
	expired := grantsBody(locker, now.Add(-2*time.Hour), put("g-x", 1, "830001"))
	expired.ExpiresAt = now.Add(-time.Hour)
	cmd := wire.Command{Kind: "command", LockerID: locker, CommandID: "c-evil", IssuedAt: now, ExpiresAt: now.Add(time.Minute),
		Action: "open", Compartment: 1}
	foreignCmd := cmd
	foreignCmd.LockerID = "OTHER01"
	junk := [][]byte{
		sealWith(t, kp.KeyID, forger, grantsBody(locker, now, put("g-f", 1, "830002"))),
		sealWith(t, "no-such-key", forger, grantsBody(locker, now, put("g-u", 1, "830003"))),
		sealWith(t, kp.KeyID, kp.Private, grantsBody("OTHER01", now, put("g-o", 1, "830004"))),
		sealWith(t, kp.KeyID, kp.Private, expired),
		[]byte(`{"key_id":"dev","body":"%%%not base64%%%","sig":"AAAA"}`),
		[]byte(`{"key_id":`),
		bytes.Repeat([]byte{0xff}, 300),
		oldPut, // replayed: stale
	}
	cmdJunk := [][]byte{
		sealWith(t, kp.KeyID, forger, cmd),
		sealWith(t, kp.KeyID, kp.Private, foreignCmd),
		[]byte(`{"key_id":"dev","body":"e30=","sig":"e30="}`),
	}
	big := bytes.Repeat([]byte("A"), 1<<20)
	rssBefore := s.rssKB()
	flood := scaled(t, "LOCKER_FLOOD", 3000, 60000, 300000)
	floodStart := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range flood {
			var tok interface{ WaitTimeout(time.Duration) bool }
			switch {
			case i%300 == 0:
				tok = c.cl.PublishAsync(prefix+"grants", big)
			case i%2 == 0:
				tok = c.cl.PublishAsync(prefix+"grants", junk[i/2%len(junk)])
			default:
				tok = c.cl.PublishAsync(prefix+"commands", cmdJunk[i/2%len(cmdJunk)])
			}
			if i%100 == 99 {
				tok.WaitTimeout(5 * time.Second)
			}
		}
	}()
	var lat []time.Duration
	for flooding := true; flooding; {
		select {
		case <-done:
			flooding = false
		default:
		}
		lat = append(lat, s.keyLatency())
		time.Sleep(10 * time.Millisecond)
	}
	// Let the locker work through what the broker holds for it.
	for range 50 {
		lat = append(lat, s.keyLatency())
		time.Sleep(20 * time.Millisecond)
	}
	floodTime := time.Since(floodStart)
	slices.Sort(lat)
	p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	rssAfter := s.rssKB()
	t.Logf("flood of %d messages (%d of 1 MB): keypad latency over %d presses p50 %v, p99 %v, max %v; RSS %d → %d KiB",
		flood, flood/300, len(lat), p50.Round(time.Microsecond), p99.Round(time.Microsecond), worst.Round(time.Microsecond), rssBefore, rssAfter)
	if p99 > 500*time.Millisecond {
		t.Errorf("keypad p99 latency %v during the flood", p99)
	}
	if grow := rssAfter - rssBefore; grow > 64<<10 {
		t.Errorf("RSS grew by %d KiB during the flood", grow)
	}

	// Nothing changed: no code of the flood works, no door opened, only the
	// replay was acknowledged (stale), no command was executed.
	changed := 0
	for _, a := range acks()[7:] {
		if a.Applied != 0 || a.Stale != 1 {
			changed++
			t.Errorf("a flood envelope was applied: %+v", a)
		}
	}
	for _, m := range c.all() {
		if m.Topic == prefix+"commands/result" && bytes.Contains(m.Payload, []byte(`"ok":true`)) {
			changed++
			t.Errorf("a flood command ran: %s", m.Payload)
		}
	}
	for _, cm := range s.cabinet().Compartments {
		if cm.Door != "closed" || !cm.Latched || cm.State != "free" {
			changed++
			t.Errorf("compartment changed: %+v", cm)
		}
	}
	if changed > 0 {
		printTortureRow("junk flood", flood, "messages", changed, "the flood changed the locker")
		t.FailNow()
	}
	for _, code := range []string{"830001", "830002", "830003"} {
		wrong(code)
	}
	rej := 0
	for _, tr := range c.traces() {
		if tr.Type == "envelope_rejected" {
			rej++
		}
	}
	if most := 2 + int(floodTime/(10*time.Second)); rej == 0 || rej > most {
		t.Errorf("%d envelope_rejected traces for a %d-message flood over %v (at most one per 10 s)", rej, flood, floodTime.Round(time.Second))
	}
	// Still serving: a good grant after the flood works.
	send(sealWith(t, kp.KeyID, kp.Private, grantsBody(locker, time.Now().UTC(), put("g-good", 1, "840001"))))
	s.keys("840001#")
	s.waitOpenDoor()
	printTortureRow("junk flood", flood, "messages", 0, fmt.Sprintf(
		"forged, foreign-key, foreign-locker, expired, malformed, replayed and 1 MB messages on grants and commands over %v (%d of 1 MB); nothing applied or run, no door moved; %d envelope_rejected traces; keypad p99 %v during it; RSS %d → %d KiB",
		floodTime.Round(time.Second), flood/300, rej, p99.Round(time.Millisecond), rssBefore, rssAfter))
}
