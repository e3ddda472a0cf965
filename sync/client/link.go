// Package client is the locker's MQTT link to the central server: it keeps
// one connection up (with its own full-jitter back-off), receives signed
// grants and commands and hands them to the controller, and publishes the
// controller's outbox of traces, its status and its compartments, following
// docs/protocol.md.
//
// The link never blocks inside a paho callback: received messages are copied
// into a bounded queue and handled by the link's own goroutine. A received
// grants or commands message is acknowledged to the broker (PUBACK) only
// after the controller has applied or executed it, so a crash in between
// makes the broker deliver it again on the next connection. A grants
// envelope that cannot be applied just now (the controller's storage is
// down) is tried again in place until it applies: it is never left
// unacknowledged on a live connection while later messages are handled,
// which would fill the broker's in-flight window (Mosquitto: 20) and stop
// every later grant, revoke and command. Each
// connection uses a fresh paho client with a fresh memory store; the
// controller's outbox is the only record of what still has to be sent, and an
// event leaves it only on its own PUBACK, received on the connection that is
// still the current one.
package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/protocol"
)

// Protocol constants (docs/protocol.md) and defaults.
const (
	// KeepAlive is the MQTT keep-alive of the protocol.
	KeepAlive = 30 * time.Second
	// DefaultInFlight is the default number of unacknowledged trace publishes.
	DefaultInFlight = 10
	// MaxInFlight is the largest InFlight allowed: Mosquitto's default
	// max_inflight_messages.
	MaxInFlight = 20
	// InboxSize is the number of received messages waiting for the worker;
	// more are dropped (and counted). Received messages are acknowledged only
	// once handled, so the broker never has more than its
	// max_inflight_messages (Mosquitto: 20) unacknowledged messages out to
	// the link: with a broker limit at or below InboxSize the inbox cannot
	// overflow, and a flood is slowed down by the broker instead.
	InboxSize = 64
	// InboxBytes bounds the payloads waiting in the inbox.
	InboxBytes = 4 << 20
	// AckBatch and AckDelay bound a batch of outbox acknowledgements (see
	// BatchAcker): at most AckBatch seqs, committed at most AckDelay after
	// the first PUBACK of the batch.
	AckBatch = 256
	AckDelay = 20 * time.Millisecond
	// readAhead is how many outbox events the drain reads at once.
	readAhead = 256

	defaultBackoffMin = time.Second
	defaultBackoffMax = 5 * time.Minute
	// stableAfter is how long a connection must stay up for the reconnect
	// back-off to start again from BackoffMin.
	stableAfter = 30 * time.Second
	// statusEvery and compartmentsEvery are the least time between two
	// status messages and between two compartments messages.
	statusEvery       = 10 * time.Second
	compartmentsEvery = time.Second
	// drainEvery is the safety-net poll of the outbox, for events appended
	// without a signal or not read after an error.
	drainEvery            = 15 * time.Second
	connectTimeout        = 20 * time.Second
	writeTimeout          = 10 * time.Second
	pingTimeout           = 10 * time.Second
	publishTimeout        = 15 * time.Second
	subscribeTimeout      = 15 * time.Second
	shutdownTimeout       = 2 * time.Second
	dropLogEvery          = 5 * time.Second
	disconnectQuiesceMsec = 250
	// redeliverAfter is how long no received message must have been
	// dropped before the link reconnects to have the dropped ones
	// delivered again.
	redeliverAfter = 5 * time.Second
	// retryMin and retryMax bound the wait before a grants envelope whose
	// apply failed for a transient reason is tried again: it doubles from
	// retryMin up to retryMax.
	retryMin = time.Second
	retryMax = 30 * time.Second
)

// notApplied is the error of every op of a grants envelope that the
// Locker refused as a whole for a reason that does not go away by itself
// (see Options.Transient). It is fixed text: the Locker's error may quote
// anything.
const notApplied = "envelope not applied: internal error"

// Options configure a Link.
type Options struct {
	// Broker is the broker URL: tcp://host:1883, or ssl://host:8883 (also
	// tls://, mqtts://) for TLS.
	Broker string
	// LockerID is the MQTT client id and topic prefix. Empty: Locker.LockerID().
	// If set, it must equal Locker.LockerID().
	LockerID string
	// Keys are the central server's public keys; at least one.
	Keys protocol.Keyring
	// Locker is the controller (or a test's fake).
	Locker Locker
	// TLS is the TLS configuration (client certificate, root CAs) for ssl:// brokers.
	TLS *tls.Config
	// Username and Password are optional MQTT credentials.
	Username, Password string
	// Software is the version put into the status when the controller leaves it empty.
	Software string
	// Logger receives the link's logs; nil: slog.Default().
	Logger *slog.Logger
	// InFlight is the most trace publishes awaiting their PUBACK (default 10, at most 20).
	InFlight int
	// Now is the clock for envelope expiry and published times; nil:
	// time.Now. Give it the controller's time ((*controller.Controller).Now):
	// a board that booted without a network clock reads 1970 from
	// time.Now, and every expired envelope would look fresh.
	Now func() time.Time
	// Transient says whether an error returned by Locker.ApplyGrants may go
	// away by itself: the controller's storage cannot be written just now
	// (a full disk, a read-only file system). Such an envelope is tried
	// again in place, with back-off, and acknowledged only once applied
	// (or expired meanwhile); any other error is final: the envelope is
	// acknowledged with a grants ack that rejects every op, so that it
	// never blocks the messages behind it. nil: every error is transient.
	// The daemon passes store.Unavailable.
	Transient func(error) bool

	// BackoffMin and BackoffMax bound the reconnect back-off (defaults 1 s and
	// 5 min, as docs/protocol.md says). The back-off starts again from
	// BackoffMin after a connection that stayed up for 30 s. locker-sim's
	// fleet and the tests against a real broker shorten them; the link's
	// other timings are fixed (the tests run them on a fake clock).
	BackoffMin, BackoffMax time.Duration
}

// topics are this locker's topics.
type topics struct {
	grants, commands, grantsAck, commandsResult, traces, status, compartments string
}

// Link is the MQTT link. Create it with New and run it with Run.
type Link struct {
	opts  Options
	id    string
	log   *slog.Logger
	t     topics
	will  []byte // the offline status: last will and clean-shutdown message
	inbox chan inbound
	// resumed tells the worker of each new connection and whether the
	// broker kept the session (capacity 1: resume merges an unread notice).
	resumed chan resumption

	// dial, when set, opens every connection instead of the network (the
	// tests' in-memory broker); rnd, when set, is the back-off's random
	// source. See export_test.go.
	dial func() (net.Conn, error)
	rnd  func(n int64) int64

	running     atomic.Bool
	connected   atomic.Bool
	dropped     atomic.Int64
	inboxBytes  atomic.Int64 // payload bytes waiting in the inbox
	lastDropLog atomic.Int64 // unix nanoseconds

	mu    sync.Mutex
	cur   *session // guarded by mu; the live connection, nil when down
	epoch uint64   // guarded by mu; incremented on every connect and every loss
}

// session is one connection: one paho client, one epoch.
type session struct {
	client mqtt.Client
	epoch  uint64        // set before the session is published in Link.cur
	lost   chan struct{} // closed once the connection is gone or given up
	once   sync.Once

	drops    atomic.Int64  // received messages dropped (not acknowledged) on this connection
	lastDrop atomic.Int64  // unix nanoseconds of the last drop
	dropped  chan struct{} // capacity 1: a message was dropped (serve starts watching for the quiet spell)
}

func (s *session) markLost() { s.once.Do(func() { close(s.lost) }) }

// inbound is one received message, copied out of paho.
type inbound struct {
	s       *session // the connection it came on
	topic   string
	payload []byte // nil when the message was larger than protocol.MaxEnvelope
	size    int
	ack     func() // sends the PUBACK (on the connection it came from); never nil
	// own: a copy the worker replayed itself (the broker had lost it):
	// no broker delivers it again, whatever a later connection says.
	own bool
}

// New checks opts and returns a link ready to Run.
func New(opts Options) (*Link, error) {
	if opts.Locker == nil {
		return nil, errors.New("client: no Locker")
	}
	if opts.Broker == "" {
		return nil, errors.New("client: no broker URL")
	}
	id := opts.Locker.LockerID()
	if opts.LockerID != "" && opts.LockerID != id {
		return nil, fmt.Errorf("client: locker id %q differs from the controller's %q", opts.LockerID, id)
	}
	if !protocol.ValidLockerID(id) {
		return nil, fmt.Errorf("client: invalid locker id %q (1 to 32 of A-Z a-z 0-9 _ -)", id)
	}
	if len(opts.Keys) == 0 {
		return nil, errors.New("client: no central public key")
	}
	for kid, k := range opts.Keys {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("client: central key %q is %d bytes, want %d", kid, len(k), ed25519.PublicKeySize)
		}
	}
	switch {
	case opts.InFlight == 0:
		opts.InFlight = DefaultInFlight
	case opts.InFlight < 0 || opts.InFlight > MaxInFlight:
		return nil, fmt.Errorf("client: InFlight %d not in 1..%d", opts.InFlight, MaxInFlight)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Transient == nil {
		opts.Transient = func(error) bool { return true }
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.BackoffMin, defaultBackoffMin)
	def(&opts.BackoffMax, defaultBackoffMax)
	if opts.BackoffMax < opts.BackoffMin {
		return nil, errors.New("client: BackoffMax is less than BackoffMin")
	}
	opts.LockerID = id
	opts.Keys = maps.Clone(opts.Keys)

	will, err := json.Marshal(struct {
		State    string `json:"state"`
		LockerID string `json:"locker_id"`
	}{"offline", id})
	if err != nil {
		return nil, err
	}
	return &Link{
		opts: opts,
		id:   id,
		log:  opts.Logger.With("locker", id),
		t: topics{
			grants:         protocol.Topic(id, protocol.SuffixGrants),
			commands:       protocol.Topic(id, protocol.SuffixCommands),
			grantsAck:      protocol.Topic(id, protocol.SuffixGrantsAck),
			commandsResult: protocol.Topic(id, protocol.SuffixCommandsResult),
			traces:         protocol.Topic(id, protocol.SuffixTraces),
			status:         protocol.Topic(id, protocol.SuffixStatus),
			compartments:   protocol.Topic(id, protocol.SuffixCompartments),
		},
		will:    will,
		inbox:   make(chan inbound, InboxSize),
		resumed: make(chan resumption, 1),
	}, nil
}

// resumption is a new connection as the worker learns of it.
type resumption struct {
	s       *session
	present bool // the broker kept the session: it delivers again what was not acknowledged
}

// resume tells the worker of connection s. A notice it has not read yet
// is replaced, keeping its news that the broker lost a session: messages
// held from before that connection are the worker's to apply even if the
// broker kept the newer one's session.
func (l *Link) resume(s *session, present bool) {
	for {
		select {
		case l.resumed <- resumption{s, present}:
			return
		default:
		}
		select {
		case old := <-l.resumed:
			present = present && old.present
		default:
		}
	}
}

// Connected reports whether the link has a live, subscribed connection.
func (l *Link) Connected() bool { return l.connected.Load() }

// Dropped is the number of received messages dropped because the inbox was
// full.
func (l *Link) Dropped() int64 { return l.dropped.Load() }

// Run connects and keeps the link up until ctx is done. On the way out it
// publishes the offline status (retained) and disconnects cleanly; after a
// crash the broker publishes the same message as the last will. Run returns
// nil when ctx is done; it may be called only once.
func (l *Link) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("client: Run called twice")
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.worker(ctx)
	}()
	defer wg.Wait()

	bo := newBackoff(l.opts.BackoffMin, l.opts.BackoffMax, stableAfter)
	if l.rnd != nil {
		bo.rnd = l.rnd
	}
	for immediate := true; ; {
		if !immediate {
			d := bo.next()
			l.log.Info("reconnecting", "in", d.Round(time.Millisecond))
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		immediate = false
		s, err := l.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			l.log.Warn("connect failed", "broker", l.opts.Broker, "err", err)
			continue
		}
		bo.connected(time.Now())
		immediate = l.serve(ctx, s)
		if ctx.Err() != nil {
			return nil
		}
		bo.lost(time.Now())
	}
}

// connect opens one connection with a fresh paho client and subscribes.
func (l *Link) connect(ctx context.Context) (*session, error) {
	s := &session{lost: make(chan struct{}), dropped: make(chan struct{}, 1)}
	o := mqtt.NewClientOptions().
		AddBroker(l.opts.Broker).
		SetClientID(l.id).
		SetCleanSession(false).
		SetKeepAlive(KeepAlive).
		SetPingTimeout(pingTimeout).
		SetConnectTimeout(connectTimeout).
		SetWriteTimeout(writeTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetStore(mqtt.NewMemoryStore()).
		// The handler never blocks, so paho may call it in order from its
		// router goroutine: envelopes are handled in the order received.
		SetOrderMatters(true).
		// PUBACK a received message only once it has been handled (worker).
		SetAutoAckDisabled(true).
		SetResumeSubs(false).
		SetBinaryWill(l.t.status, l.will, 1, true).
		// Messages queued in our persistent session may arrive before the
		// SUBSCRIBE is answered: the default handler takes them all.
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { l.onMessage(s, m) }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			l.log.Warn("connection lost", "err", err)
			l.lose(s)
		})
	if l.opts.TLS != nil {
		o.SetTLSConfig(l.opts.TLS)
	}
	if l.dial != nil {
		o.SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) { return l.dial() })
	}
	if l.opts.Username != "" {
		o.SetUsername(l.opts.Username)
		o.SetPassword(l.opts.Password)
	}
	c := mqtt.NewClient(o)
	s.client = c

	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		go func() { // do not leave a connection (nor an "online" status) behind
			<-tok.Done()
			if tok.Error() == nil {
				l.goOffline(ctx, s)
			}
		}()
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	sessionPresent := tok.(*mqtt.ConnectToken).SessionPresent()

	l.mu.Lock()
	l.epoch++
	s.epoch = l.epoch
	l.cur = s
	l.mu.Unlock()

	// Subscribe on every connection: the broker may have lost our session.
	st := c.SubscribeMultiple(map[string]byte{l.t.grants: 1, l.t.commands: 1}, nil)
	timer := time.NewTimer(subscribeTimeout)
	defer timer.Stop()
	var err error
	select {
	case <-st.Done():
		err = st.Error()
	case <-s.lost:
		err = errors.New("connection lost while subscribing")
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = errors.New("subscribe timed out")
	}
	if err == nil {
		for topic, code := range st.(*mqtt.SubscribeToken).Result() {
			if code == 0x80 {
				// Refused by the broker's ACL: a configuration fault that
				// reconnecting will not mend. Keep publishing traces.
				l.log.Error("subscription refused by the broker", "topic", topic)
			}
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			l.goOffline(ctx, s)
		} else {
			l.drop(s)
		}
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	l.log.Info("connected", "broker", l.opts.Broker, "session_present", sessionPresent, "epoch", s.epoch)
	l.resume(s, sessionPresent)
	return s, nil
}

// lose retires s: it is no longer current and its epoch is over.
func (l *Link) lose(s *session) {
	l.mu.Lock()
	if l.cur == s {
		l.cur = nil
		l.epoch++
		l.connected.Store(false)
	}
	l.mu.Unlock()
	s.markLost()
}

// drop gives up on s and closes its connection.
func (l *Link) drop(s *session) {
	l.lose(s)
	go s.client.Disconnect(disconnectQuiesceMsec)
}

// current returns the live session, or nil.
func (l *Link) current() *session {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// isCurrent reports whether s is still the live connection of its epoch.
func (l *Link) isCurrent(s *session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur == s && l.epoch == s.epoch
}

// serve runs the outbox drain and the reporter on s until the connection is
// lost or ctx is done; then it shuts the connection down. It returns true
// when it gave the connection up itself to have dropped messages delivered
// again (see onMessage): the next connection is made at once.
func (l *Link) serve(ctx context.Context, s *session) bool {
	l.connected.Store(l.isCurrent(s))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		l.drain(ctx, s)
	}()
	go func() {
		defer wg.Done()
		l.report(ctx, s)
	}()
	// The check for a quiet spell after dropped messages runs only once a
	// message was dropped: an idle link has no timer of its own here (a
	// fleet of ten thousand lockers would wake ten thousand times a
	// second for nothing).
	var check <-chan time.Time
	var checkT *time.Ticker
	defer func() {
		if checkT != nil {
			checkT.Stop()
		}
	}()
	redeliver := false
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-s.lost:
			break wait
		case <-s.dropped:
			if checkT == nil {
				checkT = time.NewTicker(time.Second)
				check = checkT.C
			}
		case <-check:
			// Messages were dropped from a full inbox and not acknowledged:
			// once the flood is over, reconnect so the broker delivers them
			// again.
			if n := s.drops.Load(); n > 0 && len(l.inbox) == 0 &&
				time.Since(time.Unix(0, s.lastDrop.Load())) >= redeliverAfter {
				l.log.Warn("reconnecting so that the broker delivers the dropped messages again", "dropped", n)
				redeliver = true
				l.drop(s)
				break wait
			}
		}
	}
	wg.Wait()
	if ctx.Err() == nil {
		l.lose(s)
		s.client.Disconnect(0) // releases paho's goroutines if anything is left
		return redeliver
	}
	l.goOffline(ctx, s)
	l.log.Info("disconnected")
	return false
}

// goOffline is the clean shutdown of s: publish the offline status (retained),
// then disconnect (the broker then drops the will). ctx is done; the publish
// gets shutdownTimeout of its own.
func (l *Link) goOffline(ctx context.Context, s *session) {
	l.connected.Store(false)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := l.publishWait(sctx, s, l.t.status, true, l.will); err != nil && !errors.Is(err, errConnLost) {
		l.log.Warn("offline status not published", "err", err)
	}
	l.lose(s)
	s.client.Disconnect(disconnectQuiesceMsec)
}

var errConnLost = errors.New("connection lost")

// publishWait publishes at QoS 1 on s and waits for the PUBACK, the loss of
// the connection, ctx or a time-out, whichever comes first.
func (l *Link) publishWait(ctx context.Context, s *session, topic string, retained bool, payload []byte) error {
	tok := s.client.Publish(topic, 1, retained, payload)
	t := time.NewTimer(publishTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-s.lost:
		return errConnLost
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("publish timed out")
	}
}

// publishCurrent publishes on the live connection, if there is one.
func (l *Link) publishCurrent(ctx context.Context, topic string, payload []byte) error {
	// A message the broker redelivers at connect can be handled before the
	// new session is marked current (after its subscriptions): wait a
	// little for it rather than lose the answer.
	s := l.current()
	for deadline := time.Now().Add(replyWait); s == nil && time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(10 * time.Millisecond)
		s = l.current()
	}
	if s == nil {
		return errors.New("not connected")
	}
	return l.publishWait(ctx, s, topic, false, payload)
}

// replyWait is how long an answer (grants ack, command result) waits for a
// connection before it is given up.
const replyWait = 10 * time.Second

// onMessage is paho's handler for every received message. It must never
// block: it copies the payload into the inbox or drops it.
//
// A dropped message is not acknowledged: the broker keeps it in flight and
// delivers it again on the next connection (the session is persistent). To
// get it without waiting for a network failure, serve reconnects once no
// message was dropped for redeliverAfter and the inbox is empty. This does
// not loop: a reconnect happens only after a quiet spell, and each connection
// handles at least InboxSize messages before it drops one; a flood only
// delays the redelivery until it stops (the broker bounds what it queues).
// Mosquitto normally holds back past max_inflight_messages (20)
// unacknowledged messages, which keeps the inbox from overflowing at all;
// 2.0.11 was seen exceeding it under a flood.
func (l *Link) onMessage(s *session, m mqtt.Message) {
	in := inbound{s: s, topic: m.Topic(), size: len(m.Payload()), ack: m.Ack}
	full := false
	if in.size <= protocol.MaxEnvelope {
		// The inbox holds at most InboxBytes of payloads besides its count:
		// large envelopes cannot add up to much memory.
		if l.inboxBytes.Add(int64(in.size)) > InboxBytes {
			l.inboxBytes.Add(-int64(in.size))
			full = true
		} else {
			in.payload = bytes.Clone(m.Payload())
			if in.payload == nil {
				in.payload = []byte{}
			}
		}
	}
	if !full {
		select {
		case l.inbox <- in:
			return
		default:
			l.inboxBytes.Add(-int64(len(in.payload)))
		}
	}
	s.drops.Add(1)
	s.lastDrop.Store(time.Now().UnixNano())
	select {
	case s.dropped <- struct{}{}:
	default:
	}
	n := l.dropped.Add(1)
	now := time.Now().UnixNano()
	last := l.lastDropLog.Load()
	if now-last >= int64(dropLogEvery) && l.lastDropLog.CompareAndSwap(last, now) {
		l.log.Warn("inbox full: received message dropped", "topic", in.topic, "dropped_total", n)
	}
}

// worker handles received messages one at a time, in the order received,
// until ctx is done.
//
// A message is acknowledged once handled. The only one left unacknowledged
// (besides those of a shutdown) is a grants envelope that could not be
// applied before its connection was lost (applyGrants): the broker delivers
// it again on the next connection, and the messages that came after it on
// the lost connection are skipped too, unacknowledged, so that they are
// applied after it, in order, when the broker delivers them again.
//
// The worker keeps them meanwhile (held): a broker that lost the session
// (one without persistence, restarted) delivers nothing again, and the next
// connection says so (session_present false). The held messages are then
// applied on it, in order. A revoke received before the broker restarted
// was lost so, and the revoked code kept working. When the broker kept the
// session, it delivers them again and the held copies are dropped.
func (l *Link) worker(ctx context.Context) {
	var abandoned *session // a lost connection whose messages are left to the broker
	var held []inbound     // its messages, in order, in case the broker lost them
	var last *resumption   // the newest connection heard of
	var lostAt uint64      // the epoch of the newest connection whose broker had lost the session
	handle := func(in inbound) {
		if in.s != nil && in.s == abandoned {
			l.log.Debug("message of a lost connection left for the broker to deliver again", "topic", in.topic)
			if len(held) < maxHeld {
				held = append(held, in)
			} else {
				l.log.Warn("too many messages of a lost connection to hold: left to the broker alone", "topic", in.topic)
			}
			return
		}
		done := true
		switch in.topic {
		case l.t.grants:
			done = l.handleGrants(ctx, in)
		case l.t.commands:
			done = l.handleCommand(ctx, in)
		default:
			l.log.Debug("message on an unexpected topic ignored", "topic", in.topic)
		}
		switch {
		case done:
			// PUBACK only now: had the locker died before, the broker
			// would deliver the message again.
			in.ack()
		case ctx.Err() == nil:
			abandoned = in.s
			held = append(held[:0:0], in)
		}
	}
	// settle acts on held messages once a connection newer than theirs is
	// up: the broker delivers again what it kept (present), the worker
	// applies the rest — all of them when the broker lost the session, and
	// always its own replayed copies — on that connection, in order.
	settle := func() {
		if abandoned == nil || last == nil || last.s == nil || last.s.epoch <= abandoned.epoch {
			return
		}
		r := *last
		// The broker still has them only if no connection since theirs
		// found the session lost.
		kept := r.present && lostAt <= abandoned.epoch
		var replay []inbound
		for _, in := range held {
			if !kept || in.own {
				replay = append(replay, in)
			}
		}
		held, abandoned = nil, nil
		if len(replay) == 0 {
			return
		}
		l.log.Warn("the broker lost the session: applying the messages it will not deliver again", "messages", len(replay))
		for _, in := range replay {
			in.s, in.ack, in.own = r.s, func() {}, true // a PUBACK would go to a connection that is gone
			handle(in)
		}
	}
	for {
		settle()
		select {
		case <-ctx.Done():
			return
		case r := <-l.resumed:
			if !r.present && r.s.epoch > lostAt {
				lostAt = r.s.epoch
			}
			last = &r
		case in := <-l.inbox:
			l.inboxBytes.Add(-int64(len(in.payload)))
			handle(in)
		}
	}
}

// maxHeld bounds the messages of a lost connection the worker holds.
const maxHeld = InboxSize

// open checks the envelope of in.
func (l *Link) open(in inbound) ([]byte, string, error) {
	if in.payload == nil {
		return nil, "", protocol.ErrTooLarge
	}
	return protocol.Open(l.opts.Keys, in.payload)
}

// reject records an envelope_rejected trace through the controller.
func (l *Link) reject(ctx context.Context, kind string, size int, err error) {
	reason := err.Error()
	l.log.Warn("envelope rejected", "kind", kind, "bytes", size, "reason", reason)
	if err := l.opts.Locker.RejectEnvelope(ctx, reason); err != nil && ctx.Err() == nil {
		l.log.Error("recording a rejected envelope", "err", err)
	}
}

// handleGrants handles one grants message; it returns false when the
// message was not handled (and must not be acknowledged to the broker).
func (l *Link) handleGrants(ctx context.Context, in inbound) bool {
	body, keyID, err := l.open(in)
	var g *wire.GrantsBody
	if err == nil {
		g, err = protocol.DecodeGrants(body, l.id, l.opts.Now())
	}
	if err != nil {
		l.reject(ctx, protocol.KindGrants, in.size, err)
		return true
	}
	ack, err := l.applyGrants(ctx, in.s, g)
	switch {
	case errors.Is(err, errNotHandled):
		return false
	case errors.Is(err, protocol.ErrExpired):
		// It expired while it waited for the storage: dropped, as the
		// broker's own redelivery would be.
		l.reject(ctx, protocol.KindGrants, in.size, err)
		return true
	case err != nil:
		// Refused as a whole, for good: nothing was applied (one
		// transaction). Say so in the ack, op by op, and acknowledge it,
		// so that it does not hold up what comes after it.
		l.log.Error("grants refused: not applied", "issued_at", wire.FormatTime(g.IssuedAt), "ops", len(g.Ops), "err", err)
		ack = wire.GrantsAck{IssuedAt: g.IssuedAt, Rejected: make([]wire.RejectedGrant, 0, len(g.Ops))}
		for _, op := range g.Ops {
			ack.Rejected = append(ack.Rejected, wire.RejectedGrant{GrantID: op.GrantID, Error: notApplied})
		}
	}
	if ack.IssuedAt.IsZero() {
		ack.IssuedAt = g.IssuedAt
	}
	ack.IssuedAt = ack.IssuedAt.UTC() // every time on the wire is UTC
	if ack.Rejected == nil {
		ack.Rejected = []wire.RejectedGrant{}
	}
	l.log.Info("grants applied", "key_id", keyID, "issued_at", wire.FormatTime(g.IssuedAt),
		"snapshot", g.Snapshot, "ops", len(g.Ops), "applied", ack.Applied, "stale", ack.Stale, "rejected", len(ack.Rejected))
	l.publishJSON(ctx, l.t.grantsAck, "grants ack", ack)
	return true
}

// errNotHandled: a grants envelope was neither applied nor refused, because
// the link is shutting down or the connection it came on was lost. It is
// not acknowledged, and the broker delivers it again.
var errNotHandled = errors.New("not handled")

// applyGrants applies g. While it fails for a transient reason (see
// Options.Transient) it is tried again in place, with back-off, for as long
// as it has not expired and its connection s is up: the envelope is not
// acknowledged meanwhile, and the messages behind it wait in the inbox, so
// nothing is applied out of order and the broker's in-flight window holds
// at most the messages that wait. It returns the Locker's ack; or
// errNotHandled (ctx done, or s lost: the broker delivers it again);
// protocol.ErrExpired (it expired while waiting); or the Locker's error when
// that is not transient.
func (l *Link) applyGrants(ctx context.Context, s *session, g *wire.GrantsBody) (wire.GrantsAck, error) {
	var lost <-chan struct{}
	if s != nil {
		lost = s.lost
	}
	wait := retryMin
	var firstErr error
	for attempt := 1; ; attempt++ {
		ack, err := l.opts.Locker.ApplyGrants(ctx, g)
		switch {
		case err == nil:
			if attempt > 1 {
				l.log.Info("grants applied after failed attempts", "issued_at", wire.FormatTime(g.IssuedAt),
					"attempts", attempt, "first_err", firstErr)
			}
			return ack, nil
		case ctx.Err() != nil:
			return ack, errNotHandled
		case !l.opts.Transient(err):
			return ack, err
		case attempt == 1:
			firstErr = err
			l.log.Error("grants not applied: trying again until they are", "issued_at", wire.FormatTime(g.IssuedAt),
				"ops", len(g.Ops), "err", err)
		default:
			l.log.Debug("grants still not applied", "issued_at", wire.FormatTime(g.IssuedAt), "attempt", attempt, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ack, errNotHandled
		case <-lost:
			t.Stop()
			l.log.Warn("connection lost before the grants could be applied: the broker delivers them again",
				"issued_at", wire.FormatTime(g.IssuedAt), "attempts", attempt)
			return ack, errNotHandled
		case <-t.C:
		}
		wait = min(2*wait, retryMax)
		if !l.opts.Now().Before(g.ExpiresAt) {
			return ack, protocol.ErrExpired
		}
	}
}

// handleCommand handles one command message; it returns false when the
// message was not handled (and must not be acknowledged to the broker).
func (l *Link) handleCommand(ctx context.Context, in inbound) bool {
	body, keyID, err := l.open(in)
	if err != nil {
		l.reject(ctx, protocol.KindCommand, in.size, err)
		return true
	}
	cmd, err := protocol.DecodeCommand(body, l.id, l.opts.Now())
	if err != nil {
		l.reject(ctx, protocol.KindCommand, in.size, err)
		// Signed by the central server and meant for us: answer it.
		if id := protocol.CommandID(body, l.id); id != "" {
			l.publishJSON(ctx, l.t.commandsResult, "command result",
				wire.CommandResult{CommandID: id, OK: false, Error: err.Error()})
		}
		return true
	}
	res, err := l.opts.Locker.Execute(ctx, cmd)
	if err != nil && ctx.Err() != nil {
		// Shutting down: not answered and not acknowledged; the broker
		// delivers it again and the command id decides whether it runs.
		return false
	}
	if err != nil {
		l.log.Error("command failed", "command_id", cmd.CommandID, "action", cmd.Action, "compartment", cmd.Compartment, "err", err)
		res = wire.CommandResult{CommandID: cmd.CommandID, OK: false, Error: "internal error"}
	}
	if res.CommandID == "" {
		res.CommandID = cmd.CommandID
	}
	l.log.Info("command executed", "key_id", keyID, "command_id", cmd.CommandID, "action", cmd.Action,
		"compartment", cmd.Compartment, "ok", res.OK, "error", res.Error)
	l.publishJSON(ctx, l.t.commandsResult, "command result", res)
	return true
}

// publishJSON publishes v on the live connection and logs a failure.
func (l *Link) publishJSON(ctx context.Context, topic, what string, v any) {
	payload, err := json.Marshal(v)
	if err != nil {
		l.log.Error("encoding "+what, "err", err)
		return
	}
	if err := l.publishCurrent(ctx, topic, payload); err != nil && ctx.Err() == nil {
		l.log.Warn(what+" not published", "err", err)
	}
}
