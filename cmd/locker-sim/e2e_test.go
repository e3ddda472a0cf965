package main

// End-to-end: a real Mosquitto on 127.0.0.1, the real locker-sim binary
// pointed at it, the simulator driven through its HTTP API as a person
// would, and a "central" MQTT client that signs grants and listens.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/simulator/api"
	"github.com/openlocker/locker/simulator/logtest"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/central"
	"github.com/openlocker/locker/sync/protocol"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// sim is a running locker-sim process.
type sim struct {
	t      *testing.T
	cmd    *exec.Cmd
	base   string
	data   string
	broker string
	logs   *logtest.Buffer // the process output; exec writes it from its own goroutine
	done   chan struct{}
}

func startSim(t *testing.T, broker, data string, args ...string) *sim {
	t.Helper()
	return startSimBinary(t, buildSim(t), broker, data, args...)
}

// startSimBinary starts the locker-sim binary bin and waits for its API;
// the test's cleanup checks the cabinet's invariants and stops it.
func startSimBinary(t *testing.T, bin, broker, data string, args ...string) *sim {
	t.Helper()
	s := &sim{t: t, base: "http://" + freeAddr(t), data: data, broker: broker, logs: &logtest.Buffer{}, done: make(chan struct{})}
	all := append([]string{"-broker", broker, "-http", strings.TrimPrefix(s.base, "http://"), "-data", data}, args...)
	s.cmd = exec.Command(bin, all...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.checkInvariants()
		s.stop()
		if t.Failed() {
			t.Logf("locker-sim output:\n%s", s.logs.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(s.base + "/api/cabinet")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		select {
		case <-s.done:
			t.Fatalf("locker-sim exited at start:\n%s", s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("locker-sim did not serve its API within 20 s:\n%s", s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkInvariants fails the test when the simulated cabinet saw the power
// budget, the pulse cap, the gap or a cool-down broken.
func (s *sim) checkInvariants() {
	select {
	case <-s.done:
		return // not running (killed by the test)
	default:
	}
	var inv struct {
		OK     bool     `json:"ok"`
		Broken []string `json:"broken"`
	}
	if code := s.call("GET", "/api/invariants", nil, &inv); code != 200 {
		s.t.Errorf("GET /api/invariants: %d", code)
		return
	}
	if !inv.OK {
		s.t.Errorf("the simulated cabinet's invariants were broken: %v", inv.Broken)
	}
}

func (s *sim) stop() {
	if s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// call sends a JSON request to the simulator API and decodes the answer.
func (s *sim) call(method, path string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

type cabinetJSON struct {
	LockerID     string            `json:"locker_id"`
	Display      []string          `json:"display"`
	Compartments []api.Compartment `json:"compartments"`
}

func (s *sim) cabinet() cabinetJSON {
	var c cabinetJSON
	if code := s.call("GET", "/api/cabinet", nil, &c); code != 200 {
		s.t.Fatalf("GET /api/cabinet: %d", code)
	}
	return c
}

func (s *sim) keys(k string) []string {
	s.t.Helper()
	var out struct {
		Display []string `json:"display"`
		Error   string   `json:"error"`
	}
	if code := s.call("POST", "/api/keypad", map[string]string{"keys": k}, &out); code != 200 {
		s.t.Fatalf("keypad %q: %d %s", strings.Repeat("x", len(k)), code, out.Error)
	}
	return out.Display
}

func (s *sim) do(n int, what string, body any) {
	s.t.Helper()
	var out map[string]any
	if code := s.call("POST", fmt.Sprintf("/api/compartments/%d/%s", n, what), body, &out); code != 200 {
		s.t.Fatalf("compartment %d %s %v: %d %v", n, what, body, code, out)
	}
}

// waitOpenDoor returns the first compartment whose door is open, and read
// open by the daemon (read_door): a person who shuts it sooner would be
// faster than the debounce, and on a loaded machine the daemon's poll can
// lag the cabinet by more than the few milliseconds a test takes to shut
// it (TestDepositAndPickupOverRealBroker saw no deposit at load 14).
func (s *sim) waitOpenDoor() int {
	s.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range s.cabinet().Compartments {
			if c.Door == "open" && c.ReadDoor == "open" {
				// A person takes a moment at the door: a door read
				// closed within MinOpenTime (200ms) of opening for a
				// release is a sensor_fault, not a deposit or pickup.
				// Closed at once, it was when a board's poll saw the
				// open late (a loaded machine, slower reply timings).
				time.Sleep(300 * time.Millisecond)
				return c.Number
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatal("no door opened")
	return 0
}

// testCentral is the test's stand-in for the central server: it records
// every message on its filter.
type testCentral struct {
	t   *testing.T
	cl  *central.Client
	rec *central.Recorder
}

type msg = central.Message

func newCentral(t *testing.T, broker, id, filter string) *testCentral {
	t.Helper()
	rec := central.NewRecorder()
	return &testCentral{t: t, rec: rec,
		cl: central.DialTest(t, central.Options{Broker: broker, ClientID: id, Subscribe: []string{filter}, OnMessage: rec.Record})}
}

func (c *testCentral) publish(topic string, payload []byte) {
	c.t.Helper()
	if err := c.cl.Publish(topic, payload); err != nil {
		c.t.Fatal(err)
	}
}

// wait returns the first message that match accepts.
func (c *testCentral) wait(what string, match func(msg) bool) msg {
	c.t.Helper()
	m, ok := c.rec.Wait(15*time.Second, match)
	if !ok {
		c.t.Fatalf("no %s within 15 s", what)
	}
	return m
}

func (c *testCentral) all() []msg { return c.rec.All() }

// traces returns the distinct traces received, by event_id.
func (c *testCentral) traces() []wire.Trace {
	c.t.Helper()
	trs, err := c.rec.Traces()
	if err != nil {
		c.t.Fatal(err)
	}
	return central.Distinct(trs)
}

func (c *testCentral) waitTrace(typ string, match func(wire.Trace) bool) wire.Trace {
	c.t.Helper()
	var found wire.Trace
	c.wait("trace "+typ, func(m msg) bool {
		if !m.IsTrace() {
			return false
		}
		var tr wire.Trace
		if json.Unmarshal(m.Payload, &tr) != nil || tr.Type != typ || (match != nil && !match(tr)) {
			return false
		}
		found = tr
		return true
	})
	return found
}

func sealWith(t *testing.T, keyID string, priv ed25519.PrivateKey, v any) []byte {
	t.Helper()
	env, err := central.Seal(protocol.KeyPair{KeyID: keyID, Private: priv}, v)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func grantsBody(locker string, now time.Time, ops ...wire.GrantOp) wire.GrantsBody {
	return wire.GrantsBody{Kind: "grants", LockerID: locker, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Ops: ops}
}

func depositWithPickup(locker, id, code, pickupCode string, now time.Time) wire.GrantOp {
	until, puntil := now.Add(24*time.Hour), now.Add(72*time.Hour)
	return wire.GrantOp{Op: "put", GrantID: id, Version: 1, Action: "deposit", Size: "M",
		ParcelID: "JT3084743373888", Holder: "13488888888", CodeHash: wire.CodeHash(locker, code),
		ValidUntil: &until,
		Pickup: &wire.PickupSpec{GrantID: id + "-p", Holder: "13499996666",
			CodeHash: wire.CodeHash(locker, pickupCode), ValidUntil: &puntil}}
}

func TestDepositAndPickupOverRealBroker(t *testing.T) {
	t.Parallel()
	b := brokertest.Start(t, brokertest.Options{})
	data := t.TempDir()
	const locker = "SIM01"
	prefix := "lockers/v1/" + locker + "/"
	// The central listens before the locker starts, so it sees every trace.
	c := newCentral(t, b.URL(), "central-e2e", prefix+"#")
	s := startSim(t, b.URL(), data)

	cab := s.cabinet()
	if cab.LockerID != locker || len(cab.Compartments) != 24 {
		t.Fatalf("cabinet: %s with %d compartments", cab.LockerID, len(cab.Compartments))
	}
	// The daemon connects and says so, retained.
	c.wait("online status", func(m msg) bool {
		return m.Topic == prefix+"status" && bytes.Contains(m.Payload, []byte(`"online"`))
	})

	kp, err := protocol.LoadKeyPair(filepath.Join(data, "central-dev.json"))
	if err != nil {
		t.Fatalf("the development key pair was not created: %v", err)
	}
	now := time.Now().UTC()
	c.publish(prefix+"grants", sealWith(t, kp.KeyID, kp.Private,
		grantsBody(locker, now, depositWithPickup(locker, "g-1001", "123456", "654321", now))))
	ackMsg := c.wait("grants ack", func(m msg) bool { return m.Topic == prefix+"grants/ack" })
	var ack wire.GrantsAck
	if err := json.Unmarshal(ackMsg.Payload, &ack); err != nil || ack.Applied != 1 || len(ack.Rejected) != 0 {
		t.Fatalf("ack = %s", ackMsg.Payload)
	}

	// The courier types the code: the smallest free M compartment opens.
	display := s.keys("123456#")
	n := s.waitOpenDoor()
	if got := cab.Compartments[n-1].Size; got != "M" {
		t.Fatalf("deposit opened compartment %d of size %s, want the smallest fitting (M)", n, got)
	}
	if !strings.Contains(strings.Join(display, " "), fmt.Sprintf("%02d", n)) {
		t.Fatalf("display after the code = %q, want it to name door %02d", display, n)
	}
	s.do(n, "parcel", map[string]bool{"present": true})
	s.do(n, "door", map[string]string{"action": "close"})
	dep := c.waitTrace("deposited", nil)
	if dep.Compartment != n || dep.ParcelID != "JT3084743373888" || dep.GrantID != "g-1001" || dep.Actor != "134****8888" {
		t.Fatalf("deposited = %+v", dep)
	}

	// The recipient picks up with the nested pickup grant's code.
	s.keys("654321#")
	if got := s.waitOpenDoor(); got != n {
		t.Fatalf("pickup opened %d, want %d", got, n)
	}
	s.do(n, "parcel", map[string]bool{"present": false})
	s.do(n, "door", map[string]string{"action": "close"})
	pu := c.waitTrace("picked_up", nil)
	if pu.Compartment != n || pu.Actor != "134****6666" || pu.GrantID != "g-1001-p" {
		t.Fatalf("picked_up = %+v", pu)
	}

	// Every trace, in seq order from 1 without a gap; no phone number anywhere.
	trs := c.traces()
	for i, tr := range trs {
		if tr.Seq != int64(i+1) || tr.EventID != fmt.Sprintf("%s-%d", locker, i+1) {
			t.Fatalf("trace %d has seq %d id %s: %v", i, tr.Seq, tr.EventID, trs)
		}
	}
	var types []string
	for _, tr := range trs {
		types = append(types, tr.Type)
	}
	want := "started lock_released door_opened door_closed deposited lock_released door_opened door_closed picked_up"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("traces = %s\nwant      %s", got, want)
	}
	for _, m := range c.all() {
		if bytes.Contains(m.Payload, []byte("88888888")) || bytes.Contains(m.Payload, []byte("99996666")) {
			t.Fatalf("a full phone number left the locker on %s: %s", m.Topic, m.Payload)
		}
	}
	if strings.Contains(s.logs.String(), "13488888888") || strings.Contains(s.logs.String(), "123456#") {
		t.Fatal("a phone number or code is in the logs")
	}

	// A fresh subscriber finds the retained status and compartments.
	c.wait("compartments after pickup", func(m msg) bool {
		var rep wire.CompartmentsReport
		return m.Topic == prefix+"compartments" && json.Unmarshal(m.Payload, &rep) == nil &&
			len(rep.Compartments) == 24 && rep.Compartments[n-1].State == "free" && rep.Compartments[n-1].Door == "closed"
	})
	fresh := newCentral(t, b.URL(), "central-fresh", prefix+"#")
	st := fresh.wait("retained status", func(m msg) bool { return m.Topic == prefix+"status" && m.Retained })
	var status wire.Status
	if err := json.Unmarshal(st.Payload, &status); err != nil || status.State != "online" || status.LockerID != locker ||
		status.Compartments.Total != 24 {
		t.Fatalf("retained status = %s", st.Payload)
	}
	fresh.wait("retained compartments", func(m msg) bool { return m.Topic == prefix+"compartments" && m.Retained })
}

func TestBadEnvelopesChangeNothing(t *testing.T) {
	t.Parallel()
	b := brokertest.Start(t, brokertest.Options{})
	data := t.TempDir()
	s := startSim(t, b.URL(), data)
	const locker = "SIM01"
	prefix := "lockers/v1/" + locker + "/"
	c := newCentral(t, b.URL(), "central-bad", prefix+"#")
	c.wait("online status", func(m msg) bool { return m.Topic == prefix+"status" })
	kp, err := protocol.LoadKeyPair(filepath.Join(data, "central-dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	_, forger, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now().UTC()
	grant := func(id, code string) wire.GrantOp {
		return depositWithPickup(locker, id, code, code+"1", now)
	}
	expired := grantsBody(locker, now.Add(-2*time.Hour), grant("g-exp", "300003"))
	expired.ExpiresAt = now.Add(-time.Hour)
	bad := [][]byte{
		// forged: the dev key's id, another key's signature
		sealWith(t, kp.KeyID, forger, grantsBody(locker, now, grant("g-forged", "100001"))),
		// foreign: signed right, for another locker
		sealWith(t, kp.KeyID, kp.Private, grantsBody("OTHER01", now, grant("g-foreign", "200002"))),
		// expired
		sealWith(t, kp.KeyID, kp.Private, expired),
		// malformed
		[]byte(`{"key_id": "dev", "body": "not base64!!", "sig": "x"}`),
		[]byte(`not json at all`),
	}
	for _, env := range bad {
		c.publish(prefix+"grants", env)
	}
	rej := c.waitTrace("envelope_rejected", nil)
	if rej.Reason == "" {
		t.Fatalf("envelope_rejected without a reason: %+v", rej)
	}
	// None of those grants is in force: each code is a wrong code.
	for _, code := range []string{"100001", "200002", "300003"} {
		d := s.keys(code + "#")
		if !strings.Contains(strings.Join(d, " "), "Wrong code") {
			t.Fatalf("code of a bad envelope: display %q", d)
		}
	}
	for _, cm := range s.cabinet().Compartments {
		if cm.Door != "closed" || !cm.Latched || cm.State != "free" {
			t.Fatalf("compartment changed: %+v", cm)
		}
	}
	for _, m := range c.all() {
		if m.Topic == prefix+"grants/ack" {
			t.Fatalf("a bad envelope was acknowledged: %s", m.Payload)
		}
	}
	// The locker still serves: a good envelope is applied.
	c.publish(prefix+"grants", sealWith(t, kp.KeyID, kp.Private, grantsBody(locker, now, grant("g-good", "400004"))))
	c.wait("ack of the good envelope", func(m msg) bool { return m.Topic == prefix+"grants/ack" })
	s.keys("400004#")
	s.waitOpenDoor()
}

// TestPageCentralSignsWithTheDevKey: the web page's grant form goes through
// the development central: signed, published, applied, and the code opens.
func TestPageCentralSignsWithTheDevKey(t *testing.T) {
	t.Parallel()
	b := brokertest.Start(t, brokertest.Options{})
	const locker = "SIM01"
	c := newCentral(t, b.URL(), "central-page", "lockers/v1/"+locker+"/#")
	s := startSim(t, b.URL(), t.TempDir())
	c.wait("online status", func(m msg) bool {
		return strings.HasSuffix(m.Topic, "/status") && bytes.Contains(m.Payload, []byte(`"online"`))
	})
	var res map[string]any
	code := s.call("POST", "/api/central/grants", map[string]any{"action": "deposit", "size": "L", "parcel_id": "PG1",
		"holder": "13488888888", "code": "246810", "pickup_code": "108642", "valid_hours": 2}, &res)
	if code != 200 {
		t.Fatalf("grant form: %d %v", code, res)
	}
	c.wait("grants ack", func(m msg) bool {
		return strings.HasSuffix(m.Topic, "/grants/ack") && bytes.Contains(m.Payload, []byte(`"applied":1`))
	})
	for _, m := range c.all() {
		if bytes.Contains(m.Payload, []byte("246810")) || bytes.Contains(m.Payload, []byte("88888888")) {
			t.Fatalf("a code or phone number went over MQTT: %s %s", m.Topic, m.Payload)
		}
	}
	s.keys("246810#")
	if n := s.waitOpenDoor(); n != 17 {
		t.Fatalf("the L deposit opened %d, want 17", n)
	}
	code = s.call("POST", "/api/central/commands", map[string]any{"action": "disable", "compartment": 3}, &res)
	if code != 200 {
		t.Fatalf("command form: %d %v", code, res)
	}
	c.waitTrace("compartment_disabled", func(tr wire.Trace) bool { return tr.Compartment == 3 })
}
