package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	stdsync "sync"
	"time"

	"github.com/openlocker/locker/controller"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator"
	simrs485 "github.com/openlocker/locker/simulator/rs485"
)

// Options say where a scenario plays.
type Options struct {
	Dir      string           // data folder for the database and the cabinet's state (required)
	Wiring   *wiring.Wiring   // default: the simulator's default cabinet
	LockerID string           // default SIM01
	Start    time.Time        // the controller's clock at the start; default 2026-11-22T10:00:00Z
	Logger   *slog.Logger     // default: discard
	Settle   time.Duration    // how long to wait for the cabinet to settle after a step; default 5s
	Verbose  func(msg string) // told each step as it is played, when set
	// KerongSilentUnlock: simulated Kerong boards that answer nothing to an
	// unlock (simulator.Options.KerongSilentUnlock; "# boards: silent-unlock").
	KerongSilentUnlock bool
}

// Run plays the steps against the real controller, store and hal drivers on
// a simulated cabinet, and returns the log: every trace the locker recorded
// and every answer to a grant or command, one per line, without times.
func Run(ctx context.Context, steps []Step, o Options) ([]string, error) {
	if o.Dir == "" {
		return nil, errors.New("scenario: Dir is required")
	}
	if o.Wiring == nil {
		w, err := simulator.DefaultWiring()
		if err != nil {
			return nil, err
		}
		o.Wiring = w
	}
	if o.LockerID == "" {
		o.LockerID = "SIM01"
	}
	if o.Start.IsZero() {
		o.Start = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Settle <= 0 {
		o.Settle = 5 * time.Second
		if len(o.Wiring.RS485) > 0 {
			// An 8A/80 board answers an unlock after 500 ms: a jammed lock's
			// two pulses and confirmations, then the next compartment's
			// release, take longer than on pins.
			o.Settle = 15 * time.Second
		}
	}
	o.Wiring = testTimings(o.Wiring)
	cab, err := simulator.New(o.Wiring, simulator.Options{StatePath: filepath.Join(o.Dir, "cabinet.json"), Logger: o.Logger,
		KerongSilentUnlock: o.KerongSilentUnlock})
	if err != nil {
		return nil, err
	}
	defer cab.Halt()
	r := &runner{o: o, cab: cab, clock: &Clock{now: o.Start}, faulty: map[string]bool{}}
	if err := r.start(ctx); err != nil {
		return nil, err
	}
	defer r.stop()
	for _, st := range steps {
		if o.Verbose != nil {
			o.Verbose(st.String())
		}
		if err := r.step(ctx, st); err != nil {
			return r.lines(), fmt.Errorf("%s: %w", st, err)
		}
	}
	// The hardware rules held all along: power budget, pulse cap, gaps, cool-downs.
	if err := cab.CheckInvariants(); err != nil {
		return r.lines(), err
	}
	if err := cab.CheckSpacing(); err != nil {
		return r.lines(), err
	}
	return r.lines(), nil
}

// Clock is a clock that moves only when told.
type Clock struct {
	mu  stdsync.Mutex
	now time.Time
}

// Now is the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

// Advance moves the clock on.
func (c *Clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type runner struct {
	o     Options
	cab   *simulator.Cabinet
	clock *Clock

	// One daemon life: replaced at each power cut.
	st     *store.Store
	hw     *hal.Hardware
	ctl    *controller.Controller
	cancel context.CancelFunc
	wg     stdsync.WaitGroup

	mu  stdsync.Mutex
	log []string
	// faulty: the boards a board step put a fault on ("BUS1/1"), whose
	// compartments' sensors hal cannot read meanwhile (halAgrees).
	faulty map[string]bool
}

// Reply timings of the simulated RS485 buses in scenarios (wiring
// reply_timeout, reply_silence), instead of the product's 50ms and 25ms:
// on a loaded machine (load average ~20 on 2 cores, -race) the simulated
// boards missed those now and then, three polls in a row at times, and a
// board was reported down and up again at a step of no scenario's making
// (8 of 24 runs of the RS485 scenarios). Every board trace is in the log:
// a board that goes down shows in the golden, and so does its recovery.
const (
	ScenarioReplyTimeout = 500 * time.Millisecond
	ScenarioReplySilence = 200 * time.Millisecond
)

// testTimings returns w with its RS485 buses' unset reply timings at the
// scenario values (a copy: w is not changed).
func testTimings(w *wiring.Wiring) *wiring.Wiring {
	if len(w.RS485) == 0 {
		return w
	}
	c := *w
	c.RS485 = append([]wiring.RS485Bus(nil), w.RS485...)
	for i := range c.RS485 {
		b := &c.RS485[i]
		if b.ReplyTimeout == 0 {
			b.ReplyTimeout = ScenarioReplyTimeout
		}
		if b.ReplySilence == 0 {
			b.ReplySilence = ScenarioReplySilence
		}
	}
	return &c
}

func (r *runner) start(ctx context.Context) error {
	st, err := store.Open(ctx, filepath.Join(r.o.Dir, "locker.db"))
	if err != nil {
		return err
	}
	hw, err := hal.New(r.o.Wiring, r.cab.ByName, hal.Options{NoDisplayDelays: true, Buses: r.cab.Bus, OpenSerial: r.cab.OpenSerial, Logger: r.o.Logger})
	if err != nil {
		st.Close()
		return err
	}
	// A scenario's person acts as soon as the cabinet has settled, faster
	// than any real one: a door shut 190 ms after it opened would be
	// doubted (MinOpenTime, 200 ms by default), on a loaded machine now
	// and then. The doubt itself is the controller's tests' to check.
	ctl, err := controller.New(controller.Options{LockerID: r.o.LockerID, Store: st, Cabinet: hw, Clock: r.clock,
		Logger: r.o.Logger, Tick: time.Hour, OnTrace: r.onTrace, MinOpenTime: time.Millisecond})
	if err != nil {
		hw.Halt()
		st.Close()
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	r.st, r.hw, r.ctl, r.cancel = st, hw, ctl, cancel
	r.wg.Add(2)
	go func() { defer r.wg.Done(); hw.Run(runCtx) }()
	go func() { defer r.wg.Done(); ctl.Run(runCtx) }()
	select {
	case <-ctl.Ready():
	case <-time.After(10 * time.Second):
		return errors.New("controller not ready within 10 s")
	}
	return r.settle(ctx)
}

// reboot waits as long as a board takes to boot at the least: a coil's
// cool-down (kept by the lock driver, in memory) then holds across a power
// cut too.
func (r *runner) reboot() { time.Sleep(r.o.Wiring.Locks.Cooldown) }

// stop ends the daemon abruptly, as a power cut does: nothing is written on
// the way out.
func (r *runner) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
	r.hw.Halt()
	r.st.Close()
	r.cancel = nil
}

func (r *runner) onTrace(payload []byte) {
	var tr wire.Trace
	if err := json.Unmarshal(payload, &tr); err != nil {
		r.add("! trace is not JSON: " + string(payload))
		return
	}
	r.add(TraceLine(tr))
}

// TraceLine is the log line of one trace: what matters, without its time.
func TraceLine(tr wire.Trace) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", tr.Seq, tr.Type)
	if tr.Compartment != 0 {
		fmt.Fprintf(&b, " c=%02d", tr.Compartment)
	}
	for _, kv := range [][2]string{{"grant", tr.GrantID}, {"actor", tr.Actor}, {"parcel", tr.ParcelID},
		{"command", tr.CommandID}, {"reason", tr.Reason}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], strconv.Quote(kv[1]))
		}
	}
	if tr.Suppressed != 0 {
		fmt.Fprintf(&b, " suppressed=%d", tr.Suppressed)
	}
	return b.String()
}

func (r *runner) add(line string) {
	r.mu.Lock()
	r.log = append(r.log, line)
	r.mu.Unlock()
}

func (r *runner) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

// settle waits until the cabinet is still, no release is queued, hal's
// debounced view of every sensor is what the sensors read, and the
// controller has handled every event hal sent: its view of the doors is
// hal's.
func (r *runner) settle(ctx context.Context) error {
	deadline := time.Now().Add(r.o.Settle)
	for time.Now().Before(deadline) {
		if r.cab.Settled() && !r.hw.Busy() && len(r.hw.Events()) == 0 && r.halAgrees() {
			if err := r.ctl.Sync(ctx); err != nil {
				return err
			}
			if len(r.hw.Events()) == 0 && r.controllerAgrees(ctx) {
				return nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("the cabinet did not settle within %s", r.o.Settle)
}

// halAgrees says whether hal's debounced readings are what the simulated
// sensors read now (the physical truth, or what an injected fault makes a
// door sensor say). A compartment on a board with a bus fault is left out:
// hal keeps its last reading until the board answers again.
func (r *runner) halAgrees() bool {
	unreadable := map[int]bool{}
	for _, wc := range r.o.Wiring.Compartments {
		if wc.Bus != "" && r.faulty[fmt.Sprintf("%s/%d", wc.Bus, wc.Board)] {
			unreadable[wc.Number] = true
		}
	}
	for _, c := range r.cab.Snapshot().Compartments {
		if unreadable[c.Number] {
			continue
		}
		want := c.Door == simulator.DoorOpen
		switch c.Fault {
		case simulator.FaultSensorStuckOpen:
			want = true
		case simulator.FaultSensorStuckClosed:
			want = false
		}
		if open, err := r.hw.DoorOpen(c.Number); err != nil || open != want {
			return false
		}
		if present, ok, err := r.hw.ParcelPresent(c.Number); err != nil || (ok && present != c.Parcel) {
			return false
		}
	}
	return true
}

// controllerAgrees says whether the controller's view of every door is hal's.
func (r *runner) controllerAgrees(ctx context.Context) bool {
	rep, err := r.ctl.Compartments(ctx)
	if err != nil {
		return false
	}
	for _, c := range rep.Compartments {
		open, err := r.hw.DoorOpen(c.Number)
		if err != nil || open != (c.Door == "open") {
			return false
		}
	}
	return true
}

func (r *runner) step(ctx context.Context, st Step) error {
	var n int
	var err error
	if r.cancel == nil && st.Verb != "poweron" && st.Verb != "door" && st.Verb != "parcel" && st.Verb != "fault" &&
		st.Verb != "expect" && st.Verb != "board" {
		return errors.New("the power is off: only doors, parcels and faults can be moved")
	}
	switch st.Verb {
	case "grant":
		err = r.grant(ctx, st)
	case "command":
		n, _ = strconv.Atoi(st.Args[1])
		id := st.Opts["id"]
		if id == "" {
			id = fmt.Sprintf("c-line%d", st.Line)
		}
		var res wire.CommandResult
		res, err = r.ctl.Execute(ctx, &wire.Command{Kind: "command", LockerID: r.o.LockerID, CommandID: id,
			Action: st.Args[0], Compartment: n, Reason: "scenario"})
		if err == nil {
			r.add(fmt.Sprintf("> result %s ok=%v %s", res.CommandID, res.OK, res.Error))
		}
	case "keys":
		err = r.keys(ctx, st.Args[0])
	case "door":
		n, _ = strconv.Atoi(st.Args[0])
		switch st.Args[1] {
		case "close":
			err = r.cab.CloseDoor(n)
		case "open":
			err = r.cab.OpenDoor(n)
		case "force":
			err = r.cab.ForceDoor(n)
		}
	case "parcel":
		n, _ = strconv.Atoi(st.Args[0])
		err = r.cab.SetParcel(n, st.Args[1] == "in")
	case "fault":
		n, _ = strconv.Atoi(st.Args[0])
		var f simulator.Fault
		if f, err = simulator.ParseFault(st.Args[1]); err == nil {
			err = r.cab.SetFault(n, f)
		}
	case "board":
		err = r.board(st)
	case "advance":
		d, _ := time.ParseDuration(st.Args[0])
		r.clock.Advance(d)
		err = r.ctl.Housekeeping(ctx)
	case "powercut":
		r.stop()
		r.add("> power cut")
		r.reboot()
		err = r.start(ctx)
	case "poweroff":
		if r.cancel == nil {
			return errors.New("the power is off already")
		}
		r.stop()
		r.add("> power off")
		return nil
	case "poweron":
		if r.cancel != nil {
			return errors.New("the power is on already")
		}
		r.add("> power on")
		r.reboot()
		err = r.start(ctx)
	case "expect":
		return r.expect(ctx, st)
	}
	if err != nil {
		return err
	}
	if r.cancel == nil {
		return nil // powered off: nothing to wait for
	}
	return r.settle(ctx)
}

// board injects a bus fault into a simulated board ("board BUS1 0
// no_answer") or clears it (none), and, with the daemon running, waits for
// the board's sensor_fault (or sensor_recovered) in the log: the bus takes
// three failed polls to report a board down, longer than the cabinet takes
// to settle, and the trace must come at this step, not at a later one.
func (r *runner) board(st Step) error {
	bus := r.cab.RS485Bus(st.Args[0])
	if bus == nil {
		return fmt.Errorf("no simulated RS485 bus %q", st.Args[0])
	}
	addr, _ := strconv.Atoi(st.Args[1])
	f, err := simrs485.ParseFault(st.Args[2])
	if err != nil {
		return err
	}
	from := len(r.lines())
	if err := bus.SetFault(addr, f); err != nil {
		return err
	}
	r.faulty[fmt.Sprintf("%s/%d", st.Args[0], addr)] = f != simrs485.FaultNone
	if r.cancel == nil {
		return nil
	}
	typ := "sensor_fault"
	if f == simrs485.FaultNone {
		typ = "sensor_recovered"
	}
	name := strconv.Quote(fmt.Sprintf("board %s/%d", st.Args[0], addr))
	if !waitUntil(20*time.Second, func() bool {
		for _, l := range r.lines()[from:] {
			if _, rest, ok := strings.Cut(l, " "+typ+" reason="); ok &&
				(rest == name || strings.HasPrefix(rest, strings.TrimSuffix(name, `"`)+": ")) {
				return true
			}
		}
		return false
	}) {
		return fmt.Errorf("no %s of board %s/%d within 20 s", typ, st.Args[0], addr)
	}
	return nil
}

// keys presses each key as a person would: down until the controller has
// handled it, then up until the scanner has seen it released.
func (r *runner) keys(ctx context.Context, keys string) error {
	for i := 0; i < len(keys); i++ {
		k := keys[i]
		before := r.ctl.KeysHandled()
		if err := r.cab.PressKey(k); err != nil {
			return err
		}
		ok := waitUntil(2*time.Second, func() bool { return r.ctl.KeysHandled() > before })
		scans := r.cab.Scans()
		if err := r.cab.ReleaseKey(k); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("key %q was not handled within 2 s", k)
		}
		if !waitUntil(2*time.Second, func() bool { return r.cab.Scans() >= scans+3 }) {
			return fmt.Errorf("keypad not scanned")
		}
	}
	return r.settle(ctx)
}

func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func (r *runner) grant(ctx context.Context, st Step) error {
	now := r.clock.Now()
	version := int64(1)
	if v := st.Opts["version"]; v != "" {
		var err error
		if version, err = strconv.ParseInt(v, 10, 64); err != nil {
			return fmt.Errorf("version %q", v)
		}
	}
	op := wire.GrantOp{Op: st.Args[0], GrantID: st.Args[1], Version: version}
	if op.Op == "put" {
		op.Action = st.Args[2]
		op.Size, op.ParcelID, op.Holder = st.Opts["size"], st.Opts["parcel"], st.Opts["holder"]
		if c := st.Opts["compartment"]; c != "" {
			op.Compartment, _ = strconv.Atoi(c)
		}
		if code := st.Opts["code"]; code != "" {
			op.CodeHash = wire.CodeHash(r.o.LockerID, code)
		}
		valid, err := durationOpt(st, "valid", 24*time.Hour)
		if err != nil {
			return err
		}
		until := now.Add(valid)
		op.ValidUntil = &until
		if u := st.Opts["uses"]; u != "" {
			n, err := strconv.Atoi(u)
			if err != nil {
				return fmt.Errorf("uses %q", u)
			}
			op.Uses = &n
		}
		if p := st.Opts["pickup"]; p != "" {
			id, code, ok := strings.Cut(p, ":")
			if !ok {
				return fmt.Errorf("pickup=ID:CODE")
			}
			pv, err := durationOpt(st, "pickup-valid", 72*time.Hour)
			if err != nil {
				return err
			}
			pu := now.Add(pv)
			op.Pickup = &wire.PickupSpec{GrantID: id, Holder: st.Opts["pickup-holder"],
				CodeHash: wire.CodeHash(r.o.LockerID, code), ValidUntil: &pu}
		}
	}
	ack, err := r.ctl.ApplyGrants(ctx, &wire.GrantsBody{Kind: "grants", LockerID: r.o.LockerID, IssuedAt: now,
		ExpiresAt: now.Add(time.Hour), Snapshot: st.Opts["snapshot"] == "true", Ops: []wire.GrantOp{op}})
	if err != nil {
		return err
	}
	line := fmt.Sprintf("> ack applied=%d stale=%d", ack.Applied, ack.Stale)
	for _, rj := range ack.Rejected {
		line += fmt.Sprintf(" rejected=%s:%q", rj.GrantID, rj.Error)
	}
	r.add(line)
	return nil
}

func durationOpt(st Step, key string, def time.Duration) (time.Duration, error) {
	v := st.Opts[key]
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a duration", key, v)
	}
	return d, nil
}

func (r *runner) expect(ctx context.Context, st Step) error {
	switch st.Args[0] {
	case "display":
		d := strings.Join(r.cab.Display(), " | ")
		if !strings.Contains(d, st.Args[1]) {
			return fmt.Errorf("display shows %q, want %q", d, st.Args[1])
		}
	case "state":
		if r.cancel == nil {
			return errors.New("the power is off: the daemon has no view")
		}
		n, _ := strconv.Atoi(st.Args[1])
		rep, err := r.ctl.Compartments(ctx)
		if err != nil {
			return err
		}
		for _, c := range rep.Compartments {
			if c.Number == n {
				if c.State != st.Args[2] {
					return fmt.Errorf("compartment %d is %s, want %s", n, c.State, st.Args[2])
				}
				return nil
			}
		}
		return fmt.Errorf("no compartment %d", n)
	case "door", "parcel":
		n, _ := strconv.Atoi(st.Args[1])
		c, err := r.cab.Compartment(n)
		if err != nil {
			return err
		}
		got := c.Door
		if st.Args[0] == "parcel" {
			got = map[bool]string{true: "in", false: "out"}[c.Parcel]
		}
		if got != st.Args[2] {
			return fmt.Errorf("%s %d is %s, want %s", st.Args[0], n, got, st.Args[2])
		}
	}
	return nil
}
