package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
)

// smallCabinet is a 6-compartment wiring with short pulses, for tests that
// release every lock.
func smallCabinet(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("name: six doors\nlocks:\n  pulse: 120ms\nkeypad:\n  rows: [KP_R1, KP_R2, KP_R3, KP_R4]\n  cols: [KP_C1, KP_C2, KP_C3, KP_C4]\n")
	b.WriteString("display:\n  type: hd44780\n  cols: 20\n  rows: 2\n  rs: LCD_RS\n  e: LCD_E\n  data: [LCD_D4, LCD_D5, LCD_D6, LCD_D7]\ncompartments:\n")
	for i, size := range []string{"S", "S", "M", "M", "L", "XL"} {
		fmt.Fprintf(&b, "  - {number: %d, size: %s, lock: LOCK%02d, door: DOOR%02d, parcel: PARCEL%02d}\n", i+1, size, i+1, i+1, i+1)
	}
	p := filepath.Join(t.TempDir(), "six.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSelfTestThroughLockerctl runs lockerctl selftest against the
// simulator with one jammed lock and one compartment in use.
func TestSelfTestThroughLockerctl(t *testing.T) {
	t.Parallel()
	ctl := buildCtl(t)
	s := startSim(t, startListener(t), t.TempDir(), "-config", smallCabinet(t))
	s.do(2, "fault", map[string]string{"fault": "jammed_lock"})
	s.do(6, "door", map[string]string{"action": "force"}) // open: skipped
	s.waitDaemon("door 6 seen open", func(c compartmentsJSON) bool { return c.Compartments[5].Door == "open" })

	out, err := exec.Command(ctl, "selftest", "-sim", s.base).CombinedOutput()
	text := string(out)
	if err == nil || !strings.Contains(text, "1 lock(s) faulty") {
		t.Fatalf("selftest with a jammed lock: %v\n%s", err, text)
	}
	for _, want := range []string{"01  ok", "02  lock_fault", "03  ok", "04  ok", "05  ok", "06  skipped",
		"self-test: 4 ok, 1 fault, 1 skipped"} {
		if !strings.Contains(text, want) {
			t.Errorf("selftest output lacks %q:\n%s", want, text)
		}
	}
	cab := s.cabinet()
	for _, c := range cab.Compartments {
		switch {
		case c.Number == 2 && (c.Door != "closed" || c.State != "fault"):
			t.Errorf("jammed compartment: %+v", c)
		case c.Number != 2 && c.Door != "open":
			t.Errorf("compartment %d did not open: %+v", c.Number, c)
		}
	}
	out, err = exec.Command(ctl, "status", "-sim", s.base).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"fault": 1`) {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err = exec.Command(ctl, "traces", "-sim", s.base).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"type":"selftest"`) || !strings.Contains(string(out), `"type":"lock_fault"`) {
		t.Fatalf("traces: %v\n%s", err, out)
	}
	// -all (compartments in use too) needs a service code.
	cmd := exec.Command(ctl, "selftest", "-all", "-sim", s.base)
	cmd.Stdin = strings.NewReader("87654321\n")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not a service code") {
		t.Fatalf("selftest -all with a wrong code: %v\n%s", err, out)
	}
	// open needs a service code in force: a wrong one is refused (and counts).
	cmd = exec.Command(ctl, "open", "3", "-sim", s.base)
	cmd.Stdin = strings.NewReader("12345678\n")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not a service code") {
		t.Fatalf("open with a wrong code: %v\n%s", err, out)
	}
}

type compartmentsJSON struct {
	Compartments []struct {
		Number int    `json:"number"`
		State  string `json:"state"`
		Door   string `json:"door"`
	} `json:"compartments"`
}

// waitDaemon polls the daemon's view of the compartments until cond holds.
func (s *sim) waitDaemon(what string, cond func(compartmentsJSON) bool) {
	s.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var c compartmentsJSON
		// Until the daemon is ready its view may hold no compartments yet.
		if s.call("GET", "/api/daemon/compartments", nil, &c) == 200 && len(c.Compartments) > 0 && cond(c) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.t.Fatalf("the daemon never saw: %s", what)
}

// TestSimRunsTheExampleWirings: locker-sim -config runs the example
// cabinets — direct GPIO and MCP23017 expanders — with the real daemon: a
// deposit into the first XL compartment goes through the wiring's lock and
// door pins.
func TestSimRunsTheExampleWirings(t *testing.T) {
	t.Parallel()
	for file, want := range map[string][2]int{"gpio-24.yaml": {24, 23}, "mcp23017-96.yaml": {96, 89}} {
		t.Run(file, func(t *testing.T) {
			b := brokertest.Start(t, brokertest.Options{})
			c := newCentral(t, b.URL(), "central-wiring", "lockers/v1/SIM01/#")
			s := startSim(t, b.URL(), t.TempDir(), "-config", filepath.Join("../../testdata/wiring", file))
			if n := len(s.cabinet().Compartments); n != want[0] {
				t.Fatalf("%d compartments, want %d", n, want[0])
			}
			if d := s.keys("111111#"); !strings.Contains(strings.Join(d, " "), "Wrong code") {
				t.Fatalf("display = %q", d)
			}
			c.wait("online", func(m msg) bool { return strings.HasSuffix(m.Topic, "/status") })
			var res map[string]any
			if code := s.call("POST", "/api/central/grants", map[string]any{"action": "deposit", "size": "XL",
				"parcel_id": "BIG", "code": "565656"}, &res); code != 200 {
				t.Fatalf("grant: %d %v", code, res)
			}
			c.wait("ack", func(m msg) bool { return strings.HasSuffix(m.Topic, "/grants/ack") })
			s.keys("565656#")
			if n := s.waitOpenDoor(); n != want[1] {
				t.Fatalf("the XL deposit opened %d, want %d", n, want[1])
			}
			s.do(want[1], "door", map[string]string{"action": "close"})
			c.waitTrace("deposited", func(tr wire.Trace) bool { return tr.Compartment == want[1] })
		})
	}
}
