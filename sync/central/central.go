// Package central is a small MQTT client on the central server's side of
// the protocol: it signs grants and commands with a key pair and sends
// them to a locker, and hands what the lockers publish (traces, acks,
// results, status) to a handler that must not block, or to a Recorder.
//
// It is not the central server. The simulator's web page (locker-sim's
// development central), the fleet simulator, lockerctl (over TLS and with
// credentials, as a technician reaches a production broker) and the tests
// use it, so that connecting, subscribing, signing and publishing are
// written once; the tests also use it to play a locker's side to lockerctl
// (the filters they subscribe to choose the side).
package central

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/openlocker/locker/sync/protocol"
)

// ErrNoKey: Send was called on a client without a signing key.
var ErrNoKey = errors.New("central: no signing key")

// Message is one message received.
type Message struct {
	Topic    string
	Payload  []byte // a copy, the handler's to keep
	Retained bool
}

// Options configure a Client. The zero value (with Broker and ClientID) is
// a clean session that does not reconnect, with no subscriptions.
type Options struct {
	Broker   string // tcp://host:port
	ClientID string
	// Key signs what Send sends.
	Key protocol.KeyPair
	// Subscribe lists topic filters, subscribed at QoS 1 on every connect;
	// Dial returns once the first subscription is acknowledged.
	Subscribe []string
	// OnMessage gets every message, from paho's goroutine: it must not
	// block. Nil: messages are dropped.
	OnMessage func(Message)
	// Persistent turns the clean session off: the broker keeps the
	// subscriptions and queues QoS 1 messages while the client is away
	// (give a fixed ClientID).
	Persistent bool
	// Reconnect makes the client retry its first connect and reconnect by
	// itself after a loss, at most MaxReconnectInterval apart (paho's
	// default when zero), the first retry after RetryInterval (paho's
	// default when zero).
	Reconnect            bool
	RetryInterval        time.Duration
	MaxReconnectInterval time.Duration
	// KeepAlive is the MQTT keep-alive; zero: 30 s.
	KeepAlive time.Duration
	// Unordered lets paho call OnMessage concurrently (order across
	// lockers does not matter to a fleet); the default is in order.
	Unordered bool
	// Wait bounds the connect, the first subscription and each publish;
	// zero: 10 s.
	Wait time.Duration
	// TLS configures an ssl:// broker (nil: paho's default, the system's
	// roots); Username and Password are the MQTT credentials, if any.
	TLS      *tls.Config
	Username string
	Password string
}

// Client is a connected central client.
type Client struct {
	cl   paho.Client
	key  protocol.KeyPair
	wait time.Duration
}

// Dial connects to the broker and subscribes to o.Subscribe.
func Dial(o Options) (*Client, error) {
	c := &Client{key: o.Key, wait: o.Wait}
	if c.wait == 0 {
		c.wait = 10 * time.Second
	}
	keepAlive := o.KeepAlive
	if keepAlive == 0 {
		keepAlive = 30 * time.Second
	}
	handler := func(_ paho.Client, m paho.Message) {
		if o.OnMessage != nil {
			o.OnMessage(Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Retained: m.Retained()})
		}
	}
	subs := map[string]byte{}
	for _, f := range o.Subscribe {
		subs[f] = 1
	}
	subscribed := make(chan paho.Token, 1)
	opts := paho.NewClientOptions().AddBroker(o.Broker).SetClientID(o.ClientID).
		SetCleanSession(!o.Persistent).SetKeepAlive(keepAlive).SetConnectTimeout(c.wait).
		SetAutoReconnect(o.Reconnect).SetConnectRetry(o.Reconnect).SetOrderMatters(!o.Unordered).
		SetDefaultPublishHandler(handler) // a persistent session's messages that arrive before the subscription
	if o.TLS != nil {
		opts.SetTLSConfig(o.TLS)
	}
	if o.Username != "" {
		opts.SetUsername(o.Username).SetPassword(o.Password)
	}
	if o.RetryInterval > 0 {
		opts.SetConnectRetryInterval(o.RetryInterval)
	}
	if o.MaxReconnectInterval > 0 {
		opts.SetMaxReconnectInterval(o.MaxReconnectInterval)
	}
	if len(subs) > 0 {
		// Again on every connect: a clean session forgets them. This runs
		// inside paho, so it does not wait for the answer.
		opts.SetOnConnectHandler(func(cl paho.Client) {
			tok := cl.SubscribeMultiple(subs, handler)
			select {
			case subscribed <- tok:
			default:
			}
		})
	}
	c.cl = paho.NewClient(opts)
	if tok := c.cl.Connect(); !tok.WaitTimeout(c.wait) || tok.Error() != nil {
		c.cl.Disconnect(0)
		return nil, fmt.Errorf("central: cannot connect to %s: %v", o.Broker, tok.Error())
	}
	if len(subs) > 0 {
		select {
		case tok := <-subscribed:
			if !tok.WaitTimeout(c.wait) || tok.Error() != nil {
				c.cl.Disconnect(0)
				return nil, fmt.Errorf("central: subscribe: %v", tok.Error())
			}
		case <-time.After(c.wait):
			c.cl.Disconnect(0)
			return nil, errors.New("central: subscribe: no answer")
		}
	}
	return c, nil
}

// Seal marshals v and signs it with kp into an envelope.
func Seal(kp protocol.KeyPair, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return protocol.Seal(kp.KeyID, kp.Private, body)
}

// Send signs v with the client's key and publishes it on the locker's
// topic suffix (protocol.SuffixGrants or protocol.SuffixCommands).
func (c *Client) Send(locker, suffix string, v any) error {
	if c.key.Private == nil {
		return ErrNoKey
	}
	env, err := Seal(c.key, v)
	if err != nil {
		return err
	}
	return c.Publish(protocol.Topic(locker, suffix), env)
}

// Publish publishes payload at QoS 1, not retained, and waits for the
// broker's acknowledgement.
func (c *Client) Publish(topic string, payload []byte) error {
	tok := c.cl.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(c.wait) {
		return fmt.Errorf("central: publish to %s: no answer within %v", topic, c.wait)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("central: publish to %s: %w", topic, err)
	}
	return nil
}

// PublishAsync publishes payload at QoS 1, not retained, without waiting.
func (c *Client) PublishAsync(topic string, payload []byte) paho.Token {
	return c.cl.Publish(topic, 1, false, payload)
}

// IsConnected says whether the client is connected now.
//
// (paho's IsConnected is also true while a Reconnect client is away.)
func (c *Client) IsConnected() bool { return c.cl.IsConnectionOpen() }

// Close disconnects, giving work in flight up to 250 ms.
func (c *Client) Close() { c.cl.Disconnect(250) }

// TB is the part of testing.TB that DialTest uses (this package does not
// import testing: programs use it too).
type TB interface {
	Helper()
	Fatal(args ...any)
	Cleanup(func())
}

// DialTest is Dial for a test: a failure fails the test, and the test's
// cleanup closes the client.
func DialTest(t TB, o Options) *Client {
	t.Helper()
	c, err := Dial(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
