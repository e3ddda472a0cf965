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

// docs/security.md: the broker password lives in password_file (mode
// 0600), never in the config file. The config accepts it in broker.url
// (ssl://USER:PASSWORD@host, which the MQTT client uses), and lockerd
// prints the URL: -check (the unit's ExecStartPre, so the journal, at
// every start), "lockerd starting … broker=" and the link's "connected
// broker=" lines. Whoever reads the journal (group adm) has the password.
func TestBrokerPasswordInURLIsRefused(t *testing.T) {
	bin := buildLockerd(t)
	dir := t.TempDir()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	const secret = "Hunter2-broker-secret"
	os.WriteFile(filepath.Join(dir, "wiring.yaml"), []byte(goodWiring), 0o600)
	os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("locker_id: 610091A01\ndata: data\nwiring: wiring.yaml\n"+
		"broker:\n  url: ssl://610091A01:"+secret+"@mqtt.example.net:8883\ncentral_keys:\n  - k1:"+
		base64.StdEncoding.EncodeToString(pub)+"\n"), 0o600)
	out, _ := exec.Command(bin, "-check", "-config", filepath.Join(dir, "config.yaml")).CombinedOutput()
	if strings.Contains(string(out), secret) {
		t.Fatalf("lockerd -check printed the broker password:\n%s", out)
	}
}
