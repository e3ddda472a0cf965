package controller

// TestKeypadBruteForce (issue 7): an attacker stands at the keypad for
// simulated weeks and types random codes as fast as a human can, while the
// locker holds many live codes. Everything goes through the controller's
// real key path (hal key events → key → tryCode → SQLite → lockout
// persisted) on the fake cabinet of controller_test.go, with a fake clock:
// no real sleeping.
//
// The attacker types one code every bruteCodeEvery, keys 200–400 ms apart,
// and keeps typing through the lockouts. Every key of a code is sent while
// the keypad is open; while the display says "Keypad locked, Wait …" the
// attacker goes on typing, but only one code in five minutes (and every
// code from a few seconds before the displayed end) is sent: the others
// would only be swallowed, and sending them all would cost millions of
// events a week. A lockout shorter than displayed is still found by those
// sends. Once a day the attacker cuts the power, to try to reset the
// lockout.
//
// Asserted: the guesses checked in each simulated week (and in all) stay
// within what the lockout schedule allows, computed from the controller's
// options; each lockout lasts as the schedule says and nothing is checked
// before it ends; a door opens only for a typed code that is live, and the
// door of that code; the successes are within what the odds allow. It
// prints one TORTURE-ROW line for `make torture`.
//
//	go test -race -count=1 -run TestKeypadBruteForce -v ./controller   # 2 simulated weeks, 1 under -race
//	LOCKER_TORTURE=1       … 12 weeks; LOCKER_TORTURE_LONG=1 … 52 weeks
//	LOCKER_BRUTE_WEEKS=N   … N weeks; LOCKER_BRUTE_DIGITS=8 … 8-digit codes

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

const (
	bruteCodeEvery  = 3 * time.Second        // one code typed every 3 s
	bruteKeyGapMin  = 200 * time.Millisecond // keys 200–400 ms apart
	bruteKeyGapMax  = 400 * time.Millisecond // (drawn uniformly between)
	brutePickups    = 100                    // occupied compartments (M), a live pickup code each
	bruteDeposits   = 20                     // live deposit codes, for as many free compartments (S)
	bruteProbeEvery = 5 * time.Minute        // while the display says locked, one code is sent this often
	bruteMargin     = 5 * time.Second        // and every code from this long before the displayed end
	brutePowerCut   = 24 * time.Hour         // the attacker cuts the power this often
	bruteSeed       = 7
	bruteWeek       = 7 * 24 * time.Hour
	bruteTailP      = 1e-6 // successes less likely than this under the odds fail the test
)

// bruteOutcome is what one typed code did, as the display and the traces tell it.
type bruteOutcome int

const (
	bruteSwallowed bruteOutcome = iota // the keypad was locked: nothing checked
	bruteWrong                         // counted as a wrong code (maybe one that locked the keypad)
	bruteOpened                        // a door opened
	bruteRejected                      // a known code that cannot be used now
)

func (o bruteOutcome) String() string {
	return [...]string{"swallowed", "wrong", "opened", "rejected"}[o]
}

// bruteCode is a code the locker was given.
type bruteCode struct {
	grant       string
	action      string // pickup or deposit
	compartment int    // pickup: its compartment
	live        bool   // it opens a door now
}

type bruteTally struct{ checked, extra int } // extra: guesses the schedule does not charge (a success's run, a stale code)

type bruteRun struct {
	t      *testing.T
	r      *rig
	o      Options
	rng    *rand.Rand
	digits int
	space  float64
	start  time.Time
	codes  map[string]*bruteCode // every code issued, live or stale
	live   int
	rels   int // cabinet releases seen
	gaps   []time.Duration

	typed, sent, swallowed, checked, full, truncated  int
	lockouts, successes, stolen, staleHits, powerCuts int
	liveTyped                                         int // typed codes that were live codes then
	longest                                           time.Duration
	lockedUntil                                       time.Time // the end of the last lockout, from its trace
	expect                                            float64   // Σ live codes / code space over the full codes checked
	weeks                                             []bruteTally
}

func bruteEnv(t *testing.T) (weeks float64, digits int) {
	on := func(k string) bool { v := os.Getenv(k); return v != "" && v != "0" }
	weeks = 2
	if raceBuild() {
		weeks = 1 // SQLite (transpiled C) runs some 5 times slower under -race: keep `make test` short
	}
	switch {
	case on("LOCKER_TORTURE_LONG"):
		weeks = 52
	case on("LOCKER_TORTURE"):
		weeks = 12
	}
	if s := os.Getenv("LOCKER_BRUTE_WEEKS"); s != "" {
		w, err := strconv.ParseFloat(s, 64)
		if err != nil || w <= 0 || w > 1000 {
			t.Fatalf("LOCKER_BRUTE_WEEKS=%q: want a number of weeks, 0 < N ≤ 1000", s)
		}
		weeks = w
	}
	if s := os.Getenv("LOCKER_BRUTE_DIGITS"); s != "" {
		d, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("LOCKER_BRUTE_DIGITS=%q: want a number", s)
		}
		digits = d
	}
	return weeks, digits
}

func TestKeypadBruteForce(t *testing.T) {
	weeks, digits := bruteEnv(t)
	wall := time.Now()
	r := newRig(t, strings.Repeat("M ", brutePickups+1)+strings.Repeat("S ", bruteDeposits))
	o := r.c.opts
	if digits == 0 {
		digits = o.MinCodeLen // the codes the locker accepts, at their shortest: the attacker's best case
	}
	if digits < o.MinCodeLen || digits > o.MaxCodeLen || digits > 18 {
		t.Fatalf("code length %d: the keypad takes %d to %d digits", digits, o.MinCodeLen, o.MaxCodeLen)
	}
	b := &bruteRun{t: t, r: r, o: o, rng: rand.New(rand.NewPCG(bruteSeed, uint64(digits))), digits: digits,
		space: math.Pow10(digits), codes: map[string]*bruteCode{}}
	dur := time.Duration(weeks * float64(bruteWeek))
	b.setUp(dur)
	setUpTime := time.Since(wall)

	b.start = r.clock.Now()
	end := b.start.Add(dur)
	b.weeks = make([]bruteTally, int(math.Ceil(weeks)))
	var shownEnd time.Time // the lockout's end as the display tells it (a lower bound); zero while not locked
	nextProbe, nextCut := b.start, b.start.Add(brutePowerCut)
	for at := b.start; at.Before(end); {
		n, gaps := b.nextCode()
		code := b.format(n)
		b.typed++
		if c := b.codes[code]; c != nil && c.live {
			b.liveTyped++ // a right guess, if the keypad takes it
		}
		if !at.Before(nextCut) {
			b.powerCut(at)
			shownEnd = b.lockShown()
			nextCut = nextCut.Add(brutePowerCut)
		}
		typing := time.Duration(0)
		for _, g := range gaps {
			typing += g
		}
		if !shownEnd.IsZero() && at.Add(typing+bruteMargin).Before(shownEnd) && at.Before(nextProbe) {
			b.swallowed++ // typed on a locked keypad; not sent
			at = at.Add(bruteCodeEvery)
			continue
		}
		nextProbe = at.Add(bruteProbeEvery)
		shownEnd = b.deliver(at, code, gaps)
		next := at.Add(bruteCodeEvery)
		if now := r.clock.Now().Add(bruteKeyGapMin); next.Before(now) {
			next = now // a door opened, or a long code
		}
		at = next
	}
	elapsed := time.Since(wall)

	// The bounds, from the controller's options.
	perDay := o.LockoutAfter * int(24*time.Hour/o.LockoutMax) // at the cap, the steady state
	bound := bruteScheduleMax(o, dur)
	extra := o.LockoutAfter*b.successes + b.staleHits
	initial := brutePickups + bruteDeposits
	muMax := float64(bound+extra) * float64(initial) / b.space
	rate := func(n int, per float64) string {
		if per == 0 {
			return "-"
		}
		return strconv.FormatFloat(float64(n)/per, 'g', 3, 64)
	}
	t.Logf("keypad brute force: %s simulated (%s), %d-digit codes (space %.0f), %d live codes at the start (%d pickup, %d deposit), %d stale",
		bruteCount(weeks, "week"), dur, digits, b.space, initial, brutePickups, bruteDeposits, len(b.codes)-initial)
	t.Logf("  typed %d guesses (one per %s), %d sent through the key path, %d more typed on a locked keypad and not sent",
		b.typed, bruteCodeEvery, b.sent, b.swallowed)
	t.Logf("  checked %d (%d full codes, %d entries cut by a lockout's end), %.1f a day; the lockout schedule allows %d in all, %d a day at the cap of %s",
		b.checked, b.full, b.truncated, float64(b.checked)/dur.Hours()*24, bound+extra, perDay, o.LockoutMax)
	t.Logf("  lockouts %d, the longest %s; power cuts %d; stale codes hit %d", b.lockouts, b.longest, b.powerCuts, b.staleHits)
	t.Logf("  successes %d (%s taken): %s per checked guess, %s per week; expected %.4g (checked × live / space), at most %.4g for the schedule's guesses; P(≥1) = %.3g",
		b.successes, bruteCount(float64(b.stolen), "parcel"), rate(b.successes, float64(b.checked)), rate(b.successes, weeks), b.expect, muMax, 1-math.Exp(-b.expect))
	t.Logf("  a live code was typed %d times (%.4g expected for all the guesses typed): %d opened, the others hit a locked keypad",
		b.liveTyped, float64(b.typed)*float64(initial)/b.space, b.successes)
	t.Logf("  wall time %s (set-up %s, attack %s, %.1f µs a typed guess, %.2f ms a checked one)",
		elapsed.Round(time.Millisecond), setUpTime.Round(time.Millisecond), (elapsed - setUpTime).Round(time.Millisecond),
		float64((elapsed-setUpTime).Microseconds())/float64(b.typed), float64((elapsed-setUpTime).Milliseconds())/float64(max(b.checked, 1)))

	row, err := json.Marshal(struct {
		Torture string `json:"torture"`
		Tried   int    `json:"tried"`
		Unit    string `json:"unit"`
		Lost    int    `json:"lost"`
		Detail  string `json:"detail"`
		// A guessed code opening a door is a matter of odds: the test
		// fails only on more successes than the odds allow.
		ByOdds bool `json:"by_odds"`
	}{"keypad brute force", b.typed, "guesses", b.successes, fmt.Sprintf(
		"%s simulated against %d live %d-digit codes: %d guesses checked (%.0f a day), %d lockouts; %d opened a door (%s per guess, %s per week), %.3g expected by the odds",
		bruteCount(weeks, "week"), initial, digits, b.checked, float64(b.checked)/dur.Hours()*24, b.lockouts, b.successes,
		rate(b.successes, float64(b.checked)), rate(b.successes, weeks), b.expect), true})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("TORTURE-ROW %s\n", row)

	// No lock was released but for the successes (set-up's are counted).
	if n := len(r.cab.Releases()); n != b.rels {
		t.Errorf("%d locks released, %d of them seen after a guess or the set-up", n, b.rels)
	}
	// The guesses checked stay within the schedule, each week and in all.
	for i, w := range b.weeks {
		length := min(bruteWeek, dur-time.Duration(i)*bruteWeek)
		if allowed := bruteScheduleMax(o, length) + w.extra; w.checked > allowed {
			t.Errorf("week %d: %d guesses checked, the lockout schedule allows %d", i+1, w.checked, allowed)
		}
	}
	if b.checked > bound+extra {
		t.Errorf("%d guesses checked in %s, the lockout schedule allows %d", b.checked, dur, bound+extra)
	}
	// The attacker does get the schedule's guesses: a test too slow to
	// reach them proves nothing (and a lockout longer than the schedule
	// shuts out people with a real code).
	if b.checked < bound*9/10 {
		t.Errorf("only %d guesses checked in %s; the schedule allows %d: the attack or the lockout is off", b.checked, dur, bound)
	}
	// The successes are within the odds: for the guesses checked, and for
	// the most the schedule lets through.
	if p := brutePoissonTail(b.expect, b.successes); p < bruteTailP {
		t.Errorf("%d successes where %.4g are expected: P = %.3g", b.successes, b.expect, p)
	}
	if p := brutePoissonTail(muMax, b.successes); p < bruteTailP {
		t.Errorf("%d successes where the schedule allows %.4g: P = %.3g", b.successes, muMax, p)
	}
}

// setUp gives the locker its codes: brutePickups parcels in their
// compartments, each with a pickup code the central sent, and
// bruteDeposits deposit codes for the free S compartments. The parcels
// are put in the database as the deposits left them (doing them at the
// keypad costs seconds under -race), with their deposit codes used up:
// stale codes, as every locker has. One more parcel is then taken with its
// code at the keypad, to show that the set-up's codes open what they
// should.
func (b *bruteRun) setUp(dur time.Duration) {
	r := b.r
	now := r.clock.Now()
	until := now.Add(dur + 2*bruteWeek)
	parcels := brutePickups + 1
	var ops []wire.GrantOp
	depCodes := make([]string, parcels+1)
	var check string // the pickup code of the last parcel
	for n := 1; n <= parcels; n++ {
		depCodes[n] = b.issue(&bruteCode{grant: fmt.Sprintf("d%d", n), action: "deposit"})
		check = b.issue(&bruteCode{grant: fmt.Sprintf("d%dp", n), action: "pickup", compartment: n, live: true})
		ops = append(ops, wire.GrantOp{Op: "put", GrantID: fmt.Sprintf("d%dp", n), Version: 1, Action: "pickup", Compartment: n,
			ParcelID: fmt.Sprintf("JT%04d", n), Holder: "13499996666", CodeHash: hash(check), ValidUntil: ptr(until)})
	}
	for i := 1; i <= bruteDeposits; i++ {
		code := b.issue(&bruteCode{grant: fmt.Sprintf("s%d", i), action: "deposit", live: true})
		ops = append(ops, wire.GrantOp{Op: "put", GrantID: fmt.Sprintf("s%d", i), Version: 1, Action: "deposit", Size: "S",
			ParcelID: fmt.Sprintf("JS%04d", i), Holder: "13488888888", CodeHash: hash(code), ValidUntil: ptr(until)})
	}
	r.expectTypes("started")
	ack := r.apply(&wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Ops: ops})
	if ack.Applied != len(ops) || len(ack.Rejected) != 0 {
		b.t.Fatalf("grants: %+v", ack)
	}
	err := r.st.Update(r.ctx, func(tx *store.Tx) error {
		for n := 1; n <= parcels; n++ {
			sc, err := tx.Compartment(n)
			if err != nil {
				return err
			}
			sc.State, sc.ParcelID, sc.ParcelPresent = "occupied", fmt.Sprintf("JT%04d", n), true
			if err := tx.PutCompartment(sc); err != nil {
				return err
			}
			if err := tx.PutGrant(store.Grant{ID: fmt.Sprintf("d%d", n), Version: 1, Action: "deposit", Compartment: n,
				ParcelID: sc.ParcelID, Actor: "134****8888", CodeHash: hash(depCodes[n]),
				ValidFrom: now.Add(-time.Hour), ValidUntil: until, UsesLeft: 0}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.t.Fatal(err)
	}
	r.cab.mu.Lock()
	for n := 1; n <= parcels; n++ {
		r.cab.parcel[n] = true
	}
	r.cab.mu.Unlock()
	r.restart() // the controller starts on that state, and finds the sensors agree
	r.expectTypes("started")

	r.keys(check + "#")
	if rel := r.cab.Releases(); len(rel) != 1 || rel[0] != parcels {
		b.t.Fatalf("the pickup code of compartment %d: releases %v", parcels, rel)
	}
	b.takeParcel(b.codes[check], parcels)

	rep, err := r.c.Compartments(r.ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	occupied := 0
	for _, c := range rep.Compartments {
		if c.State == "occupied" {
			occupied++
		}
	}
	if occupied != brutePickups || b.live != brutePickups+bruteDeposits {
		b.t.Fatalf("after the set-up: %d occupied, %d live codes", occupied, b.live)
	}
	b.stolen = 0 // that one was its owner's
	b.rels = len(r.cab.Releases())
}

// issue draws a new code, unique among those issued, for c.
func (b *bruteRun) issue(c *bruteCode) string {
	for {
		code := b.randomCode()
		if _, dup := b.codes[code]; !dup {
			b.codes[code] = c
			if c.live {
				b.live++
			}
			return code
		}
	}
}

func (b *bruteRun) randomCode() string { return b.format(b.rng.Int64N(int64(b.space))) }

// format writes v with b.digits digits, leading zeros included.
func (b *bruteRun) format(v int64) string {
	buf := make([]byte, b.digits)
	for i := len(buf) - 1; i >= 0; i-- {
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return string(buf)
}

// nextCode is the attacker's next code and the gaps before each of its
// keys after the first (the last gap is before '#'), valid until the next
// call. It is drawn whether or not it is sent, so that the sequence does
// not depend on the lockout.
func (b *bruteRun) nextCode() (int64, []time.Duration) {
	code := b.rng.Int64N(int64(b.space))
	if len(b.gaps) != b.digits {
		b.gaps = make([]time.Duration, b.digits)
	}
	for i := range b.gaps {
		b.gaps[i] = bruteKeyGapMin + time.Duration(b.rng.Int64N(int64(bruteKeyGapMax-bruteKeyGapMin)+1))
	}
	return code, b.gaps
}

func (b *bruteRun) setClock(at time.Time) {
	c := b.r.clock
	if now := c.Now(); at.Before(now) {
		b.t.Fatalf("the clock would go back from %s to %s", now, at)
	}
	c.Set(at)
}

// press sends one key and waits until the controller has handled it, so
// that it reads the clock before the test moves it on.
func (b *bruteRun) press(k byte) {
	select {
	case b.r.cab.events <- hal.Event{Kind: hal.KeyPressed, Key: k}:
	case <-time.After(5 * time.Second):
		b.t.Fatal("the controller does not take keys")
	}
	if err := b.r.c.do(b.r.ctx, func() {}); err != nil {
		b.t.Fatal(err)
	}
}

// traces returns the traces recorded since the last call, by type.
func (b *bruteRun) traces() (map[string]int, []wire.Trace) {
	r := b.r
	r.mu.Lock()
	trs := r.traces
	r.traces = nil
	r.mu.Unlock()
	n := map[string]int{}
	for _, tr := range trs {
		n[tr.Type]++
	}
	return n, trs
}

// lockShown is the end of the lockout that the display shows, at the
// earliest; zero if it shows none.
func (b *bruteRun) lockShown() time.Time {
	d := b.r.cab.Display()
	if d[0] != "Keypad locked" {
		return time.Time{}
	}
	left, err := time.ParseDuration(strings.ReplaceAll(strings.TrimPrefix(d[1], "Wait "), " ", ""))
	if err != nil {
		b.t.Fatalf("locked display %q: %v", d, err)
	}
	return b.r.clock.Now().Add(left - time.Second) // shown rounded to the second, or the minute cut off
}

// powerCut cuts the power and starts the controller again on the same
// database, as an attacker at the breaker would.
func (b *bruteRun) powerCut(at time.Time) {
	b.setClock(at)
	b.r.restart()
	b.powerCuts++
	if n, trs := b.traces(); n["started"] != 1 || len(trs) != 1 {
		b.t.Fatalf("power cut %d: traces %v", b.powerCuts, n)
	}
}

var bruteLockoutRE = regexp.MustCompile(`^Keypad locked for (\S+) after`)

// deliver types code at the keypad from at and checks what it did. It
// returns the end of the lockout the display shows after it, if any.
func (b *bruteRun) deliver(at time.Time, code string, gaps []time.Duration) time.Time {
	t, r := b.t, b.r
	b.sent++
	b.setClock(at)
	b.press(code[0])
	// The first key decides whether the whole code goes in: a lockout
	// starts only at a '#'.
	accepted := strings.HasPrefix(r.cab.Display()[0], "Code:")
	if accepted && at.Before(b.lockedUntil) {
		t.Fatalf("a key was taken at %s, during the lockout that ends at %s", at, b.lockedUntil)
	}
	for i := 1; i < len(code); i++ {
		r.clock.Advance(gaps[i-1])
		b.press(code[i])
	}
	r.clock.Advance(gaps[len(code)-1])
	b.press('#')
	hashAt := r.clock.Now()
	d := r.cab.Display()
	n, trs := b.traces()
	rel := r.cab.Releases()
	opened := rel[b.rels:]
	b.rels = len(rel)
	known := b.codes[code]

	var got bruteOutcome
	switch {
	case strings.HasPrefix(d[0], "Door ") && strings.HasSuffix(d[0], " open"):
		got = bruteOpened
	case d[0] == "Wrong code":
		got = bruteWrong
	case d[0] == "Keypad locked" && n["keypad_lockout"] == 1:
		got = bruteWrong
	case d[0] == "Keypad locked" && n["keypad_lockout"] == 0:
		got = bruteSwallowed
	case d[0] == "Code not valid":
		got = bruteRejected
	default:
		t.Fatalf("after a code at %s: display %q, traces %v", hashAt, d, n)
	}
	if got != bruteWrong && n["keypad_lockout"] != 0 || n["keypad_lockout"] > 1 {
		t.Fatalf("a %s code recorded %d lockouts", got, n["keypad_lockout"])
	}
	// No door opens but for a live code, and a live code typed in full on
	// an open keypad opens its door.
	if got == bruteOpened {
		if !accepted || known == nil || !known.live {
			t.Fatalf("a door opened for a code that is not live (typed in full: %v, known: %+v): releases %v", accepted, known, opened)
		}
		if len(opened) != 1 || n["lock_released"] != 1 {
			t.Fatalf("a code released locks %v, with %d lock_released traces", opened, n["lock_released"])
		}
	} else if len(opened) != 0 || n["lock_released"] != 0 {
		t.Fatalf("a %s code released locks %v", got, opened)
	}
	if accepted {
		want := bruteWrong
		switch {
		case known != nil && known.live:
			want = bruteOpened
		case known != nil:
			want = bruteRejected
		}
		if got != want {
			t.Fatalf("a code typed in full on an open keypad (known: %+v) was %s, want %s; display %q", known, got, want, d)
		}
	} else if got != bruteSwallowed && got != bruteWrong {
		t.Fatalf("a code whose first key the lockout took was %s", got)
	}
	if got == bruteSwallowed {
		return b.lockShown()
	}

	// A guess was checked.
	if hashAt.Before(b.lockedUntil) {
		t.Fatalf("a guess was checked at %s, during the lockout that ends at %s", hashAt, b.lockedUntil)
	}
	b.checked++
	week := &b.weeks[min(int(hashAt.Sub(b.start)/bruteWeek), len(b.weeks)-1)]
	week.checked++
	if accepted {
		b.full++
		b.expect += float64(b.live) / b.space
	} else {
		b.truncated++ // the lockout ended mid-code: the rest went in as a short, wrong entry
	}
	switch got {
	case bruteWrong:
		if n["keypad_lockout"] == 1 {
			b.lockout(hashAt, trs)
		}
	case bruteRejected:
		b.staleHits++
		week.extra++ // neither counted as wrong nor a reset: a free guess
	case bruteOpened:
		b.successes++
		week.extra += b.o.LockoutAfter // the run of wrong codes it ended was not charged to a lockout
		b.takeParcel(known, opened[0])
	}
	return b.lockShown()
}

// lockout checks a lockout's length against the schedule, from the
// controller's options: LockoutBase doubled with each lockout, up to
// LockoutMax. The attacker never leaves the keypad alone for LockoutDecay.
func (b *bruteRun) lockout(at time.Time, trs []wire.Trace) {
	b.lockouts++
	var d time.Duration
	for _, tr := range trs {
		if m := bruteLockoutRE.FindStringSubmatch(tr.Content); tr.Type == "keypad_lockout" && m != nil {
			var err error
			if d, err = time.ParseDuration(m[1]); err != nil {
				b.t.Fatalf("keypad_lockout %q: %v", tr.Content, err)
			}
		}
	}
	want := b.o.LockoutBase
	for i := 1; i < b.lockouts && want < b.o.LockoutMax; i++ {
		want *= 2
	}
	want = min(want, b.o.LockoutMax)
	if d != want {
		b.t.Fatalf("lockout %d at %s lasts %s, the schedule says %s", b.lockouts, at, d, want)
	}
	b.lockedUntil = at.Add(d)
	b.longest = max(b.longest, d)
}

// takeParcel is the attacker using a door that a guess opened: opening it,
// taking the parcel if there is one, closing it.
func (b *bruteRun) takeParcel(c *bruteCode, n int) {
	r := b.r
	switch {
	case c.action == "pickup" && n != c.compartment:
		b.t.Fatalf("pickup code of compartment %d opened %d", c.compartment, n)
	case c.action == "deposit" && n <= brutePickups+1:
		b.t.Fatalf("a deposit code for an S compartment opened %d", n)
	}
	r.clock.Advance(2 * time.Second)
	r.door(n, true)
	r.clock.Advance(3 * time.Second)
	want := "deposit_cancelled"
	if c.action == "pickup" {
		r.parcel(n, false)
		want = "picked_up"
		c.live = false // used up: a stale code from now on
		b.live--
		b.stolen++
	}
	r.door(n, false)
	if tn, _ := b.traces(); tn[want] != 1 {
		b.t.Fatalf("the attacker's use of door %d: traces %v, want %s", n, tn, want)
	}
}

// bruteScheduleMax is the most wrong codes the lockout schedule lets
// through in d, for an attacker who types infinitely fast starting on a
// fresh keypad (the worst case for any window: a keypad already locked, or
// already at a longer lockout, lets fewer through): LockoutAfter at once,
// and LockoutAfter more as each lockout ends.
func bruteScheduleMax(o Options, d time.Duration) int {
	n, spent, wait := 0, time.Duration(0), o.LockoutBase
	for {
		w := min(wait, o.LockoutMax)
		if w <= 0 || spent+w > d {
			break
		}
		spent += w
		n++
		if wait < o.LockoutMax {
			wait *= 2
		}
	}
	return o.LockoutAfter * (n + 1)
}

// bruteCount is "1 week", "2 weeks", "1.5 weeks".
func bruteCount(n float64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.FormatFloat(n, 'g', 3, 64) + " " + unit + "s"
}

// brutePoissonTail is P(X ≥ k) for X Poisson-distributed with mean mu.
func brutePoissonTail(mu float64, k int) float64 {
	if k <= 0 {
		return 1
	}
	if mu <= 0 {
		return 0
	}
	pmf := func(i int) float64 {
		lg, _ := math.Lgamma(float64(i) + 1)
		return math.Exp(-mu + float64(i)*math.Log(mu) - lg)
	}
	if float64(k) <= mu { // 1 − P(X < k): no more than k terms
		below := 0.0
		for i := range k {
			below += pmf(i)
		}
		return max(1-below, 0)
	}
	sum := 0.0 // the terms fall from k on
	for i := k; ; i++ {
		p := pmf(i)
		sum += p
		if p < sum*1e-12 {
			return min(sum, 1)
		}
	}
}
