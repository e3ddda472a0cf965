package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/central"
	"github.com/openlocker/locker/sync/protocol"
)

// A technician reaches a production broker: ssl:// with the CA, a client
// certificate (mutual TLS) and a user name with a password file. With all
// of them the command gets through and its result comes back; without the
// certificate, with a wrong password or a CA that did not sign the broker's
// certificate, lockerctl fails saying why and the locker receives nothing.
func TestCommandOverMutualTLSWithPassword(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	bin := build(t)
	dir := t.TempDir()
	pki := brokertest.NewPKI(t, "test CA")
	srv := pki.ServerTLS(t)
	srv.RequireCertificate = true
	passwd := brokertest.WritePasswordFile(t, dir, map[string]string{"central": "c3ntral", "L1": "s3cret"})
	b := brokertest.Start(t, brokertest.Options{TLS: srv, PasswordFile: passwd})
	if !strings.HasPrefix(b.URL(), "ssl://") {
		t.Fatalf("URL = %s", b.URL())
	}
	f := startFakeLocker(t, b.URL(), "L1", func(o *central.Options) {
		o.TLS, o.Username, o.Password = pki.ClientTLS(t, "L1"), "L1", "s3cret"
	})
	keyFile := filepath.Join(dir, "central.json")
	kp, _ := protocol.GenerateKeyPair("dev")
	if err := protocol.SaveKeyPair(keyFile, kp); err != nil {
		t.Fatal(err)
	}
	cert, certKey := pki.ClientFiles(t, "central")
	goodPass := brokertest.WriteFile(t, dir, "pass", "c3ntral\n")
	badPass := brokertest.WriteFile(t, dir, "bad", "guess\n")
	other := brokertest.NewPKI(t, "someone else's CA")
	command := func(conn ...string) (string, error) {
		args := append([]string{"command", "-id", "c-1", "-action", "open", "-compartment", "3",
			"-broker", b.URL(), "-locker", "L1", "-key", keyFile, "-wait", "5s"}, conn...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}

	for _, c := range []struct {
		name string
		conn []string
		says string
	}{
		{"no client certificate", []string{"-ca", pki.CAFile, "-user", "central", "-password-file", goodPass}, "cannot connect"},
		{"wrong password", []string{"-ca", pki.CAFile, "-cert", cert, "-cert-key", certKey, "-user", "central", "-password-file", badPass}, "not Authorized"},
		{"a CA that did not sign the broker's certificate", []string{"-ca", other.CAFile, "-cert", cert, "-cert-key", certKey, "-user", "central", "-password-file", goodPass}, "certificate signed by unknown authority"},
		{"a password without a user", []string{"-ca", pki.CAFile, "-cert", cert, "-cert-key", certKey, "-password-file", goodPass}, "-password-file needs -user"},
		{"a CA file that holds no certificate", []string{"-ca", goodPass, "-cert", cert, "-cert-key", certKey}, "no PEM certificate"},
	} {
		out, err := command(c.conn...)
		if err == nil || !strings.Contains(out, c.says) {
			t.Errorf("%s: err %v, want it to say %q:\n%s", c.name, err, c.says, out)
		}
	}
	if n := len(f.received()); n != 0 {
		t.Fatalf("the locker received %d messages from refused connections", n)
	}

	out, err := command("-ca", pki.CAFile, "-cert", cert, "-cert-key", certKey, "-user", "central", "-password-file", goodPass)
	if err != nil {
		t.Fatalf("with certificate and password: %v\n%s", err, out)
	}
	got := f.received()
	if len(got) != 1 || got[0].Topic != protocol.Topic("L1", "commands") {
		t.Fatalf("the locker received %d messages, want the one command", len(got))
	}
	if _, _, err := protocol.Open(kp.Keyring(), got[0].Payload); err != nil {
		t.Errorf("the command is not signed by the key: %v", err)
	}
}
