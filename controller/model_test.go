package controller

// The adversarial model test of issue 11.
//
// A small reference model of the locker — which doors may open, and what
// must be recorded — written from docs/protocol.md, docs/keypad.md and the
// wire protocol, not from the controller's code. A generator drives the
// controller (on the fake cabinet of controller_test.go, its database on a
// real SQLite file) with random sequences over everything that can happen:
// grants of every shape (colliding codes, nested pickups, duplicates,
// reordered envelopes, absurd times), commands, the keypad and its service
// menu, people at the doors, forced doors, sensor faults, jammed locks,
// power cuts (also between the coil and the door), clock jumps and storage
// outages. After every step (every key) the invariants below are checked;
// a failing sequence is shrunk by delta debugging over its steps to a
// minimal one, printed (and, with LOCKER_MODEL_SAVE=1, written to
// testdata/scenarios/model/) as a scenario: one step per line.
//
//	I1 a lock is released only for: a code typed just now that belongs, per
//	   the model, to a grant in force (right action and compartment, for a
//	   pickup the very parcel it was issued for), the keypad not locked; a
//	   service-menu action while the service grant is in force at that key;
//	   a fresh command id; a deposit moving on within a minute after a lock
//	   fault on its first door. Never while the storage cannot record.
//	I2 the release's lock_released trace is durably in the outbox before the
//	   coil fires (checked inside Release).
//	I3 one code opens at most one parcel's compartment: a pickup or reclaim
//	   code only the compartment holding its parcel; a deposit code never an
//	   occupied compartment (on record, or a parcel physically there).
//	I4 every parcel movement is recorded: with power and storage back and the
//	   door closed, the recorded presence (deposited/parcel_found: in;
//	   picked_up/reclaimed/parcel_missing: out) is the physical one.
//	I5 an ended right opens nothing: revoked, transferred, expired, used up;
//	   a service menu whose grant ended; a pickup whose parcel is gone.
//	I6 an envelope applied again (or an older one after a newer) changes no
//	   stored grant, and no grant put after a snapshot is revoked by it.
//	I7 the outbox seq is gapless across power cuts; a flickering sensor or a
//	   stale code typed over and over adds a bounded number of events.
//	I8 every compartment is in one protocol state with consistent facts; its
//	   recorded parcel presence agrees with the physical one once settled.
//	I9 nothing expires while the clock is not trusted; the estimate follows
//	   the last trusted time (a jump into the future and back leaves no
//	   trace); no pickup_expired for a pickup still in time.
//
//	go test -run Model ./controller/
//	LOCKER_MODEL_SEED=123 go test -run 'TestModel$' -v ./controller/
//	LOCKER_TORTURE=1 … many more sequences; LOCKER_MODEL_SAVE=1 writes what it finds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/clocktest"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

const modelSizes = "S M M L"

var modelSizeRank = map[string]int{"S": 1, "M": 2, "L": 3, "XL": 4}

// violation is one broken invariant.
type violation struct {
	inv    string // "I1" … "I9"
	step   int    // the index of the step that broke it
	msg    string
	traces []string // the last traces before it broke
}

func (v *violation) Error() string { return fmt.Sprintf("%s at step %d: %s", v.inv, v.step+1, v.msg) }

// errStop ends a run at its first violation.
var errStop = errors.New("model: violation")

// hookCab is the fake cabinet with a hook in Release: the coil fires there.
type hookCab struct {
	*fakeCabinet
	w *mworld
}

func (h *hookCab) Release(n int) error { return h.w.onRelease(n) }

// mrelease is one call of Release.
type mrelease struct {
	n      int
	failed bool
}

// mworld is one run: the controller, the fake cabinet, and the model.
type mworld struct {
	t    *testing.T
	r    *rig
	dir  string
	m    *model
	step int
	line string
	v    *violation

	hmu        stdsync.Mutex
	releases   []mrelease
	relSeen    int
	hookSeq    int64         // outbox events read by the hook
	unmatched  map[int][]int // compartment → lock_released seqs not yet matched by a Release
	failNext   bool          // Release fails (a driver error)
	hookErr    string        // an I2 violation seen inside Release
	traces     []wire.Trace
	tracesSeen int

	powered   bool
	storageOK bool

	outboxChecked   int64 // the outbox holds 1..outboxChecked (checkOutbox)
	outboxUnchecked bool  // booted since the last checkOutbox

	comps struct { // the compartments read last (storedCompartments)
		st      *store.Store
		updates uint64
		rows    []store.Compartment
	}
}

func newWorld(t *testing.T) *mworld {
	dir := t.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "locker-model-"); err == nil {
			dir = d
		}
	}
	w := &mworld{t: t, dir: dir, unmatched: map[int][]int{}, storageOK: true}
	w.r = &rig{t: t, path: filepath.Join(dir, "locker.db"), cab: newFakeCabinet(modelSizes), clock: clocktest.New(t0)}
	if err := os.WriteFile(w.r.path, migratedDB(t), 0o600); err != nil {
		t.Fatal(err)
	}
	w.m = newModel(len(w.r.cab.comps), w.r.cab.comps)
	w.start()
	return w
}

// migrated is an empty database with every migration applied, made once
// per test binary: a sequence starts from a copy of it instead of
// migrating a new file (the migrations were a fifth of a sequence's time).
// The migrations themselves are tested in store.
var migrated struct {
	once stdsync.Once
	data []byte
	err  error
}

func migratedDB(t *testing.T) []byte {
	migrated.once.Do(func() {
		dir, err := os.MkdirTemp("", "locker-model-template-")
		if err != nil {
			migrated.err = err
			return
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "locker.db")
		st, err := store.Open(context.Background(), path)
		if err != nil {
			migrated.err = err
			return
		}
		if migrated.err = st.Close(); migrated.err != nil {
			return
		}
		if _, err := os.Stat(path + "-wal"); err == nil {
			migrated.err = fmt.Errorf("the closed template database left its write-ahead log behind")
			return
		}
		migrated.data, migrated.err = os.ReadFile(path)
	})
	if migrated.err != nil {
		t.Fatalf("the migrated template database: %v", migrated.err)
	}
	return migrated.data
}

// close stops the controller and removes the database.
func (w *mworld) close() {
	if w.powered {
		w.r.stop()
		w.powered = false
	}
	os.RemoveAll(w.dir)
}

// start boots the controller on the database (rig.start, with the hooked
// cabinet and the traces collected here).
func (w *mworld) start() {
	r := w.r
	r.ctx, r.cancel = context.WithCancel(context.Background())
	st, err := store.Open(r.ctx, r.path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.st = st
	r.cab.events = make(chan hal.Event)
	c, err := New(Options{LockerID: lockerID, Store: st, Cabinet: &hookCab{r.cab, w}, Clock: r.clock, Tick: time.Hour,
		OnTrace: func(p []byte) {
			var tr wire.Trace
			if err := json.Unmarshal(p, &tr); err != nil {
				r.t.Errorf("trace is not JSON: %v", err)
			}
			w.hmu.Lock()
			w.traces = append(w.traces, tr)
			w.hmu.Unlock()
		}})
	if err != nil {
		r.t.Fatal(err)
	}
	r.c = c
	r.done = make(chan error, 1)
	go func() { r.done <- c.Run(r.ctx) }()
	select {
	case <-c.Ready():
	case err := <-r.done:
		r.t.Fatalf("controller stopped: %v", err)
	}
	w.powered = true
	w.storageOK = true
	w.outboxUnchecked = true
	w.hmu.Lock()
	w.hookSeq = 0 // read the outbox again: a release between boots is still matched once
	w.unmatched = map[int][]int{}
	var last int64
	err = st.View(r.ctx, func(tx *store.Tx) error { var err error; last, err = tx.LastSeq(); return err })
	if err == nil {
		w.hookSeq = last
	}
	w.hmu.Unlock()
}

// onRelease is the coil: it runs on the controller's goroutine.
func (w *mworld) onRelease(n int) error {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := w.r.st.View(ctx, func(tx *store.Tx) error {
		evs, err := tx.Pending(w.hookSeq, 1<<20)
		if err != nil {
			return err
		}
		for _, e := range evs {
			w.hookSeq = e.Seq
			var tr wire.Trace
			if json.Unmarshal(e.Payload, &tr) == nil && tr.Type == "lock_released" {
				w.unmatched[tr.Compartment] = append(w.unmatched[tr.Compartment], int(e.Seq))
			}
		}
		return nil
	})
	switch {
	case err != nil:
		w.hookErr = fmt.Sprintf("the coil of %d fired while the outbox could not be read (a write transaction open?): %v", n, err)
	case len(w.unmatched[n]) == 0:
		w.hookErr = fmt.Sprintf("the coil of %d fired with no lock_released for it in the outbox", n)
	default:
		w.unmatched[n] = w.unmatched[n][1:]
	}
	if w.failNext {
		w.releases = append(w.releases, mrelease{n: n, failed: true})
		return fmt.Errorf("model: relay driver error on %d", n)
	}
	w.releases = append(w.releases, mrelease{n: n})
	return w.r.cab.Release(n)
}

// modelSkip: invariants not checked (LOCKER_MODEL_SKIP=I4,I8), to look
// past known violations.
var modelSkip = os.Getenv("LOCKER_MODEL_SKIP")

func (w *mworld) fail(inv, format string, args ...any) {
	if modelSkip != "" && strings.Contains(","+modelSkip+",", ","+inv+",") {
		return
	}
	if w.v == nil {
		w.v = &violation{inv: inv, step: w.step, msg: fmt.Sprintf(format, args...)}
		trs := w.allTraces()
		if len(trs) > 14 {
			trs = trs[len(trs)-14:]
		}
		for _, tr := range trs {
			s := fmt.Sprintf("%d %s", tr.Seq, tr.Type)
			if tr.Compartment != 0 {
				s += fmt.Sprintf(" c%d", tr.Compartment)
			}
			if tr.GrantID != "" {
				s += " " + tr.GrantID
			}
			if tr.Reason != "" {
				s += " (" + tr.Reason + ")"
			}
			w.v.traces = append(w.v.traces, s)
		}
	}
	panic(errStop)
}

// now is the controller's time.
func (w *mworld) now() time.Time {
	if !w.powered {
		return w.r.clock.Now()
	}
	return w.r.c.Now()
}

func (w *mworld) trusted() bool { return !w.r.clock.Now().Before(MinSaneTime) }

// newTraces returns the traces recorded since the last call.
func (w *mworld) newTraces() []wire.Trace {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	trs := slices.Clone(w.traces[w.tracesSeen:])
	w.tracesSeen = len(w.traces)
	return trs
}

func (w *mworld) newReleases() ([]mrelease, string) {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	rs := slices.Clone(w.releases[w.relSeen:])
	w.relSeen = len(w.releases)
	e := w.hookErr
	w.hookErr = ""
	return rs, e
}

// ---- the scenario language ----

// run executes a sequence of steps; it stops at the first violation.
func runModel(t *testing.T, lines []string, gen func(w *mworld) (string, bool)) (steps []string, v *violation) {
	w := newWorld(t)
	defer w.close()
	w.checkAll(nil, "boot")
	defer func() {
		if p := recover(); p != nil {
			if p != errStop {
				panic(p)
			}
			v = w.v
		}
	}()
	for i := 0; ; i++ {
		var line string
		if gen != nil {
			l, ok := gen(w)
			if !ok {
				break
			}
			line = l
		} else {
			if i >= len(lines) {
				break
			}
			line = lines[i]
		}
		steps = append(steps, line)
		w.step = i
		w.line = line
		w.exec(line)
	}
	if w.powered {
		w.checkOutbox() // a violation panics to the recover above
	}
	return steps, nil
}

func (w *mworld) exec(line string) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return
	}
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	num := func(i int) int { n, _ := strconv.Atoi(arg(i)); return n }
	r := w.r
	switch f[0] {
	case "grants":
		if w.powered {
			w.grants(line)
		}
	case "keys":
		if w.powered {
			for i := 0; i < len(arg(1)); i++ {
				w.key(arg(1)[i])
			}
		}
	case "stale":
		// A code typed over and over: the events it adds are bounded.
		if w.powered {
			before := len(w.allTraces())
			for i := 0; i < num(2); i++ {
				for _, k := range []byte("**" + arg(1) + "#") {
					w.key(k)
				}
			}
			// (Doors it still opens, and their faults, are no flood: they are
			// bounded by the compartments. Its refusals are what is bounded.)
			rejected := 0
			for _, tr := range w.allTraces()[before:] {
				if tr.Type == "grant_rejected" {
					rejected++
				}
			}
			if rejected > 3 {
				w.fail("I7", "the same code typed %d times added %d grant_rejected events", num(2), rejected)
			}
		}
	case "cmd":
		if w.powered {
			w.command(arg(1), arg(2), num(3))
		}
	case "door":
		n, open := num(1), arg(2) == "open"
		if n < 1 || n > w.m.n {
			return
		}
		r.cab.mu.Lock()
		same := r.cab.door[n] == open
		r.cab.door[n] = open
		r.cab.mu.Unlock()
		if same || !w.powered {
			return
		}
		w.around(nil, func() { r.event(hal.Event{Kind: hal.DoorChanged, Compartment: n, On: open}) })
	case "parcel":
		n, in := num(1), arg(2) == "in"
		if n < 1 || n > w.m.n {
			return
		}
		r.cab.mu.Lock()
		ok := r.cab.door[n] && r.cab.parcel[n] != in // only through an open door
		if ok {
			r.cab.parcel[n] = in
		}
		r.cab.mu.Unlock()
		if !ok || !w.powered {
			return
		}
		w.around(nil, func() { r.event(hal.Event{Kind: hal.ParcelChanged, Compartment: n, On: in}) })
	case "flicker":
		// The occupancy sensor of a closed door flickers: the reading
		// changes k times and ends where it was.
		n, k := num(1), num(2)
		if n < 1 || n > w.m.n || !w.powered {
			return
		}
		r.cab.mu.Lock()
		truth, closed := r.cab.parcel[n], !r.cab.door[n]
		r.cab.mu.Unlock()
		if !closed {
			return
		}
		before := len(w.allTraces())
		w.around(nil, func() {
			for i := 1; i <= k*2; i++ {
				v := truth != (i%2 == 1)
				r.cab.mu.Lock()
				r.cab.parcel[n] = v
				r.cab.mu.Unlock()
				r.event(hal.Event{Kind: hal.ParcelChanged, Compartment: n, On: v})
			}
			// Then the sensor holds still: the controller judges what it
			// noted quietly two housekeeping ticks later.
			r.tick()
			r.tick()
		})
		if d := len(w.allTraces()) - before; d > 4 {
			w.fail("I7", "an occupancy sensor that flickered %d times added %d events", 2*k, d)
		}
	case "lock":
		n := num(1)
		if n < 1 || n > w.m.n || !w.powered {
			return
		}
		if arg(2) == "jam" {
			allowed := w.m.moveOnTargets(n, w.now(), w.physical())
			w.around(allowed, func() {
				r.event(hal.Event{Kind: hal.LockReleased, Compartment: n, Err: fmt.Errorf("%w (2 pulses)", hal.ErrLockFault)})
			})
		} else {
			w.around(nil, func() { r.event(hal.Event{Kind: hal.LockReleased, Compartment: n}) })
		}
	case "release-fails":
		w.hmu.Lock()
		w.failNext = arg(1) == "on"
		w.hmu.Unlock()
	case "sensor":
		n := num(1)
		if n < 1 || n > w.m.n || !w.powered {
			return
		}
		if arg(2) == "fault" {
			w.m.sensorFault[n] = true
			w.around(nil, func() {
				r.event(hal.Event{Kind: hal.SensorFault, Compartment: n, Err: fmt.Errorf("%w: 9 changes in 2s", hal.ErrChatter)})
			})
		} else {
			w.m.sensorFault[n] = false
			w.m.recovered[n] = true
			w.around(nil, func() { r.event(hal.Event{Kind: hal.SensorRecovered, Compartment: n}) })
		}
	case "power":
		switch arg(1) {
		case "cut":
			if w.powered {
				r.stop()
				w.powered = false
			}
			fallthrough
		case "on":
			if !w.powered {
				w.m.boot(w)
				w.around(nil, w.start)
			}
		case "off":
			if w.powered {
				r.stop()
				w.powered = false
			}
		}
	case "clock":
		w.clock(arg(1))
		if w.powered {
			w.around(nil, r.tick)
		}
	case "tick":
		if w.powered {
			w.around(nil, r.tick)
		}
	case "storage":
		if !w.powered {
			return
		}
		on := arg(1) == "on"
		w.around(nil, func() { r.readOnly(!on) })
		w.storageOK = on
		if on {
			w.around(nil, r.tick)
		}
	default:
		w.t.Fatalf("unknown step %q", line)
	}
}

// clock sets the board's clock: +D, -D, 1970 (a board without a real-time
// clock booting), sane (NTP sets it again).
func (w *mworld) clock(s string) {
	c := w.r.clock
	switch s {
	case "1970":
		if w.trusted() {
			w.m.saneAt = c.Now()
			w.m.setAt = time.Unix(0, 0).UTC()
			c.Set(w.m.setAt)
		}
	case "sane":
		if !w.trusted() {
			c.Set(w.m.saneAt.Add(c.Now().Sub(w.m.setAt)))
		}
	default:
		d, err := time.ParseDuration(s)
		if err != nil {
			w.t.Fatalf("clock %q: %v", s, err)
		}
		if d < 0 && !w.trusted() {
			return // the controller measures the estimate on the monotonic clock, which never goes back
		}
		c.Advance(d)
	}
}

func (w *mworld) physical() map[int][2]bool {
	out := map[int][2]bool{}
	w.r.cab.mu.Lock()
	defer w.r.cab.mu.Unlock()
	for n := 1; n <= w.m.n; n++ {
		out[n] = [2]bool{w.r.cab.door[n], w.r.cab.parcel[n]}
	}
	return out
}

func (w *mworld) allTraces() []wire.Trace {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	return slices.Clone(w.traces)
}

// around runs one action of the step and checks every invariant after it;
// allowed lists the releases the action may make.
func (w *mworld) around(allowed *mallow, fn func()) {
	w.m.beforeNow = w.now()
	fn()
	w.checkAll(allowed, "")
}

func (w *mworld) key(k byte) {
	now := w.now()
	allowed := w.m.key(k, now, w.storageOK, w.physical())
	w.around(allowed, func() { w.r.keys(string(k)) })
}

func (w *mworld) command(id, action string, n int) {
	fresh := !w.m.cmds[id]
	w.m.cmds[id] = true
	var allowed *mallow
	if fresh && action == "open" && w.storageOK {
		allowed = &mallow{kind: "command", targets: map[int]string{n: id}}
	}
	w.around(allowed, func() {
		res, err := w.r.c.Execute(w.r.ctx, &wire.Command{Kind: "command", LockerID: lockerID, CommandID: id, Action: action, Compartment: n})
		if err != nil && w.storageOK {
			w.t.Fatalf("Execute: %v", err)
		}
		if err != nil {
			if fresh {
				delete(w.m.cmds, id) // not recorded: the id is still fresh
			}
			return
		}
		if !fresh && (res.OK || res.Error != "duplicate") {
			w.fail("I1", "command id %s ran twice: %+v", id, res)
		}
	})
}
