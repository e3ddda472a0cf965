package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func buildLockerd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lockerd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

const goodWiring = `name: test cabinet
compartments:
  - number: 1
    size: M
    lock: GPIO17
    door: GPIO27
`

func TestLockerdRefusesBadStart(t *testing.T) {
	bin := buildLockerd(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	key := "central-2026:" + base64.StdEncoding.EncodeToString(pub)

	write := func(dir, name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	config := func(dir, extra string) string {
		return "locker_id: 610091A01\ndata: " + filepath.Join(dir, "data") + "\nwiring: wiring.yaml\n" +
			"central_keys:\n  - " + key + "\nbroker:\n  url: tcp://127.0.0.1:1\n" + extra
	}
	for _, tc := range []struct {
		name   string
		config string // "" = no config file
		wiring string
		setup  func(dir string)
		want   []string
	}{
		{name: "missing config", want: []string{"config.yaml", "no such file"}},
		{name: "unknown field", config: "locker_id: A\nfrobnicate: 1\n", want: []string{"config.yaml:2:", "frobnicate"}},
		{name: "bad locker id", config: strings.Replace(config("", ""), "610091A01", "bad id!", 1), wiring: goodWiring,
			want: []string{"locker_id"}},
		{name: "bad central key", config: strings.Replace(config("", ""), key, "central-2026:AAAA", 1), wiring: goodWiring,
			want: []string{"central_keys[0]"}},
		{name: "tls without its files", config: strings.Replace(config("", "  ca_file: nope.pem\n"), "tcp://", "ssl://", 1),
			wiring: goodWiring, want: []string{"broker.ca_file"}},
		{name: "bad keypad", config: config("", "keypad:\n  min_code_len: 4\n"), wiring: goodWiring,
			want: []string{"keypad.min_code_len 4"}},
		{name: "malformed wiring", config: "@", wiring: "compartments:\n  - number: 1\n    size: M\n    lock: GPIO17\n",
			want: []string{"wiring.yaml:2", "door"}},
		{name: "missing pin", config: "@", wiring: goodWiring, want: []string{`no such pin "GPIO17"`, "lock of compartment 1"}},
		{name: "corrupt database", config: "@", wiring: goodWiring, setup: func(dir string) {
			os.MkdirAll(filepath.Join(dir, "data"), 0o750)
			os.WriteFile(filepath.Join(dir, "data", "locker.db"), []byte(strings.Repeat("junk", 4000)), 0o600)
		}, want: []string{"locker.db", "corrupt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "config.yaml")
			if tc.config == "@" {
				tc.config = config(dir, "")
			}
			if tc.config != "" {
				write(dir, "config.yaml", tc.config)
			}
			if tc.wiring != "" {
				write(dir, "wiring.yaml", tc.wiring)
			}
			if tc.setup != nil {
				tc.setup(dir)
			}
			out, err := exec.Command(bin, "-config", cfgPath).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
				t.Fatalf("lockerd started (err %v):\n%s", err, out)
			}
			msg := strings.TrimSpace(string(out))
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "lockerd: ") {
				t.Fatalf("want one line starting with lockerd:, got:\n%s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestLockerdCheck(t *testing.T) {
	bin := buildLockerd(t)
	dir := t.TempDir()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	os.WriteFile(filepath.Join(dir, "wiring.yaml"), []byte(goodWiring), 0o600)
	os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("locker_id: 610091A01\ndata: data\nwiring: wiring.yaml\n"+
		"broker:\n  url: tcp://127.0.0.1:1883\ncentral_keys:\n  - k1:"+base64.StdEncoding.EncodeToString(pub)+"\n"), 0o600)
	out, err := exec.Command(bin, "-check", "-config", filepath.Join(dir, "config.yaml")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config ok") || !strings.Contains(string(out), "1 compartments") {
		t.Fatalf("lockerd -check: %v\n%s", err, out)
	}
}
