// Package controller decides what the locker does: it keeps compartments and
// grants, runs the keypad session, opens doors for valid grants and signed
// commands, and records every state change together with its trace event in
// one durable transaction (the outbox that sync drains).
//
// controller knows nothing of MQTT: sync calls ApplyGrants, Execute and the
// outbox methods. Hardware facts arrive as hal events.
//
// Concurrency: every state change runs on one goroutine, the loop started by
// Run. Other goroutines hand work to the loop through c.work and wait for
// its result. Read-only views (Status, Compartments, PendingEvents) read the
// database directly: it holds the whole state, and its single connection
// serialises them with the loop's transactions.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openlocker/locker/controller/fsm"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

// Clock tells the time. The controller never calls time.Now itself, so that
// tests run time-outs and expiry in microseconds.
type Clock interface {
	Now() time.Time
}

// Monotonic is a Clock that also tells how much time has passed whatever
// its wall time does (a network clock that jumps, or is set right). The
// purge advances on it. A Clock without it: its own differences are taken.
type Monotonic interface {
	Elapsed() time.Duration // time passed since some fixed instant
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

var processStart = time.Now()

// Elapsed reads the monotonic clock (time.Since uses it).
func (wallClock) Elapsed() time.Duration { return time.Since(processStart) }

// WallClock is the real clock.
var WallClock Clock = wallClock{}

// Options configure a Controller. LockerID, Store and Cabinet are required.
type Options struct {
	LockerID string
	Store    *store.Store
	Cabinet  hal.Cabinet
	Clock    Clock        // default WallClock
	Logger   *slog.Logger // default: discard
	Software string       // version, for status
	Language string       // display language; default "en"

	// OnTrace is called on the loop, after commit, with each recorded
	// trace's JSON. It must not block.
	OnTrace func(payload []byte)

	MinCodeLen   int           // default 6
	MaxCodeLen   int           // default 12
	EntryTimeout time.Duration // an idle keypad entry is cleared after this; default 30s
	MessageTime  time.Duration // a result message stays this long; default 5s
	LockoutAfter int           // wrong codes in a row before a lockout; default 5
	LockoutBase  time.Duration // first lockout; doubles with each further one; default 1m
	LockoutMax   time.Duration // cap of a lockout; default 1h
	LockoutDecay time.Duration // the doubling starts again after this long without a lockout; default 24h
	DoorTimeout  time.Duration // a release hal never reports on is a lock fault after this; default 10m (hal reports every release, after its queue, pulse and confirmation)
	MinOpenTime  time.Duration // a door closed sooner after opening for a release is a sensor fault; default 200ms

	DoorLeftOpen      time.Duration // door_left_open after a door stays open this long; default 2m
	DoorLeftOpenEvery time.Duration // and again at this interval while it stays open; default 5m
	Tick              time.Duration // housekeeping interval; default 1s
	MaxOutbox         int           // events kept for the broker before routine ones are dropped; default 200,000
	MinSaneTime       time.Time     // a clock before this is not trusted; default MinSaneTime

	// PurgeAfter is the replay horizon: a grant that ended (used up,
	// expired, revoked, transferred), its tombstone and an executed
	// command id are deleted this long after they ended, once the traces
	// before then left the outbox; default 14 days. Envelopes may live at
	// most half of it (MaxEnvelopeLifetime), so no envelope old enough to
	// name a purged grant or command can still be applied.
	PurgeAfter time.Duration
}

// PurgeBatch is how many rows one purge transaction deletes at most: it
// runs in housekeeping, and must not hold up a key.
const PurgeBatch = 200

// PurgeEvery is how often housekeeping looks for rows to purge (at the
// next tick while a batch came back full): daily, so that each purge
// deletes a day's rows in one commit rather than one or two at a time.
const PurgeEvery = 24 * time.Hour

// MaxEnvelopeLifetime is the longest expires_at − issued_at an envelope
// may have with PurgeAfter p: half of it.
func MaxEnvelopeLifetime(p time.Duration) time.Duration { return p / 2 }

// Controller is the locker's brain. Create it with New and start it with Run.
type Controller struct {
	opts  Options
	log   *slog.Logger
	st    *store.Store
	cab   hal.Cabinet
	clock Clock
	hw    map[int]hal.Compartment

	work     chan func()
	appended chan struct{}
	changed  chan struct{}
	ready    chan struct{}
	keys     atomic.Uint64

	// Owned by the loop goroutine, by concern.
	keypadState
	doorState
	housekeepingState
	outageState
	selftest *selfTest // the self-test in progress, if any
	traces   [][]byte  // recorded in the current transaction, for OnTrace after commit
	dirty    bool      // the current transaction changed a compartment

	// The clock estimate (clock.go), read by Now from any goroutine.
	clockMu   sync.Mutex
	bootAt    time.Time // the clock at start, for the estimate while it is not trusted
	highWater time.Time // the last trusted time recorded
}

// keypadState is the keypad session (keypad.go, service.go) and the
// rate limits of what it records.
type keypadState struct {
	entry      []byte // digits typed so far; never logged
	entryAt    time.Time
	service    *serviceMode
	msgUntil   time.Time // a result message is shown until then
	display    [2]string
	failures   int // wrong (or stale) codes in a row
	lockouts   int
	lockedTill time.Time
	// estimateSaved is the estimate last recorded (estimateKey), and
	// estimateStored whether one is recorded; loop only.
	estimateSaved  time.Time
	estimateStored bool
	// horizon is the purge's (advanceHorizon), moved last at horizonAt
	// on the monotonic clock (elapsed); horizonRecorded: in this run;
	// loop only.
	horizon         time.Time
	horizonAt       time.Duration
	horizonRecorded bool
	rejTraced       map[string]time.Time // grant → its last grant_rejected trace
	rejLast         time.Time            // the last envelope_rejected trace (commands.go)
	rejCount        int                  // envelope rejections since, not traced
}

// doorState is what the controller knows of the doors and sensors between
// transactions (compartment.go).
type doorState struct {
	openSince map[int]time.Time    // doors seen open, since when
	openedAt  map[int]time.Time    // when hal saw each door open, for MinOpenTime
	leftAlarm map[int]time.Time    // last door_left_open per open door
	strays    map[int]strayBudget  // stray parcel reports per compartment (parcel)
	movedOn   map[string]time.Time // deposit grant → when its code was typed, once it moved on
	// sensorFaults: per compartment, the sources (door, parcel, lock) whose
	// fault has not recovered.
	sensorFaults map[int]map[string]bool
	// unread: compartments whose sensors had no reading at start (a lock
	// board that did not answer), left as stored until they do (bootLate).
	unread map[int]bool
	// late: per compartment, the release that hal gave up on (a lock
	// fault after its pulses) and when: its door opening within
	// LateOpenWithin is that release's, not a forced door (door).
	late map[int]lateRelease
}

// lateRelease is a release that ended in a lock fault (doorState.late).
type lateRelease struct {
	s  store.Session
	at time.Time
}

// housekeepingState lets the tick skip its transaction while nothing is
// due (housekeeping). wakeAt: the next time something is (zero: at the
// next tick); wasTrusted: the clock's trust at the last run; outboxGrew:
// events were appended since boundOutbox looked; unsynced: something was
// written since the last checkpoint (set from other goroutines by
// AckEvent); nextPurge: when to look for rows to purge.
type housekeepingState struct {
	ticks      uint64 // housekeeping ticks since start (1: the first)
	wakeAt     time.Time
	wasTrusted bool
	outboxGrew bool
	unsynced   atomic.Bool
	nextPurge  time.Time
	// lastWrite: when the controller last wrote (checkpoint).
	lastWrite time.Time
}

// outageState is the storage outage in progress (storage.go): its first
// error, when it began, how many writes failed; storeFault is the error's
// text for other goroutines. sensorPending: the sensor faults (the cause)
// and recoveries (nil) hal reported during the outage, to be recorded once
// it ends.
type outageState struct {
	storeErr      error
	storeDownAt   time.Time
	storeErrs     int
	storeFault    atomic.Value
	sensorPending map[sensorKey][]error
}

// New checks the options and builds a Controller.
func New(opts Options) (*Controller, error) {
	if opts.LockerID == "" || opts.Store == nil || opts.Cabinet == nil {
		return nil, errors.New("controller: LockerID, Store and Cabinet are required")
	}
	if opts.Clock == nil {
		opts.Clock = WallClock
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Language == "" {
		opts.Language = "en"
	}
	if _, ok := messages[opts.Language]; !ok {
		return nil, fmt.Errorf("controller: display language %q: want one of %v", opts.Language, Languages())
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt(&opts.MinCodeLen, 6)
	defInt(&opts.MaxCodeLen, 12)
	defInt(&opts.LockoutAfter, 5)
	def(&opts.EntryTimeout, 30*time.Second)
	def(&opts.MessageTime, 5*time.Second)
	def(&opts.LockoutBase, time.Minute)
	def(&opts.LockoutMax, time.Hour)
	def(&opts.LockoutDecay, 24*time.Hour)
	def(&opts.DoorTimeout, 10*time.Minute)
	def(&opts.MinOpenTime, 200*time.Millisecond)
	def(&opts.DoorLeftOpen, 2*time.Minute)
	def(&opts.DoorLeftOpenEvery, 5*time.Minute)
	def(&opts.Tick, time.Second)
	defInt(&opts.MaxOutbox, 200000)
	def(&opts.PurgeAfter, 14*24*time.Hour)
	if opts.MinSaneTime.IsZero() {
		opts.MinSaneTime = MinSaneTime
	}
	c := &Controller{
		opts:        opts,
		log:         opts.Logger,
		st:          opts.Store,
		cab:         opts.Cabinet,
		clock:       opts.Clock,
		hw:          map[int]hal.Compartment{},
		work:        make(chan func()),
		appended:    make(chan struct{}, 1),
		changed:     make(chan struct{}, 1),
		ready:       make(chan struct{}),
		keypadState: keypadState{rejTraced: map[string]time.Time{}},
		doorState: doorState{openSince: map[int]time.Time{}, openedAt: map[int]time.Time{}, leftAlarm: map[int]time.Time{},
			strays: map[int]strayBudget{}, movedOn: map[string]time.Time{}, sensorFaults: map[int]map[string]bool{}, unread: map[int]bool{},
			late: map[int]lateRelease{}},
	}
	for _, hc := range opts.Cabinet.Compartments() {
		c.hw[hc.Number] = hc
	}
	return c, nil
}

// LockerID is this locker's id.
func (c *Controller) LockerID() string { return c.opts.LockerID }

// Ready is closed once the controller has reconciled the database with the
// sensors and serves the keypad.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// KeysHandled counts the keys the controller has finished handling
// (including any release a key caused being queued).
func (c *Controller) KeysHandled() uint64 { return c.keys.Load() }

// EventsAppended signals that new events were committed to the outbox.
func (c *Controller) EventsAppended() <-chan struct{} { return c.appended }

// Changed signals that the status or a compartment changed.
func (c *Controller) Changed() <-chan struct{} { return c.changed }

// Run reconciles the database with the sensors, records `started`, and then
// serves hardware events, keypad, grants and commands until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	if err := c.boot(ctx); err != nil {
		return err
	}
	close(c.ready)
	tick := time.NewTicker(c.opts.Tick)
	defer tick.Stop()
	events := c.cab.Events()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return errors.New("controller: hardware stopped")
			}
			c.handle(ctx, ev)
		case fn := <-c.work:
			fn()
		case <-tick.C:
			c.housekeeping(ctx)
		}
	}
}

// do runs fn on the loop and waits for it.
func (c *Controller) do(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case c.work <- func() { fn(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// update runs fn in one transaction; on commit it hands the recorded traces
// to OnTrace and signals the outbox and status watchers.
func (c *Controller) update(ctx context.Context, fn func(tx *store.Tx) error) error {
	c.traces = c.traces[:0]
	c.dirty = false
	err := c.st.Update(ctx, fn)
	if err != nil {
		c.traces = c.traces[:0]
		c.dirty = false
		if store.Unavailable(err) {
			c.storageFailed(err)
		}
		return err
	}
	if len(c.traces) > 0 {
		c.dirty = true // last_seq and outbox are in the status
		c.outboxGrew = true
	}
	c.unsynced.Store(true)
	c.lastWrite = c.now()
	c.wakeAt = time.Time{} // whatever changed may make something due
	if len(c.traces) > 0 {
		if c.opts.OnTrace != nil {
			for _, p := range c.traces {
				c.opts.OnTrace(p)
			}
		}
		signal(c.appended)
	}
	c.traces = c.traces[:0]
	if c.dirty {
		signal(c.changed)
	}
	c.dirty = false
	return nil
}

// putCompartment stores sc and notes that the published state may have changed.
func (c *Controller) putCompartment(tx *store.Tx, sc store.Compartment) error {
	c.dirty = true
	return tx.PutCompartment(sc)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// record appends one trace to the outbox inside tx.
func (c *Controller) record(tx *store.Tx, tr wire.Trace) error {
	_, err := c.recordSeq(tx, tr)
	return err
}

// recordSeq is record, and says which seq the trace got.
func (c *Controller) recordSeq(tx *store.Tx, tr wire.Trace) (int64, error) {
	now := c.now()
	if !c.clockTrusted() {
		tr.TimeEstimated = true
		if err := c.noteEstimate(tx, now); err != nil {
			return 0, err
		}
	} else if err := c.saveHighWater(tx); err != nil {
		return 0, err
	}
	_, payload, err := tx.AppendEvent(tr.Type, func(seq int64) ([]byte, error) {
		tr.Seq = seq
		tr.EventID = fmt.Sprintf("%s-%d", c.opts.LockerID, seq)
		tr.Time = wire.FormatTime(now)
		return json.Marshal(tr)
	})
	if err != nil {
		return 0, fmt.Errorf("record %s: %w", tr.Type, err)
	}
	c.traces = append(c.traces, payload)
	c.log.Debug("trace", "type", tr.Type, "seq", tr.Seq, "compartment", tr.Compartment, "grant", tr.GrantID, "actor", tr.Actor)
	return tr.Seq, nil
}

// boot brings the compartments table in line with the wiring and the
// sensors, without opening anything, and records what it found.
func (c *Controller) boot(ctx context.Context) error {
	if err := c.st.View(ctx, c.startClock); err != nil {
		return err
	}
	if err := c.loadKeypadState(ctx); err != nil {
		return err
	}
	err := c.update(ctx, func(tx *store.Tx) error {
		stored, err := tx.Compartments()
		if err != nil {
			return err
		}
		byNum := map[int]store.Compartment{}
		for _, sc := range stored {
			byNum[sc.Number] = sc
			// A compartment the wiring no longer names is forgotten only
			// when nothing is known of it: a disabled one ("the lock does
			// not hold") came back free and in use after one start on a
			// half-written wiring.
			if _, wired := c.hw[sc.Number]; !wired && sc.State == "free" && !sc.Session.Active() && !sc.Disabled && !sc.Missing {
				if err := tx.DeleteCompartment(sc.Number); err != nil {
					return err
				}
			}
		}
		for _, hc := range c.opts.Cabinet.Compartments() {
			sc, known := byNum[hc.Number]
			if !known {
				sc = store.Compartment{Number: hc.Number, State: fsm.Free}
			}
			sc.Size = hc.Size
			if r, ok := c.cab.(hal.Readiness); ok && !r.Readable(hc.Number) {
				// No reading yet: "off" is not "closed and empty". Leave
				// it as stored, out of use, until its board answers.
				c.unread[hc.Number] = true
				if _, err := c.step(tx, sc, fsm.Event{Kind: fsm.SensorFailed, Source: unreadSource, Reason: "no reading since start"}); err != nil {
					return err
				}
				c.sensorFaults[hc.Number] = map[string]bool{unreadSource: true}
				continue
			}
			open, err := c.cab.DoorOpen(hc.Number)
			if err != nil {
				return err
			}
			present, hasSensor, err := c.cab.ParcelPresent(hc.Number)
			if err != nil {
				return err
			}
			if _, err := c.step(tx, sc, fsm.Event{Kind: fsm.Boot, Open: open, Present: present,
				HasOccupancy: hasSensor, Known: known}); err != nil {
				return err
			}
			if open {
				c.openSince[hc.Number] = c.now()
			}
		}
		if err := c.refreshReservations(tx); err != nil {
			return err
		}
		if now := c.clock.Now(); c.trusted(now) && !c.horizon.IsZero() {
			// The purge's horizon, caught up at this start, goes with
			// the start's own write rather than one more at the first tick.
			if err := c.recordHorizon(tx, now); err != nil {
				return err
			}
		}
		return c.record(tx, wire.Trace{Type: fsm.Started.String(), Content: "Locker " + c.opts.LockerID + " started, software " + c.opts.Software})
	})
	if err != nil {
		return fmt.Errorf("controller: start-up: %w", err)
	}
	c.horizonRecorded = c.clockTrusted() && !c.horizon.IsZero()
	c.showIdle()
	return nil
}

// unreadSource is the sensor-fault source of a compartment whose sensors
// had no reading at start.
const unreadSource = "board"

// bootLate finishes the start-up of the compartments whose sensors had no
// reading at start, once they have one: the same reconciliation as boot
// (a deposit or pickup done while the locker was down is recorded), then
// the compartment is in use again.
func (c *Controller) bootLate(ctx context.Context) {
	if len(c.unread) == 0 {
		return
	}
	r, _ := c.cab.(hal.Readiness)
	var ready []int
	for _, n := range slices.Sorted(maps.Keys(c.unread)) {
		if r != nil && r.Readable(n) {
			ready = append(ready, n)
		}
	}
	if len(ready) == 0 {
		return
	}
	// One transaction for all: a board's sixteen compartments are read
	// at once, and one durable commit is enough for them.
	err := c.update(ctx, func(tx *store.Tx) error {
		for _, n := range ready {
			sc, err := tx.Compartment(n)
			if err != nil {
				return err
			}
			open, err := c.cab.DoorOpen(n)
			if err != nil {
				return err
			}
			present, hasSensor, err := c.cab.ParcelPresent(n)
			if err != nil {
				return err
			}
			res, err := c.step(tx, sc, fsm.Event{Kind: fsm.Boot, Open: open, Present: present,
				HasOccupancy: hasSensor, Known: true})
			if err != nil {
				return err
			}
			faults := c.sensorFaults[n]
			if _, err := c.step(tx, res.Next, fsm.Event{Kind: fsm.SensorOK, Source: unreadSource,
				Still: len(faults) > 1 || (len(faults) == 1 && !faults[unreadSource])}); err != nil {
				return err
			}
		}
		return c.refreshReservations(tx)
	})
	if err != nil {
		c.log.Error("start-up of compartments read late", "compartments", ready, "err", err)
		return // tried again at the next tick
	}
	for _, n := range ready {
		delete(c.unread, n)
		delete(c.sensorFaults[n], unreadSource)
		if open, _ := c.cab.DoorOpen(n); open {
			c.openSince[n] = c.now()
		}
	}
}

func (c *Controller) loadKeypadState(ctx context.Context) error {
	return c.st.View(ctx, func(tx *store.Tx) error {
		get := func(k string) string {
			v, _, _ := tx.Setting(k)
			return v
		}
		fmt.Sscan(get("keypad.failures"), &c.failures)
		fmt.Sscan(get("keypad.lockouts"), &c.lockouts)
		if t, err := time.Parse(time.RFC3339Nano, get("keypad.locked_until")); err == nil {
			c.lockedTill = t
			c.capLockout(c.now())
		}
		return nil
	})
}

// MoveOnWithin bounds how long after the code a deposit whose door did not
// open moves on to the next fitting compartment: the hardware's verdict
// comes within seconds, while the courier waits. A release found stuck by
// housekeeping (DoorTimeout later) gives the use back and opens nothing:
// a door springing open minutes later would stand open with nobody there.
const MoveOnWithin = time.Minute

// LateOpenWithin bounds how long after hal gave up on a release (lock_fault)
// its door's opening is still that release's: a lock board whose unlock
// reply was lost acts all the same, and its status (I15: read, never an
// unlock sent again) may come after the confirmation window, for example
// when the board misses a few polls. Later, or with no such release, an
// opening is a forced door's.
const LateOpenWithin = time.Minute

// lockFault records that compartment n's door did not open after a
// release: the compartment goes to state fault (if it held no parcel), a
// pickup's use is given back, and a deposit moves on to the next fitting
// compartment when moveOn and the courier is still there (MoveOnWithin).
// It returns the session the fault ended: none if there was none, or if
// the deposit moved on to another compartment.
func (c *Controller) lockFault(ctx context.Context, n int, reason string, moveOn bool) store.Session {
	var s store.Session
	err := c.update(ctx, func(tx *store.Tx) error {
		sc, err := tx.Compartment(n)
		if err != nil {
			return err
		}
		res, err := c.step(tx, sc, fsm.Event{Kind: fsm.LockFailed, Reason: reason})
		if err == nil && len(res.Traces) > 0 {
			s = sc.Session
		}
		return err
	})
	if err != nil {
		c.log.Error("lock fault not recorded", "compartment", n, "err", err)
	}
	if !s.Active() {
		return s
	}
	c.selfTestResult(ctx, n, errors.New(reason))
	c.led(n, false)
	c.message(msgDoorFault, two(n))
	if s.Action != "deposit" || !moveOn || c.now().Sub(s.At) > MoveOnWithin {
		return s
	}
	// A deposit moves on once per code: a cabinet whose every lock fails
	// must not fire the coil of every fitting compartment for one code.
	if first, moved := c.movedOn[s.GrantID]; moved && c.now().Sub(first) <= MoveOnWithin {
		return s
	}
	if len(c.movedOn) >= 256 {
		clear(c.movedOn)
	}
	c.movedOn[s.GrantID] = s.At
	// The courier is still at the cabinet: try the next fitting compartment.
	var g store.Grant
	err = c.st.View(ctx, func(tx *store.Tx) error {
		var err error
		g, err = tx.Grant(s.GrantID)
		return err
	})
	if err != nil || g.Compartment != 0 || usable(g, c.now()) != nil {
		return s
	}
	if err := c.use(ctx, g); err != nil {
		c.message(msgNoFree, "")
		return s
	}
	// The deposit went on at another door: a late opening of this one is
	// nobody's (a second session of one deposit grant would record it twice).
	return store.Session{}
}

// droppable are the routine events that go first when the outbox is full.
// Parcel events (deposited, picked_up, reclaimed, pickup_expired, …) and
// alarms (door_forced, lock_fault, sensor_fault, keypad_lockout, …) never do.
var droppable = []string{fsm.DoorOpened.String(), fsm.DoorClosed.String(), fsm.LockReleased.String(),
	fsm.DoorLeftOpen.String(), fsm.Started.String(), fsm.GrantRejected.String(), fsm.EnvelopeRejected.String(),
	fsm.SensorRecovered.String()}

// boundOutbox keeps the outbox near MaxOutbox events while the broker is
// out of reach for long: past it, the oldest routine events are dropped,
// a tenth of the limit at a time, and an outbox_overflow trace names the
// seqs they spanned, so that the central can tell the gap from a loss.
func (c *Controller) boundOutbox(ctx context.Context) {
	err := c.update(ctx, func(tx *store.Tx) error {
		span, err := tx.OutboxSpan() // cheap; the count only when it may be over
		if err != nil || span <= int64(c.opts.MaxOutbox) {
			return err
		}
		n, err := tx.OutboxLen()
		if err != nil || n <= c.opts.MaxOutbox {
			return err
		}
		dropped, first, last, err := tx.DropOldest(n-c.opts.MaxOutbox+c.opts.MaxOutbox/10, droppable)
		if err != nil || dropped == 0 {
			if err == nil {
				c.log.Warn("outbox full of events that are never dropped", "events", n)
			}
			return err
		}
		c.log.Warn("outbox full: routine events dropped", "dropped", dropped, "from", first, "to", last)
		return c.record(tx, wire.Trace{Type: fsm.OutboxOverflow.String(), Dropped: dropped, DroppedFrom: first, DroppedTo: last,
			Content: fmt.Sprintf("Outbox full: %d routine events between seq %d and %d dropped", dropped, first, last)})
	})
	if err != nil {
		c.log.Error("outbox bound", "err", err)
	}
}

// housekeeping runs every tick: expiry, time-outs, display.
func (c *Controller) housekeeping(ctx context.Context) {
	c.ticks++
	c.bootLate(ctx)
	now := c.now()
	if (len(c.entry) > 0 || c.service != nil) && now.Sub(c.entryAt) > c.opts.EntryTimeout {
		c.clearEntry()
		c.service = nil
		c.showIdle()
	}
	if !c.msgUntil.IsZero() && !now.Before(c.msgUntil) {
		c.msgUntil = time.Time{}
		if len(c.entry) == 0 {
			c.showIdle()
		}
	}
	c.capLockout(now)
	if now.Before(c.lockedTill) {
		c.showLocked()
	}
	c.saveEstimate(ctx, now)
	c.advanceHorizon(ctx, now)
	if c.storeErr != nil {
		if c.retryStorage(ctx); c.storeErr != nil {
			return // nothing else can be recorded yet
		}
	}
	if c.outboxGrew {
		c.outboxGrew = false
		c.boundOutbox(ctx)
	}
	var stuck []int
	trusted := c.clockTrusted()
	if c.idle(now, trusted) {
		c.purge(ctx, now)
		c.checkpoint(ctx)
		return
	}
	c.wasTrusted = trusted
	var wake time.Time
	err := c.update(ctx, func(tx *store.Tx) error {
		if err := c.judgeStrays(tx); err != nil {
			return err
		}
		if !trusted {
			return nil // nothing expires on a clock that is not trusted
		}
		for n, since := range c.openSince {
			last, alarmed := c.leftAlarm[n]
			if now.Sub(since) < c.opts.DoorLeftOpen || (alarmed && now.Sub(last) < c.opts.DoorLeftOpenEvery) {
				continue
			}
			c.leftAlarm[n] = now
			if err := c.record(tx, wire.Trace{Type: fsm.DoorLeftOpen.String(), Compartment: n,
				Content: "Door " + two(n) + " open for " + waitText(now.Sub(since), "en")}); err != nil {
				return err
			}
		}
		due, err := tx.PickupsDue(now)
		if err != nil {
			return err
		}
		for _, g := range due {
			sc, err := tx.Compartment(g.Compartment)
			if err == nil && sc.Session.Active() {
				// Its door is open (its recipient came at the last
				// minute): judged once the session ends, at a later
				// tick. Marked sent now, pickup_expired was never sent
				// for a parcel left inside.
				continue
			}
			g.ExpiredSent = true
			if err := tx.PutGrant(g); err != nil {
				return err
			}
			if err != nil {
				continue
			}
			if _, err := c.step(tx, sc, fsm.Event{Kind: fsm.Expire, GrantID: g.ID, Actor: g.Actor,
				ParcelID: g.ParcelID, ParcelSeq: g.ParcelSeq}); err != nil {
				return err
			}
		}
		all, err := tx.Compartments()
		if err != nil {
			return err
		}
		busy := false
		for _, sc := range all {
			busy = busy || sc.Session.Active()
			if sc.Session.Active() && !sc.Session.Opened && !sc.DoorOpen && !c.unread[sc.Number] && now.Sub(sc.Session.At) > c.opts.DoorTimeout {
				stuck = append(stuck, sc.Number)
			}
		}
		if err := c.refreshReservationsOf(tx, all); err != nil {
			return err
		}
		if busy {
			return nil // a release under way: look again at the next tick
		}
		next, ok, err := tx.NextDue(now)
		switch {
		case err != nil:
			return err
		case ok:
			wake = next
		default:
			wake = now.Add(time.Hour) // nothing is due: a safety net
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil { // (a stop in the middle is no error)
			c.log.Error("housekeeping", "err", err)
		}
	} else {
		c.wakeAt = wake // after update, which clears it on every write
	}
	for _, n := range stuck {
		// Long after the code: nobody is waiting for another door.
		c.lockFault(ctx, n, "door did not open within "+c.opts.DoorTimeout.String(), false)
	}
	c.purge(ctx, now)
	c.checkpoint(ctx)
}

// idle says whether the tick's transaction can be skipped: nothing has
// changed since it last ran, no door is open, no sensor reading waits to
// be judged, the clock's trust is what it was, and the next time anything
// falls due (wakeAt) has not come. At a thousand lockers in one process
// the 1 s housekeeping transaction was the largest idle cost.
func (c *Controller) idle(now time.Time, trusted bool) bool {
	if c.wakeAt.IsZero() || !now.Before(c.wakeAt) || trusted != c.wasTrusted || len(c.openSince) > 0 {
		return false
	}
	for _, b := range c.strays {
		if b.due != 0 {
			return false
		}
	}
	return true
}

// CheckpointWAL and CheckpointEvery decide when housekeeping copies the
// write-ahead log into the database: once the log passes CheckpointWAL
// bytes, or CheckpointEvery after the last time something was written. A
// checkpoint after every burst of writes rewrote the same pages of the
// database file for every parcel: most of what a parcel wrote to the card.
const (
	CheckpointWAL   = 2 << 20
	CheckpointEvery = time.Hour
)

// checkpoint copies the write-ahead log into the database in idle time.
func (c *Controller) checkpoint(ctx context.Context) {
	if !c.unsynced.Load() {
		return
	}
	now := c.now()
	// Measured from the last write, not the last checkpoint: a locker in
	// use checkpoints when its log is full (a checkpoint writes each page
	// the log holds once, however many commits wrote it), one at rest an
	// hour after its last parcel.
	if c.st.WALBytes() < CheckpointWAL && now.Sub(c.lastWrite) < CheckpointEvery && !now.Before(c.lastWrite) {
		return
	}
	c.unsynced.Store(false)
	// TRUNCATE empties the log's file too: a PASSIVE checkpoint leaves it
	// at its size, and WALBytes would then call for one at every tick.
	if err := c.st.TruncateWAL(ctx); err != nil {
		if err := c.st.Checkpoint(ctx); err != nil {
			c.unsynced.Store(true)
			c.log.Warn("checkpoint", "err", err)
		}
	}
}

// purge deletes, in small batches in idle time, the grants, tombstones and
// command ids that ended more than PurgeAfter ago, and gives the freed
// pages back to the file system. Nothing is purged before the traces of
// that time left the outbox (the central may not know yet that a grant
// was used up), nor on a clock that is not trusted.
func (c *Controller) purge(ctx context.Context, now time.Time) {
	if c.nextPurge.Sub(now) > PurgeEvery {
		c.nextPurge = now // planned on a clock since set back
	}
	if now.Before(c.nextPurge) || !c.clockTrusted() || c.storeErr != nil {
		return
	}
	c.nextPurge = now.Add(PurgeEvery)
	horizon := c.horizon // advanced by advanceHorizon at every tick
	if horizon.IsZero() {
		return
	}
	cutoff := horizon
	n := 0
	err := c.st.Update(ctx, func(tx *store.Tx) error {
		if err := c.recordHorizon(tx, now); err != nil {
			return err
		}
		oldest, ok, err := tx.OldestPending()
		if err != nil {
			return err
		}
		if ok {
			var tr wire.Trace
			if json.Unmarshal(oldest.Payload, &tr) == nil {
				if t, err := time.Parse(time.RFC3339Nano, tr.Time); err == nil && t.Before(cutoff) {
					cutoff = t // the central may not have heard of what ended since
				}
			}
		}
		n, err = tx.Purge(cutoff, wire.FormatTime(cutoff), PurgeBatch)
		return err
	})
	if err != nil {
		c.log.Warn("purge", "err", err)
		return
	}
	if n == 0 {
		return
	}
	c.unsynced.Store(true)
	if n >= PurgeBatch {
		c.nextPurge = now // more to do: at the next tick
	}
	if err := c.st.IncrementalVacuum(ctx, 4*PurgeBatch); err != nil {
		c.log.Warn("incremental vacuum", "err", err)
	}
	c.log.Debug("purged", "rows", n, "before", cutoff)
}
