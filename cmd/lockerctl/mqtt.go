package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/openlocker/locker/sync/protocol"
)

// publish signs body with the key pair, publishes it on the locker's topic
// suffix, and waits for the first message on replySuffix that match accepts.
func publish(c common, suffix string, body []byte, replySuffix string, match func([]byte) bool) ([]byte, error) {
	kp, err := protocol.LoadKeyPair(c.key)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	env, err := protocol.Seal(kp.KeyID, kp.Private, body)
	if err != nil {
		return nil, err
	}
	cl, err := dial(c.broker, c.conn)
	if err != nil {
		return nil, err
	}
	defer cl.Disconnect(250)
	replies := make(chan []byte, 8)
	t := cl.Subscribe(protocol.Topic(c.locker, replySuffix), 1, func(_ paho.Client, m paho.Message) {
		select {
		case replies <- append([]byte(nil), m.Payload()...):
		default:
		}
	})
	if !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("subscribe: %v", t.Error())
	}
	t = cl.Publish(protocol.Topic(c.locker, suffix), 1, false, env)
	if !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("publish: %v", t.Error())
	}
	deadline := time.After(c.wait)
	for {
		select {
		case r := <-replies:
			if match(r) {
				return r, nil
			}
		case <-deadline:
			return nil, fmt.Errorf("no answer from locker %s on %s within %s (is it running and connected to %s?)",
				c.locker, replySuffix, c.wait, c.broker)
		}
	}
}

// dial connects to the broker with a fresh client id and a clean session.
func dial(broker string, f connFlags) (paho.Client, error) {
	var rnd [4]byte
	rand.Read(rnd[:])
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID("lockerctl-" + hex.EncodeToString(rnd[:])).
		SetCleanSession(true).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false)
	if f.ca != "" || f.cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.ca != "" {
			pem, err := os.ReadFile(f.ca)
			if err != nil {
				return nil, fmt.Errorf("-ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("-ca %s: no PEM certificate in it", f.ca)
			}
		}
		if f.cert != "" {
			cert, err := tls.LoadX509KeyPair(f.cert, f.certKey)
			if err != nil {
				return nil, fmt.Errorf("-cert/-cert-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts.SetTLSConfig(tc)
	}
	if f.user != "" {
		opts.SetUsername(f.user)
	}
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("-password-file: %w", err)
		}
		opts.SetPassword(strings.TrimRight(string(b), "\r\n"))
	}
	cl := paho.NewClient(opts)
	if t := cl.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("broker %s: cannot connect: %v", broker, t.Error())
	}
	return cl, nil
}

// watch prints what a locker publishes, one line per message: the time it
// arrived, the topic (retained ones marked), and the payload.
func watch(args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	var broker, locker string
	var conn connFlags
	conn.register(fs, &broker, &locker)
	count := fs.Int("count", 0, "stop after this many messages (0: never)")
	dur := fs.Duration("for", 0, "stop after this long (0: never)")
	all := fs.Bool("all", false, "also show what the central sends (grants, commands)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !protocol.ValidLockerID(locker) {
		return fmt.Errorf("watch: -locker %q is not a locker id", locker)
	}
	cl, err := dial(broker, conn)
	if err != nil {
		return err
	}
	defer cl.Disconnect(100)
	lines := make(chan string, 1024)
	prefix := protocol.Topic(locker, "")
	t := cl.Subscribe(prefix+"#", 1, func(_ paho.Client, m paho.Message) {
		suffix := strings.TrimPrefix(m.Topic(), prefix)
		if !*all && (suffix == protocol.SuffixGrants || suffix == protocol.SuffixCommands) {
			return
		}
		mark := ""
		if m.Retained() {
			mark = " (retained)"
		}
		line := fmt.Sprintf("%s %s%s %s", time.Now().UTC().Format("15:04:05.000"), m.Topic(), mark, m.Payload())
		select {
		case lines <- line:
		default: // a slow terminal: drop rather than block paho
		}
	})
	if !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return fmt.Errorf("subscribe: %v", t.Error())
	}
	var stop <-chan time.Time
	if *dur > 0 {
		stop = time.After(*dur)
	}
	for n := 0; *count == 0 || n < *count; n++ {
		select {
		case l := <-lines:
			fmt.Println(l)
		case <-stop:
			return nil
		}
	}
	return nil
}
