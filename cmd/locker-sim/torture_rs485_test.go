//go:build linux

package main

// The physical-fault torture on RS485 cabinets: the real locker-sim binary
// with a Kerong and an 8A/80 wiring, its boards simulated behind a
// pseudo-terminal that the daemon's termios code and bus worker drive,
// against a real Mosquitto. Bus faults are injected at the moment a lock is
// opened — a lost reply, a reply with a wrong checksum or from another
// board's address, a noisy line, a board that vanishes, a board whose
// power goes in the middle of the unlock — and on an idle board (a power
// cycle), beside a jammed lock and deposits and pickups by keypad.
//
// After every step the test checks:
//
//   - I15: no unlock is sent again while the outcome of the previous one is
//     unknown to the daemon (the simulated boards watch every unlock frame
//     against the status replies they delivered intact: `resent` in
//     GET /api/rs485 stays 0), and a lock's unlock frames are at most two
//     (a pulse and one retry) per lock_released trace;
//   - no door opens without a grant: every lock_released trace is for the
//     compartment a code or a command was given for just then, and no other
//     door of the cabinet is open or unlatched;
//   - faults become traces: a board that fails long enough gives one
//     sensor_fault naming it ("board BUS1/ADDR") and, once the fault is
//     cleared, sensor_recovered by itself; a release the bus cannot confirm
//     ends with lock_fault; a jammed lock with lock_fault after two pulses;
//   - after each step the board's compartments work again (a lock-faulted
//     one after the central's `open` that confirms it, as the product
//     offers);
//
// and at the end that the central received every trace the locker
// recorded, seq gapless from 1, and that the cabinet's power and pulse
// invariants held.
//
//	go test -race -count=1 -run TestTortureRS485 -v ./cmd/locker-sim/
//	LOCKER_TORTURE=1 …          more steps (LOCKER_TORTURE_STEPS=N: exactly N)
//	LOCKER_TORTURE_SEED=42 …    replays a run (the seed is logged)

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator/api"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/protocol"
)

// Bus faults as the simulator API names them, and the test's own steps.
const (
	rtLostReply   = "lost_reply"
	rtBadChecksum = "bad_checksum"
	rtWrongAddr   = "wrong_address"
	rtNoise       = "noise"
	rtNoAnswer    = "no_answer"
	rtPowerCut    = "power_cut_on_unlock"
	rtJam         = "jammed_lock"    // a compartment fault, not a bus one
	rtPowerCycle  = "power_cycle"    // an idle board's power cycle
	rtParcel      = "deposit+pickup" // by keypad, no fault
)

// rtCoverage is the first steps of every run; rtSteps the default run's
// (the coverage), rtTortureSteps LOCKER_TORTURE=1's.
var rtCoverage = []string{rtParcel, rtLostReply, rtJam, rtBadChecksum, rtWrongAddr, rtPowerCut, rtNoise, rtNoAnswer, rtPowerCycle}

const rtTortureSteps = 100

// rtWiringChanges make the lock timings shorter than the example wirings'
// (a release the bus cannot confirm costs a confirmation window).
var rtWiringChanges = [][2]string{
	{"  cooldown: 1s\n", "  cooldown: 300ms\n"},
	{"  confirm: 2s\n", "  confirm: 1s\n"},
}

func TestTortureRS485(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, file string }{
		{"kerong", "kerong-48.yaml"},
		{"8a80", "8a80-24.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runRS485Torture(t, tc.name, tc.file)
		})
	}
}

type rtComp struct {
	n, board, ch int
	size         string
}

type rtStats struct {
	steps, opens, opened, lockFaults, jams, boardFaults, recovered int
	deposits, pickups, unknownOutcomes, forced                     int
	byFault                                                        map[string]int
}

type rs485Rig struct {
	t      *testing.T
	name   string
	rng    *rand.Rand
	seed   uint64
	s      *sim
	c      *testCentral
	ln     *listener
	kp     protocol.KeyPair
	prefix string
	bus    string
	comps  map[int]rtComp
	order  []int // compartment numbers

	nextID     int64
	released   map[int]int     // lock_released traces by compartment
	allowed    map[int]bool    // compartments a code or command may open now
	seen       int             // traces of the listener checked
	down       int             // boards the locker reported down and not back: len(downBoards)
	downBoards map[string]bool // their names, "board BUS1/2", as the traces give them
	faulted    map[int]bool    // compartments with a lock_fault not yet cleared
	codes      map[string]bool
	mayForce   map[int]bool // compartments opened under a bus fault in this step
	resent     map[int]int  // I15 breaks the boards counted, by address
	violations []string
	st         rtStats
}

func runRS485Torture(t *testing.T, name, file string) {
	steps := len(rtCoverage)
	if os.Getenv("LOCKER_TORTURE") != "" {
		steps = rtTortureSteps
	}
	if os.Getenv("LOCKER_TORTURE_STEPS") != "" {
		steps = envInt(t, "LOCKER_TORTURE_STEPS", steps)
	}
	seed := uint64(envInt(t, "LOCKER_TORTURE_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("RS485 torture on the %s cabinet: %d steps, LOCKER_TORTURE_SEED=%d", name, steps, seed)
	start := time.Now()
	r := &rs485Rig{t: t, name: name, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		prefix: "lockers/v1/" + ftLocker + "/", comps: map[int]rtComp{}, nextID: time.Now().UnixMilli(),
		released: map[int]int{}, allowed: map[int]bool{}, faulted: map[int]bool{}, codes: map[string]bool{}, mayForce: map[int]bool{}, resent: map[int]int{}, downBoards: map[string]bool{}, st: rtStats{byFault: map[string]int{}}}
	defer r.row()

	b, err := os.ReadFile(filepath.Join("../../testdata/wiring", file))
	if err != nil {
		t.Fatal(err)
	}
	yaml := strings.ReplaceAll(string(b), "/dev/ttyUSB0", filepath.Join(t.TempDir(), "ttyUSB-none"))
	for _, ch := range rtWiringChanges {
		if !strings.Contains(yaml, ch[0]) {
			t.Fatalf("%s has no %q to change", file, ch[0])
		}
		yaml = strings.Replace(yaml, ch[0], ch[1], 1)
	}
	wiringPath := filepath.Join(t.TempDir(), file)
	if err := os.WriteFile(wiringPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := wiring.Load(wiringPath)
	if err != nil {
		t.Fatal(err)
	}
	r.bus = w.RS485[0].Name
	for _, c := range w.Compartments {
		r.comps[c.Number] = rtComp{n: c.Number, board: c.Board, ch: c.Channel, size: c.Size}
		r.order = append(r.order, c.Number)
	}
	slices.Sort(r.order)

	br := brokertest.Start(t, brokertest.Options{})
	r.ln = newListener(t, br.URL(), r.prefix+"traces")
	r.c = newCentral(t, br.URL(), "central-rs485-"+name, r.prefix+"+/+")
	data := t.TempDir()
	r.s = startSimFast(t, br.URL(), data, "-quiet", "-config", wiringPath)
	if r.kp, err = protocol.LoadKeyPair(filepath.Join(data, "central-dev.json")); err != nil {
		t.Fatal(err)
	}
	r.waitOnline()

	for i := 0; i < steps; i++ {
		kind := ""
		if i < len(rtCoverage) {
			kind = rtCoverage[i]
		} else {
			kind = rtCoverage[r.rng.IntN(len(rtCoverage))]
		}
		if dl, ok := t.Deadline(); ok && time.Until(dl) < time.Minute {
			t.Logf("stopping after %d steps: the test's -timeout is near", i)
			break
		}
		stepStart := time.Now()
		r.step(kind)
		t.Logf("step %d: %s in %v", i, kind, time.Since(stepStart).Round(time.Millisecond))
		r.st.steps++
		r.st.byFault[kind]++
		r.audit()
		if t.Failed() {
			return
		}
	}
	r.final(data)
	t.Logf("%d steps in %.1fs; stats %+v", r.st.steps, time.Since(start).Seconds(), r.st)
}

func (r *rs485Rig) row() {
	s := r.st
	lost := len(r.violations)
	if r.t.Failed() && lost == 0 {
		lost = 1
	}
	printTortureRow("physical faults ("+r.name+" RS485)", s.steps-s.byFault[rtParcel], "faults", lost, fmt.Sprintf(
		"%d opens under lost replies, bad checksums, wrong addresses, noise, vanished boards and power cuts mid-unlock "+
			"(%d opened, %d with an outcome the bus could not read: lock_fault, no unlock resent), %d jammed locks, "+
			"%d boards down and %d back by themselves, %d deposits and %d pickups by keypad; I15 watched at every frame, "+
			"seq gapless", s.opens, s.opened, s.unknownOutcomes, s.jams, s.boardFaults, s.recovered, s.deposits, s.pickups))
	if len(r.violations) > 0 {
		r.t.Errorf("%d violations (replay with LOCKER_TORTURE_SEED=%d):\n  %s", len(r.violations), r.seed,
			strings.Join(r.violations, "\n  "))
	}
}

func (r *rs485Rig) violate(format string, args ...any) {
	msg := fmt.Sprintf("step %d: ", r.st.steps) + fmt.Sprintf(format, args...)
	r.violations = append(r.violations, msg)
	r.t.Logf("VIOLATION %s", msg)
	if len(r.violations) > 50 {
		r.t.Fatalf("more than 50 violations: stopping")
	}
}

func (r *rs485Rig) id() int64 { r.nextID++; return r.nextID }

func (r *rs485Rig) newCode() string { return uniqueCode(r.rng, r.codes) }

func (r *rs485Rig) waitOnline() { r.s.waitOnline(r.t) }

// ---- the trace stream ----

// pull checks the traces that came since the last pull.
func (r *rs485Rig) pull() {
	for _, tr := range r.ln.distinct()[r.seen:] {
		r.seen++
		switch tr.Type {
		case "lock_released":
			if !r.allowed[tr.Compartment] {
				r.violate("lock_released for %02d, which no code or command opened just then (grant %q)", tr.Compartment, tr.GrantID)
			}
			r.released[tr.Compartment]++
		case "lock_fault":
			r.faulted[tr.Compartment] = true
			r.st.lockFaults++
		case "door_forced":
			// Only a door whose unlock went to a board in trouble may open
			// unseen by its release (the board acted, its status could not
			// be read in time): the locker then reports it forced.
			if !r.mayForce[tr.Compartment] {
				r.violate("door_forced for %02d, whose board had no fault", tr.Compartment)
			}
			r.st.forced++
		case "sensor_fault", "sensor_recovered":
			if tr.Compartment != 0 {
				r.violate("%s of compartment %02d: no sensor of it failed (%s)", tr.Type, tr.Compartment, tr.Reason)
				continue
			}
			// A board's sensor_fault and sensor_recovered both name it
			// ("board BUS1/2…"): every recovery is of a board that was
			// down, and the rig knows which boards still are.
			name, _, _ := strings.Cut(tr.Reason, ":")
			if !strings.HasPrefix(name, "board "+r.bus+"/") {
				r.violate("%s %q names no board of %s", tr.Type, tr.Reason, r.bus)
				continue
			}
			if tr.Type == "sensor_fault" {
				if r.downBoards[name] {
					r.violate("%s reported down twice without a recovery", name)
				}
				r.downBoards[name] = true
				r.st.boardFaults++
			} else {
				if !r.downBoards[name] {
					r.violate("sensor_recovered of %s, which was not down", name)
				}
				delete(r.downBoards, name)
				r.st.recovered++
			}
			r.down = len(r.downBoards)
		}
	}
}

// waitTrace waits up to d for a trace after index from that match accepts.
func (r *rs485Rig) waitTrace(from int, d time.Duration, match func(wire.Trace) bool) (wire.Trace, bool) {
	deadline := time.Now().Add(d)
	for {
		all := r.ln.distinct()
		for _, tr := range all[min(from, len(all)):] {
			if match(tr) {
				r.pull()
				return tr, true
			}
		}
		if time.Now().After(deadline) {
			r.pull()
			return wire.Trace{}, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *rs485Rig) mark() int { return len(r.ln.distinct()) }

// ---- the bus ----

func (r *rs485Rig) view() api.RS485 { return r.s.rs485() }

func (r *rs485Rig) busFault(board int, fault string) {
	var st map[string]any
	if code := r.s.call("POST", fmt.Sprintf("/api/rs485/%s/boards/%d/fault", r.bus, board), map[string]string{"fault": fault}, &st); code != 200 {
		r.t.Fatalf("fault %s on board %d: %d %v", fault, board, code, st)
	}
}

// audit checks what the simulated boards and the cabinet say after a step.
func (r *rs485Rig) audit() {
	r.pull()
	for _, b := range r.view().Buses {
		for _, bd := range b.Boards {
			if n := int(bd.Resent) - r.resent[bd.Address]; n > 0 {
				r.violate("board %d: %d unlocks resent while the outcome of the previous one was unknown (I15)", bd.Address, n)
				r.resent[bd.Address] = int(bd.Resent)
			}
			for ch, n := range bd.ChannelUnlocks {
				c := r.compOn(bd.Address, ch)
				if c == 0 {
					r.violate("board %d channel %d, which no compartment uses, got %d unlocks", bd.Address, ch, n)
					continue
				}
				if int(n) > 2*r.released[c] {
					r.violate("compartment %02d: %d unlock frames for %d lock_released traces (at most a pulse and one retry each)", c, n, r.released[c])
				}
			}
		}
	}
	for _, cm := range r.s.cabinet().Compartments {
		if (cm.Door != "closed" || !cm.Latched) && !r.allowed[cm.Number] {
			r.violate("compartment %02d is %s, latched %v: nobody was let in", cm.Number, cm.Door, cm.Latched)
		}
	}
}

func (r *rs485Rig) compOn(board, ch int) int {
	for _, c := range r.comps {
		if c.board == board && c.ch == ch {
			return c.n
		}
	}
	return 0
}

// ---- the steps ----

// states is the locker's view of its compartments, by number.
func (r *rs485Rig) states() map[int]string {
	var rep wire.CompartmentsReport
	if code := r.s.call("GET", "/api/daemon/compartments", nil, &rep); code != 200 {
		r.t.Fatalf("GET /api/daemon/compartments: %d", code)
	}
	out := map[int]string{}
	for _, cs := range rep.Compartments {
		out[cs.Number] = cs.State
	}
	return out
}

// free picks a compartment that is free, shut and empty.
func (r *rs485Rig) free() rtComp {
	cab, states := r.s.cabinet().Compartments, r.states()
	var ok []rtComp
	for _, cm := range cab {
		if states[cm.Number] == "free" && cm.Door == "closed" && !cm.Parcel && cm.Fault == "none" {
			ok = append(ok, r.comps[cm.Number])
		}
	}
	if len(ok) == 0 {
		r.t.Fatalf("no free compartment left: %v", states)
	}
	return ok[r.rng.IntN(len(ok))]
}

func (r *rs485Rig) step(kind string) {
	switch kind {
	case rtParcel:
		r.parcelRound()
	case rtPowerCycle:
		r.powerCycle()
	default:
		r.openUnder(kind)
	}
}

// command sends a signed command and waits for its result.
func (r *rs485Rig) command(action string, n int) {
	id := fmt.Sprintf("c-%d", r.id())
	now := time.Now().UTC()
	cmd := wire.Command{Kind: "command", LockerID: ftLocker, CommandID: id, IssuedAt: now, ExpiresAt: now.Add(time.Minute),
		Action: action, Compartment: n, Reason: "rs485 torture"}
	r.c.publish(r.prefix+"commands", sealWith(r.t, r.kp.KeyID, r.kp.Private, cmd))
	for deadline := time.Now().Add(10 * time.Second); ; {
		for _, m := range r.c.all() {
			var res wire.CommandResult
			if strings.HasSuffix(m.Topic, "/commands/result") && json.Unmarshal(m.Payload, &res) == nil && res.CommandID == id {
				if !res.OK {
					r.violate("%s command for %02d: %s", action, n, m.Payload)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no result for the %s command of %02d within 10 s", action, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// release waits for the end of a release of n begun after trace index
// from: "opened" (door_opened with a grant), or "fault" (lock_fault).
func (r *rs485Rig) release(from, n int, d time.Duration) string {
	tr, ok := r.waitTrace(from, d, func(tr wire.Trace) bool {
		return tr.Compartment == n && ((tr.Type == "door_opened" && tr.GrantID != "") || tr.Type == "lock_fault")
	})
	switch {
	case !ok:
		r.violate("the release of %02d neither opened nor failed within %v", n, d)
		return ""
	case tr.Type == "lock_fault":
		return "fault"
	}
	return "opened"
}

// shut pushes the door of n shut once it is open, and waits for the
// locker to see it closed.
//
// It waits first until the locker reads the door open (a board that just
// came back reports it at its next poll, later on a loaded machine), then
// ftMinOpen: a door read closed within MinOpenTime of the opening the
// locker saw is a sensor_fault, not a door_closed ("no door_closed for 03"
// in a make test run, after a power cut mid-unlock).
func (r *rs485Rig) shut(n int, from int) {
	deadline := time.Now().Add(10 * time.Second)
	for r.s.cabinet().Compartments[n-1].ReadDoor != "open" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(ftMinOpen)
	r.s.do(n, "door", map[string]string{"action": "close"})
	if _, ok := r.waitTrace(from, 10*time.Second, func(tr wire.Trace) bool {
		return tr.Compartment == n && tr.Type == "door_closed"
	}); !ok {
		r.violate("no door_closed for %02d within 10 s", n)
	}
}

// openUnder injects fault into the board of a free compartment (or jams
// its lock) and has the central open it at once.
func (r *rs485Rig) openUnder(fault string) {
	c := r.free()
	if fault == rtJam {
		r.s.do(c.n, "fault", map[string]string{"fault": rtJam})
		r.st.jams++
	} else {
		r.busFault(c.board, fault)
		r.mayForce[c.n] = true
	}
	from := r.mark()
	r.allowed[c.n] = true
	r.command("open", c.n)
	r.st.opens++
	res := r.release(from, c.n, 20*time.Second)
	switch {
	case res == "opened":
		r.st.opened++
	case res == "fault" && fault == rtJam:
		if tr, _ := r.waitTrace(from, 0, func(tr wire.Trace) bool { return tr.Type == "lock_fault" && tr.Compartment == c.n }); !strings.Contains(tr.Reason, "2 pulses") {
			r.violate("jammed lock of %02d: lock_fault %q, want it after 2 pulses", c.n, tr.Reason)
		}
	case res == "fault":
		r.st.unknownOutcomes++
	}
	if fault == rtJam && res == "opened" {
		r.violate("jammed lock of %02d: the door opened", c.n)
	}
	// A board that stopped answering (every fault but noise and a jam,
	// for long enough) is reported.
	switch fault {
	case rtLostReply, rtBadChecksum, rtWrongAddr, rtNoAnswer:
		if _, ok := r.waitTrace(from, 5*time.Second, func(tr wire.Trace) bool {
			return tr.Type == "sensor_fault" && strings.Contains(tr.Reason, fmt.Sprintf("board %d", c.board))
		}); !ok {
			r.violate("%s on board %d: no sensor_fault naming it within 5 s", fault, c.board)
		}
	}
	// The repair.
	if fault == rtJam {
		r.s.do(c.n, "fault", map[string]string{"fault": "none"})
	} else if fault != rtPowerCut {
		r.busFault(c.board, "none")
	}
	r.recoverBoards(from)
	if r.s.cabinet().Compartments[c.n-1].Door == "open" {
		r.shut(c.n, from)
	}
	// A lock-faulted compartment comes back with the central's open.
	if r.faulted[c.n] {
		from := r.mark()
		r.command("open", c.n)
		if res := r.release(from, c.n, 10*time.Second); res != "opened" {
			r.violate("the central's open of the repaired %02d after its lock_fault ended %q", c.n, res)
		} else {
			delete(r.faulted, c.n)
			r.shut(c.n, from)
		}
	}
	r.waitState(c.n, "free")
	r.audit()
	delete(r.allowed, c.n)
	delete(r.mayForce, c.n)
}

// recoverBoards waits until every board the locker reported down is
// reported back, by itself.
func (r *rs485Rig) recoverBoards(from int) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.pull()
		if r.down == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.violate("boards reported down and not back within 10 s of the repair: %v", r.downBoards)
			r.down, r.downBoards = 0, map[string]bool{}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitState waits for the locker's view of n.
func (r *rs485Rig) waitState(n int, want string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := r.states()[n]
		if st == want {
			return
		}
		if time.Now().After(deadline) {
			r.violate("compartment %02d is %s, want %s", n, st, want)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// powerCycle cuts an idle board's power: it is reported down and back.
func (r *rs485Rig) powerCycle() {
	board := r.comps[r.order[r.rng.IntN(len(r.order))]].board
	from := r.mark()
	var st map[string]any
	// Off for 3 s: the bus puts a board down after three missed polls,
	// and on a loaded machine three polls of every board take more than
	// the 600 ms this once was (a power cycle then went unseen).
	if code := r.s.call("POST", fmt.Sprintf("/api/rs485/%s/boards/%d/power-cycle", r.bus, board), map[string]int{"off_ms": 3000}, &st); code != 200 {
		r.t.Fatalf("power-cycle board %d: %d %v", board, code, st)
	}
	if _, ok := r.waitTrace(from, 5*time.Second, func(tr wire.Trace) bool {
		return tr.Type == "sensor_fault" && strings.Contains(tr.Reason, fmt.Sprintf("board %d", board))
	}); !ok {
		r.violate("board %d power-cycled for 3 s: no sensor_fault naming it", board)
	}
	r.recoverBoards(from)
}

// parcelRound deposits a parcel by keypad and picks it up.
func (r *rs485Rig) parcelRound() {
	size := r.free().size
	id := fmt.Sprintf("g-%d", r.id())
	code, pcode := r.newCode(), r.newCode()
	now := time.Now().UTC().Truncate(time.Millisecond)
	op := depositWithPickup(ftLocker, id, code, pcode, now)
	op.Size, op.ParcelID = size, "P"+id
	r.send(now, op)
	// Any free compartment of the size may open.
	for _, c := range r.comps {
		if c.size == size {
			r.allowed[c.n] = true
		}
	}
	from := r.mark()
	r.s.keys(code + "#")
	tr, ok := r.waitTrace(from, 10*time.Second, func(tr wire.Trace) bool { return tr.Type == "lock_released" && tr.GrantID == id })
	if !ok {
		r.violate("deposit code typed: no lock_released within 10 s")
		clear(r.allowed)
		return
	}
	n := tr.Compartment
	clear(r.allowed)
	r.allowed[n] = true
	if r.release(from, n, 10*time.Second) != "opened" {
		r.violate("deposit into %02d did not open", n)
		return
	}
	r.s.do(n, "parcel", map[string]bool{"present": true})
	r.shut(n, from)
	if _, ok := r.waitTrace(from, 10*time.Second, func(tr wire.Trace) bool { return tr.Type == "deposited" && tr.Compartment == n }); !ok {
		r.violate("no deposited for %02d", n)
		return
	}
	r.st.deposits++
	from = r.mark()
	r.s.keys(pcode + "#")
	if r.release(from, n, 10*time.Second) != "opened" {
		r.violate("pickup from %02d did not open", n)
		return
	}
	r.s.do(n, "parcel", map[string]bool{"present": false})
	r.shut(n, from)
	if _, ok := r.waitTrace(from, 10*time.Second, func(tr wire.Trace) bool { return tr.Type == "picked_up" && tr.Compartment == n }); !ok {
		r.violate("no picked_up for %02d", n)
		return
	}
	r.st.pickups++
	r.waitState(n, "free")
	r.audit()
	delete(r.allowed, n)
}

// send signs one grants envelope and waits for its ack.
func (r *rs485Rig) send(now time.Time, ops ...wire.GrantOp) {
	env := sealWith(r.t, r.kp.KeyID, r.kp.Private, grantsBody(ftLocker, now, ops...))
	for try := 0; try < 5; try++ {
		r.c.publish(r.prefix+"grants", env)
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
			for _, m := range r.c.all() {
				var ack wire.GrantsAck
				if strings.HasSuffix(m.Topic, "/grants/ack") && json.Unmarshal(m.Payload, &ack) == nil && ack.IssuedAt.Equal(now) {
					if ack.Applied+ack.Stale != len(ops) || len(ack.Rejected) > 0 {
						r.violate("grants ack %s", m.Payload)
					}
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	r.t.Fatal("no ack for a grants envelope within 15 s")
}

// final checks that no event was lost on the way to the central.
func (r *rs485Rig) final(data string) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		last, _ := outboxState(r.t, data)
		trs := r.ln.distinct()
		seqs := make([]int64, 0, len(trs))
		for _, tr := range trs {
			seqs = append(seqs, tr.Seq)
		}
		slices.Sort(seqs)
		gapless := len(seqs) > 0 && seqs[0] == 1 && seqs[len(seqs)-1] == int64(len(seqs))
		if gapless && int64(len(seqs)) == last {
			r.pull()
			return
		}
		if time.Now().After(deadline) {
			r.violate("the central has %d traces (first %v), the locker recorded %d; its outbox holds %v", len(seqs), seqs[:min(3, len(seqs))], last, outboxSeqs(r.t, data))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// outboxSeqs lists the seqs still in the locker's outbox.
func outboxSeqs(t *testing.T, data string) []int64 {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, daemon.DBFile)+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT seq FROM outbox ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}
