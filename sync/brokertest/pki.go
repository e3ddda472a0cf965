package brokertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// PKI is a throw-away certificate authority for tests: it issues a server
// certificate for 127.0.0.1 and client certificates whose Common Name is the
// locker id (or "central"), as docs/security.md describes for production.
// Everything is made with crypto/x509; no openssl is needed.
type PKI struct {
	// Dir holds the PEM files.
	Dir string
	// CAFile is the CA certificate (PEM).
	CAFile string

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool
	n     int64
}

// NewPKI makes a CA (named name, e.g. "test CA") with its files in a new
// temporary folder.
func NewPKI(t testing.TB, name string) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"openlocker tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p.caKey, p.n = key, 1
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca)
	p.CAFile = filepath.Join(p.Dir, "ca.crt")
	writePEM(t, p.CAFile, "CERTIFICATE", der)
	return p
}

// Pool is a certificate pool holding the CA.
func (p *PKI) Pool() *x509.CertPool { return p.pool }

// issue signs a leaf certificate and writes NAME.crt and NAME.key.
func (p *PKI) issue(t testing.TB, file, cn string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.n++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.n),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(p.Dir, file+".crt")
	keyFile = filepath.Join(p.Dir, file+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

// ServerTLS issues the broker's certificate (for 127.0.0.1 and localhost)
// and returns the listener configuration; set RequireCertificate or
// UseIdentityAsUsername on it for mutual TLS.
func (p *PKI) ServerTLS(t testing.TB) *TLS {
	t.Helper()
	cert, key := p.issue(t, "server", "127.0.0.1", true)
	return &TLS{CAFile: p.CAFile, CertFile: cert, KeyFile: key}
}

// ClientFiles issues a client certificate with Common Name cn and returns
// its PEM files.
func (p *PKI) ClientFiles(t testing.TB, cn string) (certFile, keyFile string) {
	t.Helper()
	return p.issue(t, "client-"+cn, cn, false)
}

// ClientTLS is a client TLS configuration that trusts the CA and, when cn is
// not empty, presents a client certificate with Common Name cn.
func (p *PKI) ClientTLS(t testing.TB, cn string) *tls.Config {
	t.Helper()
	tc := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12}
	if cn != "" {
		certFile, keyFile := p.ClientFiles(t, cn)
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// PasswordIterations is the PBKDF2 iteration count mosquitto_passwd 2.0 uses.
const PasswordIterations = 101

// PasswordLine is one line of a mosquitto 2.0 password file:
// "user:$7$ITERATIONS$SALT$HASH", PBKDF2-SHA512 with a 12-byte salt and a
// 64-byte hash, both in standard base64 — what `mosquitto_passwd` writes.
func PasswordLine(user, password string) (string, error) {
	if user == "" || strings.ContainsAny(user, ":\n") {
		return "", fmt.Errorf("brokertest: bad user name %q", user)
	}
	salt := make([]byte, 12)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	hash, err := pbkdf2.Key(sha512.New, password, salt, PasswordIterations, sha512.Size)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s:$7$%d$%s$%s", user, PasswordIterations,
		base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(hash)), nil
}

// WritePasswordFile writes a mosquitto password file for users (name →
// password) into dir and returns its path.
func WritePasswordFile(t testing.TB, dir string, users map[string]string) string {
	t.Helper()
	var lines []string
	for u, pw := range users {
		l, err := PasswordLine(u, pw)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	slices.Sort(lines)
	path := filepath.Join(dir, "passwd")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteFile writes content to dir/name and returns the path (for ACL files).
func WriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
