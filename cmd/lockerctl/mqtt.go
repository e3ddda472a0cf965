package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
	var rnd [4]byte
	rand.Read(rnd[:])
	opts := paho.NewClientOptions().AddBroker(c.broker).SetClientID("lockerctl-" + hex.EncodeToString(rnd[:])).
		SetCleanSession(true).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false)
	cl := paho.NewClient(opts)
	if t := cl.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("broker %s: cannot connect: %v", c.broker, t.Error())
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
