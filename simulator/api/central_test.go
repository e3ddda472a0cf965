package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/simulator"
)

const (
	testCode       = "246813"
	testPickupCode = "975310"
	testHolder     = "13488888888"
	testRecipient  = "13499996666"
)

func TestCentralGrant(t *testing.T) {
	f := newFixture(t, true)
	before := time.Now().UTC()
	code, v := f.do(t, "POST", "/api/central/grants", `{"action": "deposit", "size": "m", "compartment": 0,
		"parcel_id": "JT3084743373888", "holder": "`+testHolder+`", "code": "`+testCode+`",
		"pickup_code": "`+testPickupCode+`", "pickup_holder": "`+testRecipient+`", "valid_hours": 2}`)
	if code != http.StatusOK {
		t.Fatalf("status %d: %v", code, v)
	}
	grants, _ := f.central.sent()
	if len(grants) != 1 || len(grants[0].Ops) != 1 {
		t.Fatalf("sent %+v", grants)
	}
	g := grants[0]
	op := g.Ops[0]
	if g.Kind != "grants" || g.LockerID != "SIM01" || g.Snapshot || g.IssuedAt.Before(before.Truncate(time.Millisecond)) ||
		g.ExpiresAt.Sub(g.IssuedAt) != time.Hour {
		t.Errorf("body %+v", g)
	}
	if op.Op != "put" || op.Action != "deposit" || op.Size != "M" || op.Compartment != 0 || op.ParcelID != "JT3084743373888" ||
		op.Holder != testHolder || op.CodeHash != wire.CodeHash("SIM01", testCode) || op.Uses != nil {
		t.Errorf("op %+v", op)
	}
	if op.GrantID != v["grant_id"] || float64(op.Version) != v["version"] || !strings.HasPrefix(op.GrantID, "g-") {
		t.Errorf("grant id %q version %d, answer %v", op.GrantID, op.Version, v)
	}
	if op.ValidFrom == nil || op.ValidUntil == nil || op.ValidUntil.Sub(*op.ValidFrom) != 2*time.Hour {
		t.Errorf("validity %v .. %v", op.ValidFrom, op.ValidUntil)
	}
	p := op.Pickup
	if p == nil || p.GrantID != op.GrantID+"-p" || p.Holder != testRecipient || p.CodeHash != wire.CodeHash("SIM01", testPickupCode) ||
		p.ValidUntil == nil || p.ValidUntil.Sub(*op.ValidUntil) != 48*time.Hour || v["pickup_grant_id"] != p.GrantID {
		t.Errorf("pickup %+v, answer %v", p, v)
	}
	// The plain codes are nowhere: not in what is sent, nor in the logs.
	data, _ := json.Marshal(g)
	for _, secret := range []string{testCode, testPickupCode} {
		if strings.Contains(string(data), secret) {
			t.Errorf("the grants body holds a code: %s", data)
		}
	}
	logs := f.logs.String()
	for _, secret := range []string{testCode, testPickupCode, testHolder, testRecipient} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds %q:\n%s", secret, logs)
		}
	}
	if !strings.Contains(logs, "grant_id="+op.GrantID) || !strings.Contains(logs, "134****8888") {
		t.Errorf("the log does not name the grant:\n%s", logs)
	}

	// Defaults, and ids that go up even within one millisecond.
	last := op.Version
	for _, body := range []string{
		`{"action": "service", "code": "1234567"}`,
		`{"action": "pickup", "compartment": 7, "parcel_id": "P1", "code": "7654321"}`,
		`{"action": "reclaim", "compartment": 7, "code": "  7654322 ", "valid_hours": 0.5}`,
		`{"action": "deposit", "compartment": 24, "code": "765432101234"}`,
	} {
		if code, v := f.do(t, "POST", "/api/central/grants", body); code != http.StatusOK {
			t.Fatalf("%s: status %d: %v", body, code, v)
		}
		grants, _ := f.central.sent()
		op := grants[len(grants)-1].Ops[0]
		if op.Version <= last {
			t.Errorf("%s: version %d after %d", body, op.Version, last)
		}
		last = op.Version
		if op.Pickup != nil || op.ValidUntil.Sub(*op.ValidFrom) < 30*time.Minute {
			t.Errorf("%s: op %+v", body, op)
		}
	}
	if grants, _ := f.central.sent(); grants[3].Ops[0].CodeHash != wire.CodeHash("SIM01", "7654322") ||
		grants[1].Ops[0].ValidUntil.Sub(*grants[1].Ops[0].ValidFrom) != 24*time.Hour {
		t.Errorf("trimmed code or default validity: %+v", grants[3].Ops[0])
	}
}

func TestCentralGrantErrors(t *testing.T) {
	f := newFixture(t, true)
	for _, tc := range []struct{ body, want string }{
		{`{"action": "steal", "code": "246813"}`, "action"},
		{`{"code": "246813"}`, "action"},
		{`{"action": "service"}`, "code"},
		{`{"action": "service", "code": "24681"}`, "code"},
		{`{"action": "service", "code": "2468135791357"}`, "code"},
		{`{"action": "service", "code": "24681a"}`, "code"},
		{`{"action": "service", "code": 246813}`, "JSON"},
		{`{"action": "deposit", "code": "246813"}`, "size"},
		{`{"action": "deposit", "size": "XXL", "code": "246813"}`, "size"},
		{`{"action": "deposit", "compartment": 25, "code": "246813"}`, "no compartment 25"},
		{`{"action": "deposit", "compartment": -1, "code": "246813"}`, "no compartment -1"},
		{`{"action": "pickup", "compartment": 3, "code": "246813"}`, "parcel_id"},
		{`{"action": "pickup", "parcel_id": "P", "code": "246813"}`, "compartment"},
		{`{"action": "reclaim", "code": "246813"}`, "compartment"},
		{`{"action": "pickup", "compartment": 3, "parcel_id": "P", "code": "246813", "pickup_code": "975310"}`, "deposit only"},
		{`{"action": "deposit", "size": "S", "code": "246813", "pickup_holder": "1349"}`, "pickup_code"},
		{`{"action": "deposit", "size": "S", "code": "246813", "pickup_code": "246813"}`, "differ"},
		{`{"action": "deposit", "size": "S", "code": "246813", "pickup_code": "97531"}`, "pickup_code"},
		{`{"action": "service", "code": "246813", "valid_hours": 0}`, "valid_hours"},
		{`{"action": "service", "code": "246813", "valid_hours": -3}`, "valid_hours"},
		{`{"action": "service", "code": "246813", "valid_hours": 100000}`, "valid_hours"},
		{`{"action": "service", "code": "246813", "holder": "` + strings.Repeat("1", 33) + `"}`, "holder"},
		{`{"action": "service", "code": "246813", "holder": "1\u0007"}`, "holder"},
		{`{"action": "service", "code": "246813", "parcel": "x"}`, "unknown field"},
		{`{"action": "service", "code": "246813"} {}`, "JSON"},
	} {
		code, v := f.do(t, "POST", "/api/central/grants", tc.body)
		msg, _ := v["error"].(string)
		if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) || len(v) != 1 {
			t.Errorf("%s: status %d %v, want 400 with %q", tc.body, code, v, tc.want)
		}
		if strings.Contains(msg, "246813") || strings.Contains(msg, "97531") {
			t.Errorf("%s: the error echoes a code: %s", tc.body, msg)
		}
	}
	if grants, _ := f.central.sent(); len(grants) != 0 {
		t.Fatalf("sent %+v", grants)
	}

	f.central.fail(errors.New("broker down"))
	code, v := f.do(t, "POST", "/api/central/grants", `{"action": "service", "code": "246813"}`)
	if code != http.StatusBadGateway || !strings.Contains(v["error"].(string), "broker down") {
		t.Fatalf("failing central: %d %v", code, v)
	}
	code, v = f.do(t, "POST", "/api/central/commands", `{"action": "open", "compartment": 1}`)
	if code != http.StatusBadGateway || !strings.Contains(v["error"].(string), "broker down") {
		t.Fatalf("failing central: %d %v", code, v)
	}
	if strings.Contains(f.logs.String(), "246813") {
		t.Fatalf("the log holds a code:\n%s", f.logs.String())
	}
}

func TestCentralCommand(t *testing.T) {
	f := newFixture(t, true)
	before := time.Now().UTC().Truncate(time.Millisecond)
	code, v := f.do(t, "POST", "/api/central/commands", `{"action": "disable", "compartment": 7, "reason": "broken hinge"}`)
	if code != http.StatusOK {
		t.Fatalf("status %d %v", code, v)
	}
	code, v2 := f.do(t, "POST", "/api/central/commands", `{"action": "open", "compartment": 24}`)
	if code != http.StatusOK || v2["command_id"] == v["command_id"] {
		t.Fatalf("status %d %v after %v", code, v2, v)
	}
	_, cmds := f.central.sent()
	if len(cmds) != 2 {
		t.Fatalf("sent %+v", cmds)
	}
	c := cmds[0]
	if c.Kind != "command" || c.LockerID != "SIM01" || c.CommandID != v["command_id"] || !strings.HasPrefix(c.CommandID, "c-") ||
		c.Action != "disable" || c.Compartment != 7 || c.Reason != "broken hinge" ||
		c.IssuedAt.Before(before) || c.ExpiresAt.Sub(c.IssuedAt) != time.Minute {
		t.Errorf("command %+v", c)
	}
	if cmds[1].Reason != "technician" || cmds[1].Action != "open" || cmds[1].Compartment != 24 {
		t.Errorf("command %+v", cmds[1])
	}
	for _, tc := range []struct{ body, want string }{
		{`{"action": "explode", "compartment": 7}`, "action"},
		{`{"action": "open"}`, "no compartment 0"},
		{`{"action": "open", "compartment": 25}`, "no compartment 25"},
		{`{"action": "open", "compartment": 1, "reason": "` + strings.Repeat("x", 201) + `"}`, "reason"},
		{`{"action": "open", "compartment": 1, "why": "x"}`, "unknown field"},
	} {
		if code, v := f.do(t, "POST", "/api/central/commands", tc.body); code != http.StatusBadRequest || !strings.Contains(v["error"].(string), tc.want) {
			t.Errorf("%s: status %d %v, want 400 with %q", tc.body, code, v, tc.want)
		}
	}
	if code, v := f.do(t, "GET", "/api/central", ""); code != 200 || v["available"] != true {
		t.Fatalf("GET /api/central: %d %v", code, v)
	}
}

func TestCentralMissing(t *testing.T) {
	w, err := simulator.DefaultWiring()
	if err != nil {
		t.Fatal(err)
	}
	cab, err := simulator.New(w, simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range []Options{{Cabinet: cab, Daemon: &fakeDaemon{}}, {Cabinet: cab, Central: &fakeCentral{}}} {
		srv := httptest.NewServer(New(opts).Handler())
		f := &fixture{http: srv}
		want := "no central key"
		if opts.Central != nil {
			want = "no daemon is running"
		}
		for _, path := range []string{"/api/central/grants", "/api/central/commands"} {
			code, v := f.do(t, "POST", path, `{"action": "open", "compartment": 1}`)
			if code != http.StatusServiceUnavailable || v["error"] != want {
				t.Errorf("%s: %d %v, want 503 %q", path, code, v, want)
			}
		}
		if code, v := f.do(t, "GET", "/api/central", ""); code != 200 || v["available"] != false {
			t.Errorf("GET /api/central: %d %v", code, v)
		}
		srv.Close()
	}
}

func TestRedact(t *testing.T) {
	body := `{"kind":"grants","locker_id":"SIM01","ops":[{"op":"put","grant_id":"g-1","holder":"13488888888",` +
		`"code_hash":"ab","pickup":{"grant_id":"g-1-p","holder":"13499996666","code_hash":"cd"}}]}`
	env := `{"key_id":"dev","body":"` + base64.StdEncoding.EncodeToString([]byte(body)) + `","sig":"c2ln"}`
	for _, tc := range []struct{ in, want string }{
		{`{"a": 1, "b": [1, 2.50]}`, `{"a":1,"b":[1,2.50]}`}, // unchanged: only compacted
		{`not json`, `"not json"`},
		{`{"holder": "13488888888", "code": "246813", "n": 12345678901234567890}`, `{"holder":"134****8888","n":12345678901234567890}`},
		{`{"holder": "134****8888"}`, `{"holder":"134****8888"}`},
		{`[{"pickup_code": "1", "pickup_holder": "13499996666"}]`, `[{"pickup_holder":"134****6666"}]`},
		{env, `{"body":{"kind":"grants","locker_id":"SIM01","ops":[{"code_hash":"ab","grant_id":"g-1","holder":"134****8888",` +
			`"op":"put","pickup":{"code_hash":"cd","grant_id":"g-1-p","holder":"134****6666"}}]},"key_id":"dev","sig":"c2ln"}`},
		{`{"key_id":"dev","body":"bm90IGpzb24=","sig":"c2ln"}`, `{"key_id":"dev","body":"bm90IGpzb24=","sig":"c2ln"}`},
	} {
		if got := string(redact([]byte(tc.in))); got != tc.want {
			t.Errorf("redact(%s)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}

	f := newFixture(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := openEvents(t, ctx, f.http.URL)
	f.srv.PublishMQTT("lockers/v1/SIM01/grants", []byte(env))
	data := next(t, events, "mqtt", func(string) bool { return true })
	if strings.Contains(data, testHolder) || strings.Contains(data, testRecipient) || !strings.Contains(data, `"holder":"134****8888"`) {
		t.Fatalf("mqtt event %s", data)
	}
}
