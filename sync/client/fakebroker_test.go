package client_test

import (
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/openlocker/locker/simulator/logtest"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/protocol"
)

// fakeBroker is an in-memory MQTT 3.1.1 broker for one client, reached
// through client.NewWithDial over net.Pipe. The link's tests that are about
// time (back-off, keep-alive, the status throttle, the outbox's safety-net
// poll, redelivery after drops, apply retries) run on it inside a
// testing/synctest bubble, at the link's real timings on the fake clock:
// real network I/O to Mosquitto is not durably blocking, and synctest
// cannot advance its clock past it.
//
// It knows what these tests need: CONNECT (a persistent session keeps the
// messages sent to the client and not yet acknowledged, and sends them
// again, DUP, on the next connection), SUBSCRIBE, PUBLISH at QoS 0 and 1
// both ways with PUBACK, PINGREQ and DISCONNECT. It has no in-flight limit,
// no will and no ACL: the tests of those run against Mosquitto.
type fakeBroker struct {
	mu        sync.Mutex
	refuse    bool // dials fail
	mutePings bool // PINGREQs are not answered

	dials   []time.Time // every dial, refused or not
	conns   []time.Time // every CONNECT accepted
	pings   []time.Time // every PINGREQ
	session bool        // a persistent session exists
	cur     *fakeConn   // the live connection, nil when none
	nextID  uint16
	unacked []*packets.PublishPacket // sent to the client and not acknowledged, in order
	pubs    map[string][]fakeMsg     // published by the client, by topic
}

// fakeMsg is a message the client published.
type fakeMsg struct {
	at       time.Time
	payload  []byte
	retained bool
}

// fakeConn is one connection's server side.
type fakeConn struct {
	c   net.Conn
	wmu sync.Mutex // one packet written at a time
}

func (fc *fakeConn) write(p packets.ControlPacket) error {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	return p.Write(fc.c)
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{pubs: map[string][]fakeMsg{}}
}

// dial is the link's dial: a new connection, unless refused.
func (b *fakeBroker) dial() (net.Conn, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dials = append(b.dials, time.Now())
	if b.refuse {
		return nil, errors.New("connection refused")
	}
	client, server := net.Pipe()
	go b.serve(&fakeConn{c: server})
	return client, nil
}

func (b *fakeBroker) serve(fc *fakeConn) {
	defer b.gone(fc)
	for {
		p, err := packets.ReadPacket(fc.c)
		if err != nil {
			return
		}
		switch p := p.(type) {
		case *packets.ConnectPacket:
			b.mu.Lock()
			if b.cur != nil { // a client id takes over: the old connection goes
				b.cur.c.Close()
			}
			present := b.session && !p.CleanSession
			b.session = !p.CleanSession
			if p.CleanSession {
				b.unacked = nil
			}
			b.cur = fc
			b.conns = append(b.conns, time.Now())
			var again []*packets.PublishPacket
			for _, m := range b.unacked {
				c := *m
				c.Dup = true
				again = append(again, &c)
			}
			b.mu.Unlock()
			ack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
			ack.SessionPresent = present
			if fc.write(ack) != nil {
				return
			}
			for _, m := range again {
				if fc.write(m) != nil {
					return
				}
			}
		case *packets.SubscribePacket:
			ack := packets.NewControlPacket(packets.Suback).(*packets.SubackPacket)
			ack.MessageID = p.MessageID
			ack.ReturnCodes = p.Qoss
			if fc.write(ack) != nil {
				return
			}
		case *packets.PublishPacket:
			b.mu.Lock()
			b.pubs[p.TopicName] = append(b.pubs[p.TopicName], fakeMsg{at: time.Now(), payload: p.Payload, retained: p.Retain})
			b.mu.Unlock()
			if p.Qos == 1 {
				ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
				ack.MessageID = p.MessageID
				if fc.write(ack) != nil {
					return
				}
			}
		case *packets.PubackPacket:
			b.mu.Lock()
			b.unacked = slices.DeleteFunc(b.unacked, func(m *packets.PublishPacket) bool { return m.MessageID == p.MessageID })
			b.mu.Unlock()
		case *packets.PingreqPacket:
			b.mu.Lock()
			b.pings = append(b.pings, time.Now())
			mute := b.mutePings
			b.mu.Unlock()
			if !mute && fc.write(packets.NewControlPacket(packets.Pingresp)) != nil {
				return
			}
		case *packets.DisconnectPacket:
			return
		}
	}
}

// gone retires fc.
func (b *fakeBroker) gone(fc *fakeConn) {
	fc.c.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == fc {
		b.cur = nil
	}
}

// send publishes payload on topic to the client at QoS 1; without a live
// connection it waits in the session for the next one. It returns the
// message id.
func (b *fakeBroker) send(topic string, payload []byte) uint16 {
	b.mu.Lock()
	b.nextID++
	if b.nextID == 0 {
		b.nextID++
	}
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.Qos, p.TopicName, p.Payload, p.MessageID = 1, topic, payload, b.nextID
	b.unacked = append(b.unacked, p)
	fc := b.cur
	b.mu.Unlock()
	if fc != nil {
		c := *p
		_ = fc.write(&c)
	}
	return p.MessageID
}

// cut closes the live connection without a DISCONNECT.
func (b *fakeBroker) cut() {
	b.mu.Lock()
	fc := b.cur
	b.mu.Unlock()
	if fc != nil {
		fc.c.Close()
	}
}

func (b *fakeBroker) setRefuse(v bool) { b.mu.Lock(); b.refuse = v; b.mu.Unlock() }
func (b *fakeBroker) setMutePings(v bool) {
	b.mu.Lock()
	b.mutePings = v
	b.mu.Unlock()
}

func (b *fakeBroker) connected() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.cur != nil }

func (b *fakeBroker) dialTimes() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.dials)
}

func (b *fakeBroker) connTimes() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.conns)
}

func (b *fakeBroker) pingTimes() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.pings)
}

// published returns what the client published on the locker's topic with
// suffix.
func (b *fakeBroker) published(suffix string) []fakeMsg {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.pubs[protocol.Topic(lockerID, suffix)])
}

func (b *fakeBroker) unackedCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.unacked)
}

// startFakeLink runs a link for f on a new fake broker until the test ends
// (or stop is called), with the link's default timings. It must be called
// inside a synctest bubble; it returns once the link is connected.
func startFakeLink(t *testing.T, f client.Locker, mod func(*client.Options)) (link *client.Link, b *fakeBroker, stop func(), logs *logtest.Buffer) {
	t.Helper()
	b = newFakeBroker()
	link, stop, logs = runFakeLink(t, b, f, mod, nil)
	synctest.Wait()
	if !b.connected() || !link.Connected() {
		t.Fatal("the link did not connect at once")
	}
	return link, b, stop, logs
}
