package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/protocol"
)

// built is lockerctl, built once by TestMain into a folder it removes.
var built string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lockerctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	built = filepath.Join(dir, "lockerctl")
	code := 1
	if out, err := exec.Command("go", "build", "-o", built, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// build returns the lockerctl binary.
func build(*testing.T) string { return built }

func TestKeygenRefusesToOverwrite(t *testing.T) {
	bin := build(t)
	out := filepath.Join(t.TempDir(), "k.json")
	b, err := exec.Command(bin, "keygen", "-id", "central-2026", "-out", out).CombinedOutput()
	if err != nil || !strings.Contains(string(b), "central-2026:") {
		t.Fatalf("keygen: %v\n%s", err, b)
	}
	kp, err := protocol.LoadKeyPair(out)
	if err != nil || kp.KeyID != "central-2026" {
		t.Fatalf("key file: %v", err)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode())
	}
	if b, err := exec.Command(bin, "keygen", "-out", out).CombinedOutput(); err == nil {
		t.Fatalf("keygen overwrote a key:\n%s", b)
	}
}

// TestGrantPutSignsHashesAndWaitsForTheAck plays the locker: it checks the
// envelope's signature, that only code hashes travel, and answers an ack.
func TestGrantPutSignsHashesAndWaitsForTheAck(t *testing.T) {
	bin := build(t)
	b := brokertest.Start(t, brokertest.Options{})
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "central.json")
	kp, _ := protocol.GenerateKeyPair("dev")
	if err := protocol.SaveKeyPair(keyFile, kp); err != nil {
		t.Fatal(err)
	}
	f := startFakeLocker(t, b.URL(), "L1")
	out, err := exec.Command(bin, "grant", "put", "-broker", b.URL(), "-locker", "L1", "-key", keyFile,
		"-id", "g-7", "-action", "deposit", "-size", "M", "-parcel", "P1", "-holder", "13488888888",
		"-code", "123456", "-pickup-code", "654321", "-pickup-holder", "13499996666").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"applied":1`) {
		t.Fatalf("grant put: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "123456") || strings.Contains(string(out), "654321") {
		t.Fatalf("lockerctl printed a code:\n%s", out)
	}
	envs := f.received()
	if len(envs) != 1 || envs[0].Topic != "lockers/v1/L1/grants" {
		t.Fatalf("the locker received %d envelopes, want 1 grants envelope", len(envs))
	}
	body, _, err := protocol.Open(kp.Keyring(), envs[0].Payload)
	if err != nil {
		t.Fatalf("envelope does not verify: %v", err)
	}
	if strings.Contains(string(body), "123456") || strings.Contains(string(body), "654321") {
		t.Fatal("a code in the clear in the grant body")
	}
	g, err := protocol.DecodeGrants(body, "L1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	op := g.Ops[0]
	if op.GrantID != "g-7" || op.CodeHash != wire.CodeHash("L1", "123456") || op.Pickup == nil ||
		op.Pickup.GrantID != "g-7-p" || op.Pickup.CodeHash != wire.CodeHash("L1", "654321") {
		b, _ := json.Marshal(op)
		t.Fatalf("op = %s", b)
	}
	// A locker that does not answer: a clear error, not a hang.
	out, err = exec.Command(bin, "grant", "revoke", "-broker", b.URL(), "-locker", "NOBODY", "-key", keyFile,
		"-id", "g-7", "-wait", "500ms").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no answer from locker NOBODY") {
		t.Fatalf("revoke to nobody: %v\n%s", err, out)
	}
}

func TestConfigCheck(t *testing.T) {
	bin := build(t)
	out, err := exec.Command(bin, "config", "check", "../../testdata/wiring/mcp23017-96.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "a valid wiring: 96 compartments") || !strings.Contains(string(out), "12 expanders") {
		t.Fatalf("a good wiring: %v\n%s", err, out)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "wiring.yaml")
	os.WriteFile(bad, []byte("compartments:\n  - {number: 1, size: M, lock: P1, door: P1}\n"), 0o600)
	out, err = exec.Command(bin, "config", "check", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "wiring.yaml:2") || !strings.Contains(string(out), `"P1"`) {
		t.Fatalf("a pin used twice: %v\n%s", err, out)
	}
	kp, _ := protocol.GenerateKeyPair("central-2026")
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte("locker_id: L1\ndata: data\nwiring: wiring.yaml\ncentral_keys: ["+kp.PublicString()+
		"]\nbroker: {url: 'tcp://127.0.0.1:1883'}\n"), 0o600)
	out, err = exec.Command(bin, "config", "check", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the wiring it names") {
		t.Fatalf("a config whose wiring is wrong: %v\n%s", err, out)
	}
	os.WriteFile(bad, []byte("compartments:\n  - {number: 1, size: M, lock: P1, door: P2}\n"), 0o600)
	out, err = exec.Command(bin, "config", "check", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "a valid config for locker L1") {
		t.Fatalf("a good config: %v\n%s", err, out)
	}
}
