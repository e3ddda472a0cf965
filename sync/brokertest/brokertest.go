// Package brokertest runs a real Mosquitto broker on 127.0.0.1 for tests.
//
// Tests that use it fail (they do not skip) when mosquitto is not installed:
// install it with `apt-get install mosquitto` (CI does).
//
// Each broker gets its own folder from t.TempDir() holding its config file,
// its log file and its persistence database. When the test runs as root,
// the config says `user root`: Mosquitto would otherwise drop to user
// `mosquitto`, which cannot write into the test's 0700 temporary folders.
package brokertest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultBinary is where Debian and Ubuntu install mosquitto.
const DefaultBinary = "/usr/sbin/mosquitto"

// Options configure a test broker. The zero value is an anonymous broker with
// persistence on a plain TCP listener.
type Options struct {
	// Binary is the mosquitto executable; empty: "mosquitto" on PATH, then
	// DefaultBinary.
	Binary string
	// NoAnonymous leaves out `allow_anonymous true` (give a password_file in Extra).
	NoAnonymous bool
	// NoPersistence turns persistence off.
	NoPersistence bool
	// TLS, when set, makes the listener a TLS one (URL then says ssl://).
	TLS *TLS
	// PasswordFile is a mosquitto password file (see WritePasswordFile); it
	// implies NoAnonymous.
	PasswordFile string
	// ACLFile is a mosquitto ACL file.
	ACLFile string
	// Extra config lines, appended after the listener line so that they
	// apply to it (e.g. "max_inflight_messages 5").
	Extra []string
}

// TLS is the listener's TLS configuration (PEM files; see NewPKI).
type TLS struct {
	CAFile, CertFile, KeyFile string
	// RequireCertificate: clients must present a certificate signed by
	// CAFile (mutual TLS).
	RequireCertificate bool
	// UseIdentityAsUsername: the client certificate's Common Name is the
	// MQTT username (for ACLs); implies RequireCertificate.
	UseIdentityAsUsername bool
}

// Broker is a running (or stopped) Mosquitto.
type Broker struct {
	t       testing.TB
	binary  string
	dir     string
	conf    string
	logPath string
	port    int
	tls     bool

	mu  sync.Mutex
	cmd *exec.Cmd     // nil when stopped
	ch  chan struct{} // closed when cmd has exited
}

// Start writes a config file, starts Mosquitto on a free port of 127.0.0.1 and
// waits until it accepts connections. The broker is stopped when the test
// ends; its log is printed if the test failed.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	bin, err := findBinary(opts.Binary)
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{t: t, binary: bin, dir: t.TempDir(), tls: opts.TLS != nil}
	b.logPath = filepath.Join(b.dir, "mosquitto.log")
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	dataDir := filepath.Join(b.dir, "data") + "/"
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			b.dumpLog()
		}
	})

	var lastErr error
	for try := 0; try < 3; try++ { // the free port may be taken between probe and bind
		b.port, err = freePort()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(b.conf, []byte(b.config(opts, dataDir)), 0o600); err != nil {
			t.Fatal(err)
		}
		if lastErr = b.start(); lastErr == nil {
			return b
		}
	}
	t.Fatalf("brokertest: %v", lastErr)
	return nil
}

func findBinary(bin string) (string, error) {
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("brokertest: mosquitto binary %s: %v (install it with `apt-get install mosquitto`)", bin, err)
		}
		return bin, nil
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	if _, err := os.Stat(DefaultBinary); err == nil {
		return DefaultBinary, nil
	}
	return "", errors.New("brokertest: mosquitto not found on PATH nor at " + DefaultBinary +
		"; these tests need a real broker: install it with `apt-get install mosquitto`")
}

func (b *Broker) config(opts Options, dataDir string) string {
	var c strings.Builder
	fmt.Fprintf(&c, "# written by sync/brokertest\n")
	if os.Geteuid() == 0 {
		// Keep root: user mosquitto could not write the test's 0700 folders.
		c.WriteString("user root\n")
	}
	fmt.Fprintf(&c, "log_dest file %s\n", b.logPath)
	c.WriteString("log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\nlog_type unsubscribe\n")
	c.WriteString("log_timestamp_format %H:%M:%S\n")
	c.WriteString("connection_messages true\n")
	if opts.NoPersistence {
		c.WriteString("persistence false\n")
	} else {
		c.WriteString("persistence true\n")
		fmt.Fprintf(&c, "persistence_location %s\n", dataDir)
		c.WriteString("autosave_interval 1\n")
	}
	fmt.Fprintf(&c, "listener %d 127.0.0.1\n", b.port)
	if !opts.NoAnonymous && opts.PasswordFile == "" && (opts.TLS == nil || !opts.TLS.UseIdentityAsUsername) {
		c.WriteString("allow_anonymous true\n")
	} else {
		c.WriteString("allow_anonymous false\n")
	}
	if tc := opts.TLS; tc != nil {
		fmt.Fprintf(&c, "cafile %s\ncertfile %s\nkeyfile %s\n", tc.CAFile, tc.CertFile, tc.KeyFile)
		c.WriteString("tls_version tlsv1.2\n")
		if tc.RequireCertificate || tc.UseIdentityAsUsername {
			c.WriteString("require_certificate true\n")
		}
		if tc.UseIdentityAsUsername {
			c.WriteString("use_identity_as_username true\n")
		}
	}
	if opts.PasswordFile != "" {
		fmt.Fprintf(&c, "password_file %s\n", opts.PasswordFile)
	}
	if opts.ACLFile != "" {
		fmt.Fprintf(&c, "acl_file %s\n", opts.ACLFile)
	}
	for _, l := range opts.Extra {
		c.WriteString(l + "\n")
	}
	return c.String()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs mosquitto and waits until the port accepts connections.
func (b *Broker) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		return nil
	}
	cmd := exec.Command(b.binary, "-c", b.conf)
	out, err := os.OpenFile(filepath.Join(b.dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", b.binary, err)
	}
	ch := make(chan struct{})
	go func() {
		cmd.Wait()
		out.Close()
		close(ch)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			b.cmd, b.ch = cmd, ch
			return nil
		}
		select {
		case <-ch:
			return fmt.Errorf("mosquitto exited at start-up: %s", b.tail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-ch
			return fmt.Errorf("mosquitto did not listen on %s within 10 s: %s", b.addr(), b.tail())
		}
	}
}

func (b *Broker) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// URL is the broker's address for paho: tcp://127.0.0.1:PORT, or
// ssl://127.0.0.1:PORT for a TLS listener.
func (b *Broker) URL() string {
	if b.tls {
		return "ssl://" + b.addr()
	}
	return "tcp://" + b.addr()
}

// Addr is the broker's host:port.
func (b *Broker) Addr() string { return b.addr() }

// Dir is the broker's folder (config, log, persistence); tests may put
// password or ACL files there.
func (b *Broker) Dir() string { return b.dir }

// Stop stops the broker (SIGTERM, so it saves its persistence database; SIGKILL
// after 5 s). Stopping a stopped broker does nothing.
func (b *Broker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.ch:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-b.ch
	}
	b.cmd, b.ch = nil, nil
}

// Restart stops the broker if it runs and starts it again on the same port
// with the same persistence database (sessions, subscriptions and queued
// messages survive, as they would in production).
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.Stop()
	var err error
	for try := 0; try < 50; try++ { // the old socket may linger for a moment
		if err = b.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("brokertest: restart: %v", err)
}

// Log returns the broker's log so far.
func (b *Broker) Log() string {
	data, _ := os.ReadFile(b.logPath)
	out, _ := os.ReadFile(filepath.Join(b.dir, "stdout.log"))
	return string(data) + string(out)
}

func (b *Broker) tail() string {
	s := b.Log()
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return strings.TrimSpace(s)
}

func (b *Broker) dumpLog() {
	b.t.Logf("mosquitto log (%s):\n%s", b.addr(), b.Log())
}
