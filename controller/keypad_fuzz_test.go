package controller

// FuzzKeypad types arbitrary key sequences into a real controller (the fake
// cabinet of controller_test.go, a real SQLite store) holding a few grants
// whose codes the test knows, and runs a model of the keypad beside it.
// After every key it checks:
//
//   - a lock is released exactly when the model says: on '#' after the
//     digits typed since the last clear equal the code of a grant that may
//     be used now, or from the service menu (1, a door, #; 4, the
//     self-test) opened by a service code — and the lock_released trace
//     names the grant whose code was typed;
//   - the typed entry is what the model typed (so never longer than
//     MaxCodeLen), and the service menu is open exactly when it should be;
//   - the wrong-code counter, the lockout level and the lockout's end are
//     the model's: LockoutAfter wrong codes in a row lock the keypad for
//     the doubling wait, and while it is locked a key is dropped without a
//     lookup — no trace, no release, no change to the counter, even for a
//     valid code;
//   - no code, and no run of six digits, is ever written to the log, the
//     traces or the display.
//
// Each input byte is a key ("0123456789*#ABCD"[b&15]); a byte of 0xF0 and
// up instead lets ((b&15)+1)*15 s pass and runs the housekeeping tick.
//
// One controller and database serve a whole fuzzing process (the store
// lives in /dev/shm where there is one): before each input the keypad, the
// compartments, the grants and the clock are put back, so that an input
// always starts from the same state. Every kpRecycle inputs the database
// starts afresh, which keeps the outbox's seq short.
//
//	go test -run '^$' -fuzz '^FuzzKeypad$' -fuzztime 20s ./controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/clocktest"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/simulator/logtest"
)

const (
	kpLockerID = "FUZZ-KP"
	kpKeys     = "0123456789*#ABCD"
	kpMaxSteps = 64 // bytes of an input that are used
	kpRecycle  = 2000

	kpAfter      = 3 // wrong codes before a lockout
	kpBase       = time.Minute
	kpMax        = 4 * time.Minute
	kpDecay      = 24 * time.Hour
	kpEntryIdle  = 30 * time.Second
	kpMinCodeLen = 6
	kpMaxCodeLen = 12
)

// The grants of the fuzz rig. dep deposits into the smallest free
// compartment of size M or more; pick and recl take the parcel of
// compartment 1; svc opens the service menu; door3 is a service code for
// compartment 3 only; old has ended and soon has not started (known codes
// that do not count as wrong); gone was revoked (its code is unknown now).
const (
	codeDep   = "731904"
	codePick  = "26483517"
	codeRecl  = "314159265358"
	codeSvc   = "90817263"
	codeDoor3 = "5550123456"
	codeOld   = "48151623"
	codeSoon  = "11235813"
	codeGone  = "99887766"
)

// kpCodeOf maps grant ids to their codes; kpGrantOf the other way.
var (
	kpCodeOf = map[string]string{"dep": codeDep, "pick": codePick, "recl": codeRecl, "svc": codeSvc,
		"door3": codeDoor3, "old": codeOld, "soon": codeSoon}
	kpGrantOf = func() map[string]string {
		m := map[string]string{}
		for id, code := range kpCodeOf {
			m[code] = id
		}
		return m
	}()
)

func kpGrants() []store.Grant {
	until := t0.Add(30 * 24 * time.Hour)
	from := t0.Add(-time.Hour)
	g := func(id, action string, compartment int, size, parcel string, uses int) store.Grant {
		return store.Grant{ID: id, Version: 1, Action: action, Compartment: compartment, Size: size, ParcelID: parcel,
			Actor: "134****8888", CodeHash: wire.CodeHash(kpLockerID, kpCodeOf[id]), ValidFrom: from, ValidUntil: until,
			UsesLeft: uses}
	}
	old := g("old", "deposit", 0, "S", "PO", 1)
	old.ValidFrom, old.ValidUntil = t0.Add(-48*time.Hour), t0.Add(-time.Hour)
	soon := g("soon", "deposit", 0, "S", "PS", 1)
	soon.ValidFrom, soon.ValidUntil = until, until.Add(24*time.Hour)
	return []store.Grant{
		g("dep", "deposit", 0, "M", "PD", 1),
		g("pick", "pickup", 1, "", "P1", 1),
		g("recl", "reclaim", 1, "", "P1", 1),
		g("svc", "service", 0, "", "", -1),
		g("door3", "service", 3, "", "", -1),
		old, soon,
		{ID: "gone", Version: 2, Revoked: true},
	}
}

func kpCompartments() []store.Compartment {
	return []store.Compartment{
		{Number: 1, Size: "S", State: "occupied", ParcelID: "P1", ParcelPresent: true},
		{Number: 2, Size: "M", State: "free"},
		{Number: 3, Size: "L", State: "free"},
	}
}

// kpRig is one controller on one database, reused across inputs.
type kpRig struct {
	ctx    context.Context
	cancel context.CancelFunc
	dir    string
	st     *store.Store
	cab    *fakeCabinet
	clock  *clocktest.Clock
	c      *Controller
	done   chan error
	log    *logtest.Buffer // every line the controller logs
	runs   int
	last   *kpModel // the model at the end of the last input that finished; nil: reset everything

	mu     stdsync.Mutex
	traces []wire.Trace
	raw    []string
}

func newKPRig() (*kpRig, error) {
	dir, err := os.MkdirTemp(shmDir(), "locker-fuzz-keypad-")
	if err != nil {
		return nil, err
	}
	k := &kpRig{dir: dir, cab: newFakeCabinet("S M L"), clock: clocktest.New(t0), log: &logtest.Buffer{}}
	k.cab.parcel[1] = true
	k.ctx, k.cancel = context.WithCancel(context.Background())
	st, err := store.Open(k.ctx, filepath.Join(dir, "locker.db"))
	if err != nil {
		k.cancel()
		os.RemoveAll(dir)
		return nil, err
	}
	k.st = st
	logger := slog.New(slog.NewTextHandler(k.log, &slog.HandlerOptions{Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{} // the wall clock's digits are not the controller's
			}
			return a
		}}))
	k.c, err = New(Options{LockerID: kpLockerID, Store: st, Cabinet: k.cab, Clock: k.clock, Logger: logger,
		Tick: time.Hour, MinCodeLen: kpMinCodeLen, MaxCodeLen: kpMaxCodeLen, EntryTimeout: kpEntryIdle,
		LockoutAfter: kpAfter, LockoutBase: kpBase, LockoutMax: kpMax, LockoutDecay: kpDecay,
		DoorTimeout: 365 * 24 * time.Hour, // no lock fault moves a deposit on: no door ever opens here
		OnTrace: func(p []byte) {
			var tr wire.Trace
			_ = json.Unmarshal(p, &tr)
			k.mu.Lock()
			k.traces = append(k.traces, tr)
			k.raw = append(k.raw, string(p))
			k.mu.Unlock()
		}})
	if err != nil {
		k.close()
		return nil, err
	}
	k.done = make(chan error, 1)
	go func() { k.done <- k.c.Run(k.ctx) }()
	select {
	case <-k.c.Ready():
	case err := <-k.done:
		k.done <- err
		k.close()
		return nil, fmt.Errorf("controller stopped: %v", err)
	}
	return k, nil
}

// shmDir is memory-backed /dev/shm where there is one: the run is
// dominated by fsync otherwise.
func shmDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}

func (k *kpRig) close() {
	k.cancel()
	if k.done != nil {
		<-k.done
	}
	k.st.Close()
	os.RemoveAll(k.dir)
}

// reset puts the keypad, compartments, grants, clock and cabinet back to
// the state every input starts from. It rewrites only the rows the last
// input changed (its model says which), unless that input did not finish.
// The keypad's saved counters need no reset: they are read only at start.
func (k *kpRig) reset() error {
	k.clock.Set(t0)
	k.cab.mu.Lock()
	k.cab.releases = nil
	k.cab.mu.Unlock()
	var err error
	derr := k.c.do(k.ctx, func() {
		c := k.c
		c.clearEntry()
		c.service, c.selftest = nil, nil
		c.failures, c.lockouts, c.lockedTill = 0, 0, time.Time{}
		c.msgUntil, c.entryAt = time.Time{}, time.Time{}
		c.showIdle()
		last := k.last
		if last != nil && last.untouched() {
			return
		}
		err = c.st.Update(k.ctx, func(tx *store.Tx) error {
			for _, sc := range kpCompartments() {
				if last != nil && last.session[sc.Number] == "" && !last.disabled[sc.Number] {
					continue
				}
				if err := tx.PutCompartment(sc); err != nil {
					return err
				}
			}
			for _, g := range kpGrants() {
				if last != nil && !last.usedUp[g.ID] {
					continue
				}
				if err := tx.PutGrant(g); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if derr != nil {
		return derr
	}
	k.last = nil // until this input finishes
	k.log.Take()
	k.mu.Lock()
	k.traces, k.raw = nil, nil
	k.mu.Unlock()
	return err
}

// kpState is what the test reads of the controller after each step.
type kpState struct {
	entry      string
	service    bool
	choice     byte
	failures   int
	lockouts   int
	lockedTill time.Time
}

// step hands one key (or, with key 0, a housekeeping tick) to the loop and
// returns the keypad's state once it is handled. The key goes in as hal's
// event would, but together with the read of the state: one hand-over to
// the loop a step instead of two.
func (k *kpRig) step(t *testing.T, key byte) kpState {
	t.Helper()
	var s kpState
	err := k.c.do(k.ctx, func() {
		c := k.c
		if key == 0 {
			c.housekeeping(k.ctx)
		} else {
			c.handle(k.ctx, hal.Event{Kind: hal.KeyPressed, Key: key})
		}
		s = kpState{entry: string(c.entry), failures: c.failures, lockouts: c.lockouts, lockedTill: c.lockedTill}
		if c.service != nil {
			s.service, s.choice = true, c.service.choice
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (k *kpRig) newTraces(from int) ([]wire.Trace, []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]wire.Trace(nil), k.traces[from:]...), append([]string(nil), k.raw[from:]...)
}

func (k *kpRig) traceCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.traces)
}

// kpModel is the keypad as docs/keypad.md describes it, on the rig's grants.
type kpModel struct {
	now        time.Time
	entry      string
	entryAt    time.Time
	service    bool
	choice     byte
	failures   int
	lockouts   int
	lockedTill time.Time
	session    [4]string // the session on each compartment: the grant id, "selftest", or ""
	disabled   [4]bool
	usedUp     map[string]bool // pick, recl: the one use is taken
	selftest   bool
}

// untouched says whether no stored compartment or grant changed.
func (m *kpModel) untouched() bool {
	return m.session == [4]string{} && m.disabled == [4]bool{} && len(m.usedUp) == 0
}

// stepResult is what the model expects of one step.
type stepResult struct {
	releases  []int
	code      string // a '#' in the keypad's normal mode: the code it submitted
	locked    bool   // the keypad was locked when the key came
	byService bool   // the releases come from the service menu
}

func (m *kpModel) key(k byte) stepResult {
	if m.now.Before(m.lockedTill) {
		m.entry = ""
		return stepResult{locked: true}
	}
	if m.service {
		return m.serviceKey(k)
	}
	switch {
	case k >= '0' && k <= '9':
		if len(m.entry) < kpMaxCodeLen {
			m.entry += string(k)
			m.entryAt = m.now
		}
	case k == '*':
		m.entry = ""
	case k == '#' && m.entry != "":
		code := m.entry
		m.entry = ""
		r := stepResult{code: code}
		id, known := kpGrantOf[code]
		if len(code) < kpMinCodeLen || !known {
			m.wrong()
			return r
		}
		r.releases = m.use(id)
		return r
	}
	return stepResult{}
}

// use acts on a known code; it returns the releases.
func (m *kpModel) use(id string) []int {
	ok := func(target int) []int {
		m.failures = 0
		if target == 0 {
			return nil
		}
		m.session[target] = id
		return []int{target}
	}
	switch id {
	case "dep":
		for _, s := range m.session {
			if s == "dep" {
				return nil // one use, one open door
			}
		}
		for _, n := range []int{2, 3} { // the free ones of size M and up, smallest first
			if !m.disabled[n] && m.session[n] == "" {
				return ok(n)
			}
		}
	case "pick", "recl":
		if m.usedUp[id] {
			m.wrong() // a used-up code is stale: it counts like a wrong code
			return nil
		}
		if m.session[1] == "" && !m.disabled[1] {
			m.usedUp[id] = true
			return ok(1)
		}
	case "door3":
		if m.session[3] == "" { // a session in progress is never replaced (issue 11)
			return ok(3)
		}
	case "svc":
		m.service, m.choice, m.entryAt = true, 0, m.now
		return ok(0)
	case "old", "soon":
		m.wrong() // a stale code (ended, or not yet valid) counts like a wrong code
	}
	return nil // not usable now (a door in use, none free): refused, not counted
}

func (m *kpModel) wrong() {
	m.failures++
	if m.lockouts > 0 && m.now.Sub(m.lockedTill) > kpDecay {
		m.lockouts = 0
	}
	if m.failures < kpAfter {
		return
	}
	m.failures = 0
	m.lockouts++
	wait := kpBase << (m.lockouts - 1)
	if m.lockouts > 8 || wait > kpMax {
		wait = kpMax
	}
	m.lockedTill = m.now.Add(wait)
}

func (m *kpModel) serviceKey(k byte) stepResult {
	m.entryAt = m.now
	r := stepResult{byService: true}
	switch {
	case k == '*':
		m.entry = ""
		if m.choice != 0 {
			m.choice = 0
		} else {
			m.service = false
		}
	case m.choice == 0:
		switch k {
		case '1', '2', '3':
			m.choice = k
		case '4':
			if m.selftest {
				break
			}
			for n := 1; n <= 3; n++ {
				if m.session[n] == "" {
					m.session[n] = "selftest"
					r.releases = append(r.releases, n)
				}
			}
			m.selftest = len(r.releases) > 0 // it waits for hal's report of each release
		}
	case k >= '0' && k <= '9':
		if len(m.entry) < 3 {
			m.entry += string(k)
		}
	case k == '#':
		n, err := strconv.Atoi(m.entry)
		m.entry = ""
		choice := m.choice
		m.choice = 0
		if err != nil || n < 1 || n > 3 {
			break
		}
		switch choice {
		case '1':
			if m.session[n] != "" {
				break // a session in progress is never replaced (issue 11)
			}
			m.session[n] = "svc"
			r.releases = []int{n}
		case '2':
			m.disabled[n] = true
		case '3':
			m.disabled[n] = false
		}
	}
	return r
}

// wait lets d pass; the housekeeping tick then ends an idle entry.
func (m *kpModel) wait(d time.Duration) {
	m.now = m.now.Add(d)
	if (m.entry != "" || m.service) && m.now.Sub(m.entryAt) > kpEntryIdle {
		m.entry, m.service, m.choice = "", false, 0
	}
}

// digitRun finds six digits in a row: a code, or part of one.
var digitRun = regexp.MustCompile(`[0-9]{6,}`)

var (
	kpMu  stdsync.Mutex
	kpCur *kpRig
)

func FuzzKeypad(f *testing.F) {
	for _, s := range kpSeeds() {
		f.Add(s)
	}
	f.Cleanup(func() {
		kpMu.Lock()
		defer kpMu.Unlock()
		if kpCur != nil {
			kpCur.close()
			kpCur = nil
		}
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		kpMu.Lock()
		defer kpMu.Unlock()
		if kpCur != nil && kpCur.runs >= kpRecycle {
			kpCur.close()
			kpCur = nil
		}
		if kpCur == nil {
			k, err := newKPRig()
			if err != nil {
				t.Fatal(err)
			}
			kpCur = k
		}
		k := kpCur
		k.runs++
		if err := k.reset(); err != nil {
			t.Fatal(err)
		}
		if len(in) > kpMaxSteps {
			in = in[:kpMaxSteps]
		}
		runKeypad(t, k, in)
	})
}

func runKeypad(t *testing.T, k *kpRig, in []byte) {
	m := &kpModel{now: t0, usedUp: map[string]bool{}}
	var typed strings.Builder // the steps so far, for the failure message
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("after %s\n(model: entry %q service %v/%q failures %d lockouts %d locked till +%v; sessions %q disabled %v)\n%s",
			typed.String(), m.entry, m.service, m.choice, m.failures, m.lockouts, m.lockedTill.Sub(t0), m.session[1:],
			m.disabled[1:], fmt.Sprintf(format, args...))
	}
	released := 0
	for _, b := range in {
		before := k.traceCount()
		var want stepResult
		var key byte
		if b >= 0xF0 {
			d := time.Duration(b&15+1) * 15 * time.Second
			k.clock.Advance(d)
			m.wait(d)
			fmt.Fprintf(&typed, " [+%v]", d)
		} else {
			key = kpKeys[b&15]
			want = m.key(key)
			typed.WriteByte(key)
		}
		got := k.step(t, key)

		rel := k.cab.Releases()
		newRel := rel[released:]
		released = len(rel)
		if fmt.Sprint(newRel) != fmt.Sprint(want.releases) {
			fail("releases %v, want %v", newRel, want.releases)
		}
		trs, raw := k.newTraces(before)
		if want.locked && len(trs) > 0 {
			fail("a key while the keypad is locked gave traces %v", trs)
		}
		for _, tr := range trs {
			if tr.Type != "lock_released" || want.byService {
				continue
			}
			if code := kpCodeOf[tr.GrantID]; code == "" || code != want.code {
				fail("lock_released for grant %q after the code %q was typed", tr.GrantID, want.code)
			}
		}
		if got.entry != m.entry || len(got.entry) > kpMaxCodeLen {
			fail("entry %q, want %q", got.entry, m.entry)
		}
		if got.service != m.service || (m.service && got.choice != m.choice) {
			fail("service menu %v/%q, want %v/%q", got.service, got.choice, m.service, m.choice)
		}
		if got.failures != m.failures || got.lockouts != m.lockouts || !got.lockedTill.Equal(m.lockedTill) {
			fail("failures %d, lockouts %d, locked till +%v; want %d, %d, +%v", got.failures, got.lockouts,
				got.lockedTill.Sub(t0), m.failures, m.lockouts, m.lockedTill.Sub(t0))
		}
		if d := k.cab.Display(); digitRun.MatchString(d[0] + " " + d[1]) {
			fail("the display shows digits: %q", d)
		}
		for _, p := range raw {
			if digitRun.MatchString(p) {
				fail("a trace holds a run of digits: %s", p)
			}
		}
	}
	if logs := k.log.Take(); digitRun.MatchString(logs) {
		t.Fatalf("after %s\nthe log holds a run of digits %q:\n%s", typed.String(), digitRun.FindString(logs), logs)
	}
	k.last = m
}

// kpIn encodes a seed: keys as they are typed, and "~h" (h a hex digit)
// for (h+1)*15 s passing.
func kpIn(s string) []byte {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '~' && i+1 < len(s) {
			i++
			out = append(out, 0xF0|byte(strings.IndexByte("0123456789abcdef", s[i])))
			continue
		}
		out = append(out, byte(strings.IndexByte(kpKeys, s[i])))
	}
	return out
}

func kpSeeds() [][]byte {
	var seeds [][]byte
	for _, s := range []string{
		codeDep + "#" + codeDep + "#",                          // a deposit opens 2, once
		codePick + "#" + codeRecl + "#",                        // pickup opens 1; the reclaim finds it in use
		"12" + codeDep + "#",                                   // digits before the code: a wrong code
		"12*" + codeDep + "#",                                  // cleared first: the code works
		codeDoor3 + "#" + codeDoor3 + "#" + codeDep + "#",      // service door 3 twice; the deposit gets 2
		codeOld + "#" + codeSoon + "#" + codeGone + "#",        // refused, refused, wrong
		"111#222222#333333#" + codeDep + "#~3" + codeDep + "#", // lockout: the code is dropped, then works
		"1#2#3#~3" + "4#5#6#~7" + "7#8#9#~f" + codePick + "#",  // lockouts double
		codeSvc + "#12#" + "4" + "*" + "*" + codeDep + "#",     // service: open 2, self-test, leave
		codeSvc + "#22#*" + codeDep + "#",                      // service: disable 2; the deposit gets 3
		codeSvc + "#~2" + "102#",                               // the menu times out: 1, 02, # open nothing
		"1234567890123456#",                                    // longer than MaxCodeLen
		codeDep + "~2#",                                        // the entry times out before '#'
		"AB" + codeDep + "CD#",
		"1#" + codePick + "#5#6#" + codeDep + "#", // a code that opens ends the run of wrong codes                                   // letters do nothing
	} {
		seeds = append(seeds, kpIn(s))
	}
	return seeds
}
