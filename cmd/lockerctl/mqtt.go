package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/openlocker/locker/sync/central"
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
	replies := make(chan []byte, 8)
	cl, err := dial(c.broker, c.conn, protocol.Topic(c.locker, replySuffix), func(m central.Message) {
		select {
		case replies <- m.Payload:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := cl.Publish(protocol.Topic(c.locker, suffix), env); err != nil {
		return nil, err
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

// dial connects to the broker with a fresh client id and a clean session,
// subscribed to filter (every message goes to on).
func dial(broker string, f connFlags, filter string, on func(central.Message)) (*central.Client, error) {
	var rnd [4]byte
	rand.Read(rnd[:])
	o := central.Options{Broker: broker, ClientID: "lockerctl-" + hex.EncodeToString(rnd[:]),
		Subscribe: []string{filter}, OnMessage: on, Username: f.user}
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
		o.TLS = tc
	}
	if f.passwordFile != "" {
		if f.user == "" {
			return nil, errors.New("-password-file needs -user")
		}
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("-password-file: %w", err)
		}
		o.Password = strings.TrimRight(string(b), "\r\n")
	}
	return central.Dial(o)
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
	lines := make(chan string, 1024)
	prefix := protocol.Topic(locker, "")
	cl, err := dial(broker, conn, prefix+"#", func(m central.Message) {
		suffix := strings.TrimPrefix(m.Topic, prefix)
		if !*all && (suffix == protocol.SuffixGrants || suffix == protocol.SuffixCommands) {
			return
		}
		mark := ""
		if m.Retained {
			mark = " (retained)"
		}
		line := fmt.Sprintf("%s %s%s %s", time.Now().UTC().Format("15:04:05.000"), m.Topic, mark, m.Payload)
		select {
		case lines <- line:
		default: // a slow terminal: drop rather than block paho
		}
	})
	if err != nil {
		return err
	}
	defer cl.Close()
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
