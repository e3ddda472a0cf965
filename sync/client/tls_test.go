package client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/openlocker/locker/simulator/waittest"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/client/clienttest"
	"github.com/openlocker/locker/sync/protocol"
)

// tryLink runs a link that is expected not to connect for d and returns its
// log.
func tryLink(t *testing.T, url string, f client.Locker, d time.Duration, mod func(*client.Options)) string {
	t.Helper()
	logger, logs := testLogger(t)
	opts := client.Options{Broker: url, Keys: keys, Locker: f, Logger: logger,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	link, err := client.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	// The link runs at least d, and on until it has logged a failed
	// connect (at most 15 s): on a loaded machine loading the system's
	// roots and the handshake may take longer than d.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		start := time.Now()
		for ctx.Err() == nil {
			since := time.Since(start)
			if since >= 15*time.Second || since >= d && strings.Contains(logs.String(), "connect failed") {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	var connected atomic.Bool
	go func() {
		for ctx.Err() == nil {
			if link.Connected() {
				connected.Store(true)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if err := link.Run(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	if connected.Load() || link.Connected() {
		t.Errorf("the link connected; it should have been refused")
	}
	return logs.String()
}

// mqttClient connects a plain paho client (the central, or an intruder).
func mqttClient(t *testing.T, url, id string, tc *tls.Config, user, pass string) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	if user != "" {
		o.SetUsername(user).SetPassword(pass)
	}
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("%s connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// recorder subscribes c to filter and records what arrives.
type recorder struct {
	mu   sync.Mutex
	msgs map[string][][]byte // by topic
}

func record(t *testing.T, c mqtt.Client, filter string) (*recorder, byte) {
	t.Helper()
	r := &recorder{msgs: map[string][][]byte{}}
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.msgs[m.Topic()] = append(r.msgs[m.Topic()], bytes.Clone(m.Payload()))
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return r, tok.(*mqtt.SubscribeToken).Result()[filter]
}

func (r *recorder) get(topic string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msgs[topic]
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		n += len(m)
	}
	return n
}

// The link connects over TLS with a CA file; a wrong CA fails clearly.
func TestTLSWithCAFile(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	pki := brokertest.NewPKI(t, "test CA")
	b := brokertest.Start(t, brokertest.Options{TLS: pki.ServerTLS(t)})
	if !strings.HasPrefix(b.URL(), "ssl://") {
		t.Fatalf("URL = %s", b.URL())
	}
	f := clienttest.New(lockerID, 2)
	startLink(t, b.URL(), f, func(o *client.Options) { o.TLS = pki.ClientTLS(t, "") })
	// A trace gets through the TLS connection.
	ce := mqttClient(t, b.URL(), "central", pki.ClientTLS(t, ""), "", "")
	rec, _ := record(t, ce, protocol.Topic(lockerID, "#"))
	f.Append("door_opened", 3)
	waittest.For(t, 5*time.Second, func() bool { return len(rec.get(protocol.Topic(lockerID, protocol.SuffixTraces))) == 3 }, "3 traces over TLS")

	other := brokertest.NewPKI(t, "someone else's CA")
	log := tryLink(t, b.URL(), clienttest.New("L9", 1), 600*time.Millisecond,
		func(o *client.Options) { o.TLS = other.ClientTLS(t, "") })
	if !strings.Contains(log, "certificate signed by unknown authority") {
		t.Errorf("wrong CA: the log does not say why:\n%s", log)
	}
	// No TLS configuration at all against a TLS broker: the system roots do
	// not know the test CA either.
	log = tryLink(t, b.URL(), clienttest.New("L9", 1), 600*time.Millisecond, nil)
	if !strings.Contains(log, "connect failed") || !strings.Contains(log, "certificate") {
		t.Errorf("no CA: the log does not say why:\n%s", log)
	}
}

// Mutual TLS: a locker with its client certificate connects; one without a
// certificate, or with a certificate of another CA, is refused.
func TestMutualTLS(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	pki := brokertest.NewPKI(t, "test CA")
	srv := pki.ServerTLS(t)
	srv.UseIdentityAsUsername = true
	b := brokertest.Start(t, brokertest.Options{TLS: srv})
	startLink(t, b.URL(), clienttest.New(lockerID, 2), func(o *client.Options) { o.TLS = pki.ClientTLS(t, lockerID) })
	if log := b.Log(); !strings.Contains(log, "u'"+lockerID+"'") {
		t.Errorf("the broker did not take the certificate's name as the user name:\n%s", log)
	}

	log := tryLink(t, b.URL(), clienttest.New("L2", 1), 600*time.Millisecond,
		func(o *client.Options) { o.TLS = pki.ClientTLS(t, "") })
	if !strings.Contains(log, "connect failed") {
		t.Errorf("no client certificate: the log does not say so:\n%s", log)
	}
	other := brokertest.NewPKI(t, "rogue CA")
	rogue := other.ClientTLS(t, "L2")
	rogue.RootCAs = pki.Pool() // trusts the broker, but its own cert is foreign
	log = tryLink(t, b.URL(), clienttest.New("L2", 1), 600*time.Millisecond, func(o *client.Options) { o.TLS = rogue })
	if !strings.Contains(log, "connect failed") {
		t.Errorf("foreign client certificate: the log does not say so:\n%s", log)
	}
}

// Username and password (mosquitto 2.0 password file); a wrong password is
// refused with "not Authorized".
func TestPassword(t *testing.T) {
	t.Parallel() // a Mosquitto of its own
	dir := t.TempDir()
	pw := brokertest.WritePasswordFile(t, dir, map[string]string{lockerID: "s3cret-" + lockerID, "central": "c3ntral"})
	b := brokertest.Start(t, brokertest.Options{PasswordFile: pw})
	startLink(t, b.URL(), clienttest.New(lockerID, 2), func(o *client.Options) {
		o.Username, o.Password = lockerID, "s3cret-"+lockerID
	})
	mqttClient(t, b.URL(), "central", nil, "central", "c3ntral")

	for name, pass := range map[string]string{"wrong password": "guess", "no password": ""} {
		log := tryLink(t, b.URL(), clienttest.New("L2", 1), 400*time.Millisecond, func(o *client.Options) {
			if pass != "" {
				o.Username, o.Password = "L2", pass
			}
		})
		if !strings.Contains(strings.ToLower(log), "not authorized") {
			t.Errorf("%s: the log does not say why:\n%s", name, log)
		}
	}
}

func TestPasswordLineFormat(t *testing.T) {
	l, err := brokertest.PasswordLine("L1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(l, "$")
	if len(parts) != 5 || parts[0] != "L1:" || parts[1] != "7" || parts[2] != fmt.Sprint(brokertest.PasswordIterations) {
		t.Errorf("line = %q", l)
	}
	if _, err := brokertest.PasswordLine("a:b", "pw"); err == nil {
		t.Error("a user name with ':' accepted")
	}
}
