package daemon_test

// FuzzLoadConfig feeds arbitrary bytes to lockerd's config file decoder
// (LoadConfig) and checks what docs/configuration.md promises:
//
//   - it never panics;
//   - a config it refuses gets one line that names the file, and the line
//     where the YAML parser knows it ("config FILE:LINE: problem");
//   - a config it accepts is one the daemon can start with: a valid locker
//     id, absolute paths, a non-empty keyring holding every listed key, a
//     broker URL with a known scheme and a host, a TLS configuration exactly
//     for the TLS schemes (with the CA and client certificate it names), a
//     display language the controller knows, and keypad settings in range.
//
// The files a config may name (ca.pem, locker.pem, locker.key, other.key,
// password.txt) exist in the fuzz folder, so that accepted configs with TLS
// are reachable. There is no config encoder, so there is no round trip.
//
//	go test -run '^$' -fuzz '^FuzzLoadConfig$' -fuzztime 20s ./cmd/internal/daemon

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/controller"
	"github.com/openlocker/locker/sync/protocol"
)

// Two well-formed central keys (32 bytes each); their values do not matter.
var (
	fuzzKeyA = "central-2026:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, 32))
	fuzzKeyB = "central-2027:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
)

// configSeeds are the seeds in code; testdata/fuzz/FuzzLoadConfig holds
// more of the same kind.
var configSeeds = []string{
	// The shape of cmd/lockerd/dist/config.yaml, with TLS.
	"locker_id: 610091A01\ndata: /var/lib/lockerd\nwiring: wiring.yaml\nlanguage: en\ncentral_keys:\n  - " + fuzzKeyA +
		"\nbroker:\n  url: ssl://mqtt.example.net:8883\n  ca_file: ca.pem\n  cert_file: locker.pem\n  key_file: locker.key\n",
	// Plain TCP, two keys, a keypad section, a password file.
	"locker_id: L1\ndata: data\nwiring: wiring.yaml\nlanguage: zh\ncentral_keys: [" + fuzzKeyA + ", " + fuzzKeyB + "]\n" +
		"broker: {url: 'tcp://127.0.0.1:1883', username: locker, password_file: password.txt}\n" +
		"keypad:\n  lockout_after: 5\n  lockout_base: 1m\n  lockout_max: 1h\n  min_code_len: 6\n",
	// Refused: an unknown key, a bad central key, a bad keypad, TLS files on tcp://.
	"locker_id: A\nfrobnicate: 1\n",
	"locker_id: L1\ndata: d\nwiring: w\ncentral_keys: [central-2026:AAAA]\nbroker: {url: 'tcp://h:1'}\n",
	"locker_id: L1\ndata: d\nwiring: w\ncentral_keys: [" + fuzzKeyA + "]\nbroker: {url: 'tcp://h:1'}\nkeypad: {min_code_len: 4}\n",
	"locker_id: L1\ndata: d\nwiring: w\ncentral_keys: [" + fuzzKeyA + "]\nbroker: {url: 'tcp://h:1', ca_file: ca.pem}\n",
	// A cert without its key; a key that is not the cert's.
	"locker_id: L1\ndata: d\nwiring: w\ncentral_keys: [" + fuzzKeyA + "]\nbroker: {url: 'ssl://h:1', cert_file: locker.pem}\n",
	"locker_id: L1\ndata: d\nwiring: w\ncentral_keys: [" + fuzzKeyA + "]\nbroker: {url: 'ssl://h:1', cert_file: locker.pem, key_file: other.key}\n",
	// A type error whose value holds a line break; a syntax error.
	"locker_id: L1\nkeypad:\n  lockout_after: \"5\\n6\"\n",
	"locker_id: [L1\n",
	// An upper-case TLS scheme (url.Parse reads it as ssl) with a CA file
	// that is missing; one key id given twice with two keys.
	"locker_id: L1\ndata: d\nwiring: w\ncentral_keys: [" + fuzzKeyA + "]\nbroker: {url: 'SSL://h:8883', ca_file: nope.pem}\n",
	"locker_id: L1\ndata: d\nwiring: w\ncentral_keys: [" + fuzzKeyA + ", " + strings.Replace(fuzzKeyB, "2027", "2026", 1) +
		"]\nbroker: {url: 'tcp://h:1'}\n",
	// A language the controller does not know.
	"locker_id: L1\ndata: d\nwiring: w\nlanguage: fr\ncentral_keys: [" + fuzzKeyA + "]\nbroker: {url: 'tcp://h:1'}\n",
	// Empty, and only a comment.
	"",
	"# nothing yet\n",
}

// yamlLine finds the line number at the start of a YAML error message.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+):`)

func FuzzLoadConfig(f *testing.F) {
	for _, s := range configSeeds {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	writeTLSFiles(f, dir)
	if err := os.WriteFile(filepath.Join(dir, "password.txt"), []byte("s3cret-pw\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := daemon.LoadConfig(path)
		if err != nil {
			checkConfigError(t, path, data, err)
			return
		}
		checkConfig(t, cfg)
	})
}

// checkConfigError checks the error of a refused config.
func checkConfigError(t *testing.T, path string, data []byte, err error) {
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("the error is not one line: %q", msg)
	}
	if !strings.HasPrefix(msg, "config "+path) {
		t.Fatalf("the error does not name the file first: %q", msg)
	}
	if rest := strings.TrimPrefix(msg, "config "+path); strings.TrimLeft(rest, ": ") == "EOF" {
		t.Fatalf("the error does not say what is wrong: %q", msg)
	}
	// Where the YAML parser knows the line, the error names it.
	var probe daemon.Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	yerr := dec.Decode(&probe)
	if yerr == nil {
		return
	}
	first := yerr.Error()
	var te *yaml.TypeError
	if errors.As(yerr, &te) && len(te.Errors) > 0 {
		first = te.Errors[0]
	}
	if m := yamlLine.FindStringSubmatch(first); m != nil && !strings.HasPrefix(msg, "config "+path+":"+m[1]+":") {
		t.Fatalf("the YAML error is at line %s, the message does not say so: %q (YAML: %q)", m[1], msg, first)
	}
}

// checkConfig checks an accepted config against what the daemon needs.
func checkConfig(t *testing.T, cfg *daemon.Config) {
	if !protocol.ValidLockerID(cfg.LockerID) {
		t.Fatalf("accepted locker_id %q", cfg.LockerID)
	}
	if cfg.Data == "" || cfg.Wiring == "" {
		t.Fatalf("accepted data %q, wiring %q", cfg.Data, cfg.Wiring)
	}
	for name, p := range map[string]string{"data": cfg.Data, "wiring": cfg.Wiring, "ca_file": cfg.Broker.CAFile,
		"cert_file": cfg.Broker.CertFile, "key_file": cfg.Broker.KeyFile, "password_file": cfg.Broker.PasswordFile} {
		if p != "" && !filepath.IsAbs(p) {
			t.Fatalf("%s %q is not resolved against the config's folder", name, p)
		}
	}
	keys, err := cfg.Keyring()
	if err != nil || len(keys) == 0 {
		t.Fatalf("accepted central_keys %q: keyring %v, %v", cfg.CentralKeys, keys, err)
	}
	for _, s := range cfg.CentralKeys { // every key listed is trusted: none dropped for another
		id, pub, err := protocol.ParsePublicKey(s)
		if err != nil || !pub.Equal(keys[id]) {
			t.Fatalf("central_keys %q: %q is not in the keyring (%v)", cfg.CentralKeys, s, err)
		}
	}
	u, err := url.Parse(cfg.Broker.URL)
	if err != nil || u.Host == "" {
		t.Fatalf("accepted broker.url %q: %v", cfg.Broker.URL, err)
	}
	var wantTLS bool
	switch u.Scheme {
	case "tcp", "mqtt":
	case "ssl", "tls", "mqtts":
		wantTLS = true
	default:
		t.Fatalf("accepted broker.url %q: scheme %q", cfg.Broker.URL, u.Scheme)
	}
	tc, err := cfg.TLS()
	if err != nil {
		t.Fatalf("accepted a config whose TLS files do not load: %v", err)
	}
	switch {
	case wantTLS != (tc != nil):
		t.Fatalf("broker.url %q: TLS configuration %v, want one: %v", cfg.Broker.URL, tc != nil, wantTLS)
	case tc != nil && cfg.Broker.CAFile != "" && tc.RootCAs == nil:
		t.Fatalf("broker.ca_file %s set, but not trusted", cfg.Broker.CAFile)
	case tc != nil && cfg.Broker.CertFile != "" && len(tc.Certificates) != 1:
		t.Fatalf("broker.cert_file %s set, but no client certificate", cfg.Broker.CertFile)
	case !wantTLS && (cfg.Broker.CAFile != "" || cfg.Broker.CertFile != ""):
		t.Fatalf("TLS files accepted with broker.url %q", cfg.Broker.URL)
	case (cfg.Broker.CertFile == "") != (cfg.Broker.KeyFile == ""):
		t.Fatalf("cert_file %q without key_file %q, or the other way", cfg.Broker.CertFile, cfg.Broker.KeyFile)
	}
	if cfg.Language != "" && !slices.Contains(controller.Languages(), cfg.Language) {
		t.Fatalf("accepted language %q, which the controller refuses (it knows %v)", cfg.Language, controller.Languages())
	}
	k := cfg.Keypad
	switch {
	case k.LockoutAfter < 0 || k.LockoutAfter > 20:
		t.Fatalf("accepted keypad.lockout_after %d", k.LockoutAfter)
	case k.LockoutBase < 0 || k.LockoutMax < 0 || (k.LockoutMax > 0 && k.LockoutMax < k.LockoutBase):
		t.Fatalf("accepted keypad.lockout_base %v, lockout_max %v", k.LockoutBase, k.LockoutMax)
	case k.MinCodeLen != 0 && (k.MinCodeLen < 6 || k.MinCodeLen > 12):
		t.Fatalf("accepted keypad.min_code_len %d", k.MinCodeLen)
	}
}

// writeTLSFiles writes a self-signed certificate as the CA (ca.pem) and as
// the locker's client certificate (locker.pem, locker.key), and a key that
// belongs to neither (other.key).
func writeTLSFiles(f *testing.F, dir string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		f.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := func(k *ecdsa.PrivateKey) []byte {
		b, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			f.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b})
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	for name, b := range map[string][]byte{"ca.pem": certPEM, "locker.pem": certPEM, "locker.key": keyPEM(key),
		"other.key": keyPEM(other)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			f.Fatal(err)
		}
	}
}
