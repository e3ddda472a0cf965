package controller

// The property test of issue 4: random sequences of grants, keys, doors,
// parcels, clock, lock faults, power cuts and commands, run against the
// controller on the fake cabinet of controller_test.go, with the
// invariants checked after every step (every key press is a step):
//
//   - a lock is released (fakeCabinet.Releases) only with its
//     `lock_released` trace, and only for a code of a grant in force (not
//     revoked, not transferred away, started, not ended, a use left, the
//     keypad not locked), a service menu entered with a service code, a
//     fresh command id, or a deposit moving on after a lock fault; never
//     for a wrong, revoked, expired, used-up or old code;
//   - every compartment is in exactly one of the protocol's states, and
//     the stored facts agree with it (a parcel id exactly when occupied or
//     expired, a fault reason exactly when fault);
//   - the outbox seq is gapless, across power cuts;
//   - no grant is used more than its uses (per version of the grant);
//   - five wrong codes in a row lock the keypad, exactly then, for the
//     doubling wait; while it is locked no key opens anything.
//
//	go test -run 'TestControllerProperties' ./controller/
//	go test -fuzz FuzzController ./controller/ -fuzztime 10s

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/clocktest"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

const propSizes = "S S M M L XL"

// pgrant is the model's view of one grant: what the central asked for and
// what the traces say happened since its last put.
type pgrant struct {
	id, action  string
	version     int64 // the highest version the locker holds (put or revoke)
	exists      bool  // a put is in force in the locker (maybe used up, maybe ended)
	revoked     bool
	code        string
	oldCodes    []string
	compartment int
	size        string
	parcel      string
	from, until time.Time
	uses        int // -1: unlimited
	pickup      *pspec
	parent      string // a nested pickup's deposit grant

	// Since the last applied put:
	deposited int  // deposit: `deposited` traces
	inUse     int  // pickup, reclaim: uses taken at release and not given back
	ended     bool // pickup, reclaim: picked_up or reclaimed
}

type pspec struct {
	id, code string
	until    time.Time
	uses     int
}

type psess struct {
	grant, action string
	opened        bool
}

// prop is one random run.
type prop struct {
	t   *testing.T
	r   *rig
	src []byte
	pos int

	g       map[string]*pgrant
	ids     []string
	nextID  int
	codeSeq int
	cmds    []string
	nextCmd int

	// The keypad, as the controller should run it.
	entry      string
	entryAt    time.Time
	service    string // the service grant whose menu is open
	choice     byte
	failures   int
	lockouts   int
	lockedTill time.Time

	// The cabinet and the sessions, from the traces.
	latch map[int]bool // a release not yet followed by the door opening
	sess  map[int]*psess

	codes map[string]string // code hash → code, for the hashes the test made

	seenTraces, seenReleases int
	lastSeq                  int64
	steps                    []string
}

// byte returns the next byte of the sequence (0 once it is used up).
func (p *prop) byte() byte {
	if p.pos >= len(p.src) {
		return 0
	}
	b := p.src[p.pos]
	p.pos++
	return b
}

func (p *prop) intn(n int) int {
	if n <= 0 {
		return 0
	}
	return int(p.byte()) % n
}

func (p *prop) fail(format string, args ...any) {
	p.t.Helper()
	var b strings.Builder
	steps := p.steps
	if len(steps) > 60 {
		fmt.Fprintf(&b, "  … %d earlier steps\n", len(steps)-60)
		steps = steps[len(steps)-60:]
	}
	for _, s := range steps {
		b.WriteString("  " + s + "\n")
	}
	p.r.mu.Lock()
	trs := p.r.traces
	if len(trs) > 40 {
		trs = trs[len(trs)-40:]
	}
	for _, tr := range trs {
		fmt.Fprintf(&b, "    trace %d %s c%d %s %s\n", tr.Seq, tr.Type, tr.Compartment, tr.GrantID, tr.Reason)
	}
	p.r.mu.Unlock()
	p.t.Fatalf("%s\nlast steps and traces:\n%s", fmt.Sprintf(format, args...), b.String())
}

func (p *prop) logf(format string, args ...any) {
	p.steps = append(p.steps, fmt.Sprintf("%s: ", p.r.clock.Now().Sub(t0))+fmt.Sprintf(format, args...))
}

func (p *prop) newCode() string {
	p.codeSeq++
	// 6 to 9 digits, unique, never a prefix problem: the typed entry is
	// always cleared with `*` first when the model wants a clean entry.
	return fmt.Sprintf("%d%05d", 1+p.intn(9)*(1+p.codeSeq%3), p.codeSeq)
}

func (p *prop) grant(id string) *pgrant {
	g := p.g[id]
	if g == nil {
		g = &pgrant{id: id}
		p.g[id] = g
		p.ids = append(p.ids, id)
	}
	return g
}

// pickGrant returns a random grant for which ok holds, or nil.
func (p *prop) pickGrant(ok func(*pgrant) bool) *pgrant {
	var gs []*pgrant
	for _, id := range p.ids {
		if g := p.g[id]; ok(g) {
			gs = append(gs, g)
		}
	}
	if len(gs) == 0 {
		return nil
	}
	return gs[p.intn(len(gs))]
}

// staleCode says whether the code typed in ctx belongs only to grants that
// are revoked, ended, used up or not yet valid (the controller's usable).
func (p *prop) staleCode(ctx stepCtx) bool {
	stale := false
	for _, id := range p.ids {
		g := p.g[id]
		if g.code != ctx.code || !g.exists || g.revoked {
			continue
		}
		if p.inForce(g, ctx.now) {
			return false
		}
		stale = true
	}
	return stale
}

// inForce says whether g may open a door now (the controller's usable, on
// the model's counts).
func (p *prop) inForce(g *pgrant, now time.Time) bool {
	if !g.exists || g.revoked || now.Before(g.from) || !now.Before(g.until) {
		return false
	}
	switch g.action {
	case "deposit":
		return g.uses < 0 || g.deposited < g.uses
	case "pickup", "reclaim":
		return !g.ended && (g.uses < 0 || g.inUse < g.uses)
	}
	return true
}

// propRig is newRig with its database in memory-backed /dev/shm where
// there is one: the run is dominated by fsync otherwise.
func propRig(t *testing.T) *rig {
	dir := t.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "locker-prop-"); err == nil {
			dir = d
			t.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	r := &rig{t: t, path: filepath.Join(dir, "locker.db"), cab: newFakeCabinet(propSizes), clock: clocktest.New(t0)}
	r.start()
	return r
}

func runProperty(t *testing.T, src []byte) {
	r := propRig(t)
	p := &prop{t: t, r: r, src: src, g: map[string]*pgrant{}, codes: map[string]string{}, latch: map[int]bool{}, sess: map[int]*psess{}}
	p.check(stepCtx{kind: "start"})
	for steps := 0; p.pos < len(p.src) && steps < 300; steps++ {
		p.step()
	}
	if testing.Verbose() {
		types := map[string]int{}
		r.mu.Lock()
		for _, tr := range r.traces {
			types[tr.Type]++
		}
		r.mu.Unlock()
		t.Logf("%d actions, %d releases, traces %v", len(p.steps), len(r.cab.Releases()), types)
	}
}

// stepCtx says which releases a step may cause.
type stepCtx struct {
	kind    string
	code    string // a '#' that ends a code entry: the code
	n       int    // service menu or command: the compartment
	grant   string // service menu: its grant; command: its id
	movesOn string // a lock fault (or time-out) of this deposit grant's session
	before  []store.Compartment
	now     time.Time
	locked  bool
	wrong   bool // the model says this '#' is a wrong code
}

func (p *prop) step() {
	r := p.r
	now := r.clock.Now()
	switch k := p.intn(24); k {
	case 0, 1, 2:
		p.putDeposit(now)
	case 3:
		p.revoke()
	case 4:
		p.transfer(now)
	case 5:
		if p.intn(3) == 0 {
			p.snapshotGrants(now)
		} else {
			p.putOther(now)
		}
	case 6, 7, 8, 9:
		// The right code of a grant (whatever its state), mostly after a `*`.
		p.typeCode(now)
	case 10:
		// An old, revoked or wrong code; or the start of a code.
		switch p.intn(5) {
		case 0, 1:
			if g := p.pickGrant(func(g *pgrant) bool { return len(g.oldCodes) > 0 || g.revoked }); g != nil {
				code := g.code
				if len(g.oldCodes) > 0 {
					code = g.oldCodes[p.intn(len(g.oldCodes))]
				}
				p.keys("*" + code + "#")
				return
			}
			fallthrough
		case 2:
			p.keys(fmt.Sprintf("*%d#", 100000+p.intn(250)*3571))
		case 3:
			p.keys(strings.Repeat("7", 1+p.intn(5)) + "#")
		case 4:
			if g := p.pickGrant(func(g *pgrant) bool { return g.code != "" }); g != nil {
				p.keys(g.code[:1+p.intn(len(g.code)-1)])
			}
		}
	case 11:
		if p.service != "" || p.intn(2) == 0 {
			p.serviceMenu()
		} else {
			p.keys("*")
		}
	case 12, 13, 14, 15, 16:
		p.doorStep()
	case 17:
		p.parcelStep()
	case 18:
		d := []time.Duration{time.Second, 10 * time.Second, 31 * time.Second, 2 * time.Minute, 20 * time.Minute,
			3 * time.Hour, 25 * time.Hour, 80 * time.Hour}[p.intn(8)]
		r.clock.Advance(d)
		p.logf("clock +%v, tick", d)
		p.serviceIdle()
		ctx := p.ctx("tick")
		r.tick() // a release found stuck gives the use back and opens nothing
		p.check(ctx)
	case 19:
		p.lockReport()
	case 20:
		p.logf("power cut and restart")
		p.entry, p.service, p.choice = "", "", 0
		ctx := p.ctx("restart")
		r.restart()
		p.check(ctx)
	case 21, 22:
		p.command()
	case 23:
		p.keys("*")
	}
}

// typeCode types the right code of a grant, mostly one in force, mostly
// after a `*`.
func (p *prop) typeCode(now time.Time) {
	var g *pgrant
	if p.intn(3) > 0 {
		g = p.pickGrant(func(g *pgrant) bool { return g.action != "service" && p.inForce(g, now) })
	}
	if g == nil {
		g = p.pickGrant(func(g *pgrant) bool { return g.code != "" && (g.exists || g.parent != "") })
	}
	if g == nil {
		p.putDeposit(now)
		return
	}
	if p.intn(4) > 0 {
		p.keys("*")
	}
	p.keys(g.code + "#")
}

func (p *prop) ctx(kind string) stepCtx {
	ctx := stepCtx{kind: kind, now: p.r.clock.Now()}
	err := p.r.st.View(p.r.ctx, func(tx *store.Tx) error {
		var err error
		ctx.before, err = tx.Compartments()
		return err
	})
	if err != nil {
		p.fail("reading compartments: %v", err)
	}
	return ctx
}

// serviceIdle ends the model's entry and service menu once they have been
// idle for the entry time-out.
func (p *prop) serviceIdle() {
	now := p.r.clock.Now()
	if now.Sub(p.entryAt) > 30*time.Second {
		p.entry = ""
		p.service, p.choice = "", 0
	}
}

// keys presses keys one at a time; each is a step.
func (p *prop) keys(s string) {
	for i := 0; i < len(s); i++ {
		p.key(s[i])
	}
}

func (p *prop) key(k byte) {
	now := p.r.clock.Now()
	ctx := p.ctx("key " + string(k))
	p.logf("key %c", k)
	if now.Before(p.lockedTill) {
		ctx.locked = true
		p.entry = ""
		p.r.keys(string(k))
		p.check(ctx)
		return
	}
	if p.service != "" {
		p.entryAt = now
		switch {
		case k == '*':
			p.entry = ""
			if p.choice != 0 {
				p.choice = 0
			} else {
				p.service = ""
			}
		case p.choice == 0:
			switch {
			case k >= '1' && k <= '3':
				p.choice = k
			case k == '4':
				ctx.kind = "self-test" // every closed door without a session is released
			}
		case k >= '0' && k <= '9' && len(p.entry) < 3:
			p.entry += string(k)
		case k == '#':
			var n int
			fmt.Sscan(p.entry, &n)
			if p.choice == '1' && n >= 1 && n <= len(p.r.cab.comps) {
				ctx.kind, ctx.n, ctx.grant = "service open", n, p.service
			}
			p.entry, p.choice = "", 0
		}
		p.r.keys(string(k))
		p.check(ctx)
		return
	}
	switch {
	case k >= '0' && k <= '9':
		if len(p.entry) < 12 {
			p.entry += string(k)
		}
		p.entryAt = now
	case k == '*':
		p.entry = ""
	case k == '#' && p.entry != "":
		code := p.entry
		p.entry = ""
		ctx.kind, ctx.code = "code", code
		ctx.wrong = len(code) < 6 || p.pickGrant(func(g *pgrant) bool { return g.exists && !g.revoked && g.code == code }) == nil
	}
	p.r.keys(string(k))
	p.check(ctx)
}

// serviceMenu enters the service menu with a service code (putting a
// service grant first if there is none), or picks a menu action.
func (p *prop) serviceMenu() {
	if p.service == "" {
		g := p.pickGrant(func(g *pgrant) bool { return g.action == "service" && g.compartment == 0 && g.exists && !g.revoked })
		if g == nil {
			p.putService(p.r.clock.Now(), 0)
			return
		}
		p.keys("*" + g.code + "#")
		return
	}
	n := 1 + p.intn(len(p.r.cab.comps)+1) // sometimes a compartment that does not exist
	switch p.intn(4) {
	case 0, 1:
		p.keys(fmt.Sprintf("1%02d#", n))
	case 2:
		p.keys(fmt.Sprintf("%c%d#", '2'+p.intn(2), n))
	case 3:
		p.keys("*")
	}
}

func (p *prop) apply(b *wire.GrantsBody) wire.GrantsAck {
	ack, err := p.r.c.ApplyGrants(p.r.ctx, b)
	if err != nil {
		p.fail("ApplyGrants: %v", err)
	}
	rejected := map[string]bool{}
	for _, rj := range ack.Rejected {
		rejected[rj.GrantID] = true
	}
	now := p.r.clock.Now()
	named := map[string]bool{}
	for _, op := range b.Ops {
		named[op.GrantID] = true
		if op.Pickup != nil {
			named[op.Pickup.GrantID] = true
		}
		g := p.grant(op.GrantID)
		if op.Version <= g.version || rejected[op.GrantID] {
			continue
		}
		g.version = op.Version
		if op.Op == "revoke" {
			g.revoked, g.exists = true, false
			continue
		}
		if g.code != "" && g.code != p.codeOf(op) {
			g.oldCodes = append(g.oldCodes, g.code)
		}
		g.exists, g.revoked = true, false
		g.action, g.code, g.compartment, g.size, g.parcel = op.Action, p.codeOf(op), op.Compartment, op.Size, op.ParcelID
		g.from, g.until, g.uses = now, *op.ValidUntil, 1
		if op.ValidFrom != nil {
			g.from = *op.ValidFrom
		}
		if op.Uses != nil {
			g.uses = *op.Uses
		}
		if op.Action == "service" && op.Uses == nil {
			g.uses = -1
		}
		g.deposited, g.inUse, g.ended = 0, 0, false
		g.pickup = nil
		if op.Pickup != nil {
			sp := &pspec{id: op.Pickup.GrantID, code: p.codes[op.Pickup.CodeHash], until: *op.Pickup.ValidUntil, uses: 1}
			if op.Pickup.Uses != nil {
				sp.uses = *op.Pickup.Uses
			}
			g.pickup = sp
			pg := p.grant(sp.id)
			pg.parent = g.id
			if pg.code != sp.code && !pg.exists {
				pg.code = sp.code
			}
		}
	}
	if b.Snapshot {
		for _, id := range p.ids {
			if g := p.g[id]; g.exists && !named[id] {
				g.revoked, g.exists = true, false
			}
		}
	}
	return ack
}

func (p *prop) codeOf(op wire.GrantOp) string { return p.codes[op.CodeHash] }

// propHash hashes a code the test made, and remembers it.
func (p *prop) propHash(code string) string {
	h := hash(code)
	p.codes[h] = code
	return h
}

func (p *prop) body(ops ...wire.GrantOp) *wire.GrantsBody {
	now := p.r.clock.Now()
	return &wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: nextIssued(now), ExpiresAt: now.Add(time.Hour), Ops: ops}
}

func (p *prop) putDeposit(now time.Time) {
	p.nextID++
	id := fmt.Sprintf("d%d", p.nextID)
	until := now.Add([]time.Duration{time.Hour, 24 * time.Hour, 3 * 24 * time.Hour, 5 * time.Minute}[p.intn(4)])
	puntil := until.Add([]time.Duration{time.Hour, 48 * time.Hour, 10 * time.Minute}[p.intn(3)])
	code := p.newCode()
	if p.intn(12) == 0 {
		// The code of another grant: rejected while that one is in force.
		if o := p.pickGrant(func(g *pgrant) bool { return g.exists && g.code != "" }); o != nil {
			code = o.code
		}
	}
	op := wire.GrantOp{Op: "put", GrantID: id, Version: 1, Action: "deposit", ParcelID: "P" + id, Holder: "13488888888",
		CodeHash: p.propHash(code), ValidUntil: ptr(until),
		Pickup: &wire.PickupSpec{GrantID: id + "p", Holder: "13499996666", CodeHash: p.propHash(p.newCode()), ValidUntil: ptr(puntil)}}
	if p.intn(4) == 0 {
		op.Compartment = 1 + p.intn(len(p.r.cab.comps))
	} else {
		op.Size = []string{"S", "M", "L", "XL"}[p.intn(4)]
	}
	if p.intn(4) == 0 {
		op.Uses = ptr(2)
		op.Pickup.Uses = ptr(2)
	}
	if p.intn(8) == 0 {
		op.ValidFrom = ptr(now.Add(time.Minute))
	}
	p.logf("put deposit %s size %q compartment %d", id, op.Size, op.Compartment)
	ctx := p.ctx("grants")
	p.apply(p.body(op))
	p.check(ctx)
}

func (p *prop) putOther(now time.Time) {
	if p.intn(2) == 0 {
		p.putService(now, p.intn(3)*(1+p.intn(len(p.r.cab.comps))))
		return
	}
	// A reclaim grant for an occupied or expired compartment.
	var ns []int
	for _, c := range p.ctx("").before {
		if c.State == "occupied" || c.State == "expired" {
			ns = append(ns, c.Number)
		}
	}
	if len(ns) == 0 {
		p.putDeposit(now)
		return
	}
	n := ns[p.intn(len(ns))]
	p.nextID++
	id := fmt.Sprintf("r%d", p.nextID)
	op := wire.GrantOp{Op: "put", GrantID: id, Version: 1, Action: "reclaim", Compartment: n, Holder: "13400000000",
		CodeHash: p.propHash(p.newCode()), ValidUntil: ptr(now.Add(2 * time.Hour))}
	p.logf("put reclaim %s compartment %d", id, n)
	ctx := p.ctx("grants")
	p.apply(p.body(op))
	p.check(ctx)
}

func (p *prop) putService(now time.Time, n int) {
	p.nextID++
	id := fmt.Sprintf("s%d", p.nextID)
	op := wire.GrantOp{Op: "put", GrantID: id, Version: 1, Action: "service", Compartment: n, Holder: "13700000000",
		CodeHash: p.propHash(p.newCode()), ValidUntil: ptr(now.Add(4 * time.Hour))}
	p.logf("put service %s compartment %d", id, n)
	ctx := p.ctx("grants")
	p.apply(p.body(op))
	p.check(ctx)
}

func (p *prop) revoke() {
	g := p.pickGrant(func(g *pgrant) bool { return g.exists || g.parent != "" })
	if g == nil {
		return
	}
	v := g.version + 1
	if g.parent != "" {
		v = max(v, p.g[g.parent].version+1)
	}
	if p.intn(6) == 0 {
		v = g.version // stale
	}
	p.logf("revoke %s v%d", g.id, v)
	ctx := p.ctx("grants")
	p.apply(p.body(wire.GrantOp{Op: "revoke", GrantID: g.id, Version: v}))
	p.check(ctx)
}

// transfer moves a deposit grant (a reservation, mostly) to a new holder
// and code: the old code stops opening anything.
func (p *prop) transfer(now time.Time) {
	g := p.pickGrant(func(g *pgrant) bool { return g.action == "deposit" && g.exists })
	if g == nil {
		p.putDeposit(now)
		return
	}
	op := wire.GrantOp{Op: "put", GrantID: g.id, Version: g.version + 1, Action: "deposit", Compartment: g.compartment,
		Size: g.size, ParcelID: g.parcel, Holder: "13500001111", CodeHash: p.propHash(p.newCode()), ValidUntil: ptr(g.until)}
	if g.pickup != nil {
		op.Pickup = &wire.PickupSpec{GrantID: g.pickup.id, Holder: "13499996666", CodeHash: p.propHash(g.pickup.code),
			ValidUntil: ptr(g.pickup.until)}
	}
	p.logf("transfer %s to v%d", g.id, op.Version)
	ctx := p.ctx("grants")
	p.apply(p.body(op))
	p.check(ctx)
}

// snapshotGrants sends the live grants again (stale puts) minus one: it
// is revoked.
func (p *prop) snapshotGrants(now time.Time) {
	var ops []wire.GrantOp
	drop := p.pickGrant(func(g *pgrant) bool { return g.exists && g.parent == "" })
	for _, id := range p.ids {
		g := p.g[id]
		if !g.exists || g == drop || g.parent != "" || g.code == "" {
			continue
		}
		op := wire.GrantOp{Op: "put", GrantID: g.id, Version: g.version, Action: g.action, Compartment: g.compartment,
			Size: g.size, ParcelID: g.parcel, Holder: "13488888888", CodeHash: p.propHash(g.code), ValidUntil: ptr(g.until)}
		if g.pickup != nil {
			op.Pickup = &wire.PickupSpec{GrantID: g.pickup.id, CodeHash: p.propHash(g.pickup.code), ValidUntil: ptr(g.pickup.until)}
		}
		ops = append(ops, op)
	}
	name := "nothing"
	if drop != nil {
		name = drop.id
	}
	p.logf("snapshot of %d grants, leaving out %s", len(ops), name)
	b := p.body(ops...)
	b.Snapshot = true
	ctx := p.ctx("grants")
	p.apply(b)
	p.check(ctx)
}

// doorStep is a person at a door: opens a released one, closes an open
// one (a deposit gets its parcel first, a pickup has it taken out, mostly),
// or, now and then, forces a latched one.
func (p *prop) doorStep() {
	var released, open []int
	p.r.cab.mu.Lock()
	for n := 1; n <= len(p.r.cab.comps); n++ {
		switch {
		case p.r.cab.door[n]:
			open = append(open, n)
		case p.latch[n]:
			released = append(released, n)
		}
	}
	p.r.cab.mu.Unlock()
	ctx := p.ctx("door")
	switch {
	case len(released) > 0 && p.intn(4) > 0:
		n := released[p.intn(len(released))]
		p.logf("open released door %d", n)
		p.latch[n] = false
		p.r.door(n, true)
	case len(open) > 0 && p.intn(5) > 0:
		n := open[p.intn(len(open))]
		if p.intn(4) > 0 {
			p.person(n)
			ctx = p.ctx("door")
		}
		p.logf("close door %d", n)
		p.r.door(n, false)
	case p.intn(3) > 0:
		p.typeCode(p.r.clock.Now())
		return
	default:
		n := 1 + p.intn(len(p.r.cab.comps))
		p.logf("force door %d", n)
		p.latch[n] = false
		p.r.door(n, true)
	}
	p.check(ctx)
}

// person puts a parcel into an open compartment that was free (a
// deposit), or takes it out of one that was occupied (a pickup).
func (p *prop) person(n int) {
	var sc store.Compartment
	for _, c := range p.ctx("").before {
		if c.Number == n {
			sc = c
		}
	}
	p.r.cab.mu.Lock()
	present := p.r.cab.parcel[n]
	p.r.cab.mu.Unlock()
	want := sc.State == "free" || sc.State == "reserved" || sc.State == "fault"
	if want == present {
		return
	}
	p.logf("parcel %d present=%v", n, want)
	ctx := p.ctx("parcel")
	p.r.parcel(n, want)
	p.check(ctx)
}

func (p *prop) parcelStep() {
	var open []int
	p.r.cab.mu.Lock()
	for n := 1; n <= len(p.r.cab.comps); n++ {
		if p.r.cab.door[n] {
			open = append(open, n)
		}
	}
	p.r.cab.mu.Unlock()
	if len(open) == 0 {
		p.doorStep()
		return
	}
	n := open[p.intn(len(open))]
	p.r.cab.mu.Lock()
	present := !p.r.cab.parcel[n]
	p.r.cab.mu.Unlock()
	p.logf("parcel %d present=%v", n, present)
	ctx := p.ctx("parcel")
	p.r.parcel(n, present)
	p.check(ctx)
}

// lockReport is hal's word on a release: the door opened (nil), or not (a
// lock fault: the deposit moves on to the next compartment).
func (p *prop) lockReport() {
	var ns []int
	for n := range p.latch {
		if p.latch[n] {
			ns = append(ns, n)
		}
	}
	if len(ns) == 0 {
		p.doorStep()
		return
	}
	sort.Ints(ns)
	n := ns[p.intn(len(ns))]
	ctx := p.ctx("lock report")
	if p.intn(2) == 0 {
		p.logf("hal: lock %d fault", n)
		p.latch[n] = false
		if s := p.sess[n]; s != nil && s.action == "deposit" && p.releasedWithin(ctx, n, MoveOnWithin) {
			ctx.movesOn = s.grant
		}
		p.r.event(hal.Event{Kind: hal.LockReleased, Compartment: n, Err: fmt.Errorf("%w (2 pulses)", hal.ErrLockFault)})
	} else {
		p.logf("hal: lock %d released", n)
		p.r.event(hal.Event{Kind: hal.LockReleased, Compartment: n})
	}
	p.check(ctx)
}

func (p *prop) command() {
	var id string
	if len(p.cmds) > 0 && p.intn(5) == 0 {
		id = p.cmds[p.intn(len(p.cmds))]
	} else {
		p.nextCmd++
		id = fmt.Sprintf("c-%d", p.nextCmd)
	}
	fresh := !slices.Contains(p.cmds, id)
	p.cmds = append(p.cmds, id)
	n := 1 + p.intn(len(p.r.cab.comps)+1)
	action := []string{"open", "open", "disable", "enable"}[p.intn(4)]
	p.logf("command %s %s %d", id, action, n)
	ctx := p.ctx("command")
	if action == "open" && fresh {
		ctx.kind, ctx.n, ctx.grant = "command open", n, id
	}
	res, err := p.r.c.Execute(p.r.ctx, &wire.Command{Kind: "command", LockerID: lockerID, CommandID: id, Action: action, Compartment: n})
	if err != nil {
		p.fail("Execute: %v", err)
	}
	if !fresh && (res.OK || res.Error != "duplicate") {
		p.fail("command id %s ran twice: %+v", id, res)
	}
	p.check(ctx)
}

var propStates = map[string]bool{"free": true, "reserved": true, "occupied": true, "expired": true, "fault": true}

// check runs after every step: releases, states, seq, uses, lockout.
func (p *prop) check(ctx stepCtx) {
	p.t.Helper()
	r := p.r
	rels := r.cab.Releases()
	newRels := rels[p.seenReleases:]
	p.seenReleases = len(rels)
	r.mu.Lock()
	all := slices.Clone(r.traces)
	r.mu.Unlock()
	newTrs := all[p.seenTraces:]
	p.seenTraces = len(all)

	// The outbox seq is gapless, across restarts.
	for _, tr := range newTrs {
		if tr.Seq != p.lastSeq+1 {
			p.fail("%s: trace %s has seq %d after %d", ctx.kind, tr.Type, tr.Seq, p.lastSeq)
		}
		p.lastSeq = tr.Seq
	}
	evs, err := r.c.PendingEvents(r.ctx, 0, 1<<20)
	if err != nil {
		p.fail("PendingEvents: %v", err)
	}
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			p.fail("%s: outbox position %d holds seq %d", ctx.kind, i+1, e.Seq)
		}
	}
	st, err := r.c.Status(r.ctx)
	if err != nil {
		p.fail("Status: %v", err)
	}
	if st.LastSeq != p.lastSeq || st.Outbox != len(evs) || int64(len(evs)) != p.lastSeq {
		p.fail("%s: status last_seq %d outbox %d; traces up to %d, %d pending", ctx.kind, st.LastSeq, st.Outbox, p.lastSeq, len(evs))
	}

	// Every release has its lock_released trace, in the same order.
	var relTrs []wire.Trace
	for _, tr := range newTrs {
		if tr.Type == "lock_released" {
			relTrs = append(relTrs, tr)
		}
	}
	if len(relTrs) != len(newRels) {
		p.fail("%s: %d locks released (%v) but %d lock_released traces", ctx.kind, len(newRels), newRels, len(relTrs))
	}
	for i, tr := range relTrs {
		if tr.Compartment != newRels[i] {
			p.fail("%s: lock %d released, trace says %d", ctx.kind, newRels[i], tr.Compartment)
		}
	}

	// Fold the traces into the model, checking each release as it comes.
	lockouts := 0
	success := false
	for _, tr := range newTrs {
		switch tr.Type {
		case "lock_released":
			p.checkRelease(ctx, tr, len(relTrs))
			if ctx.kind == "code" || ctx.kind == "service open" {
				success = true
			}
			p.latch[tr.Compartment] = true
			r.cab.mu.Lock()
			opened := r.cab.door[tr.Compartment]
			r.cab.mu.Unlock()
			if opened {
				p.latch[tr.Compartment] = false
			}
			if g := p.g[tr.GrantID]; g != nil && (g.action == "pickup" || g.action == "reclaim") {
				g.inUse++
			}
			p.sess[tr.Compartment] = &psess{grant: tr.GrantID, action: p.actionOf(tr.GrantID)}
		case "door_opened":
			if s := p.sess[tr.Compartment]; s != nil {
				s.opened = true
			}
		case "door_closed":
			if s := p.sess[tr.Compartment]; s != nil && s.opened {
				delete(p.sess, tr.Compartment)
			}
		case "lock_fault":
			if s := p.sess[tr.Compartment]; s != nil {
				if g := p.g[s.grant]; g != nil && !s.opened && (g.action == "pickup" || g.action == "reclaim") && g.inUse > 0 {
					g.inUse--
				}
				delete(p.sess, tr.Compartment)
			}
		case "started":
			for n, s := range p.sess {
				r.cab.mu.Lock()
				open := r.cab.door[n]
				r.cab.mu.Unlock()
				if open {
					continue
				}
				if g := p.g[s.grant]; g != nil && !s.opened && (g.action == "pickup" || g.action == "reclaim") && g.inUse > 0 {
					g.inUse--
				}
				delete(p.sess, n)
			}
		case "deposited":
			g := p.g[tr.GrantID]
			if g == nil {
				break
			}
			if g.exists {
				g.deposited++
				if g.uses >= 0 && g.deposited > g.uses {
					p.fail("%s: deposit grant %s used %d times, it has %d uses", ctx.kind, g.id, g.deposited, g.uses)
				}
				p.activatePickup(g, tr.Compartment)
			}
		case "picked_up", "reclaimed":
			if g := p.g[tr.GrantID]; g != nil {
				g.ended = true
			}
		case "keypad_lockout":
			lockouts++
		}
	}
	for _, g := range p.g {
		if (g.action == "pickup" || g.action == "reclaim") && g.uses >= 0 && g.inUse > g.uses {
			p.fail("%s: grant %s has %d uses taken, it has %d", ctx.kind, g.id, g.inUse, g.uses)
		}
	}

	// The keypad lockout, as the model counts wrong codes.
	want := 0
	if ctx.kind == "code" {
		svc := p.pickGrant(func(g *pgrant) bool {
			return g.action == "service" && g.compartment == 0 && g.code == ctx.code && p.inForce(g, ctx.now)
		})
		switch {
		case success:
			p.failures = 0
		case !ctx.wrong && svc != nil:
			p.failures = 0
			p.service, p.choice, p.entryAt = svc.id, 0, ctx.now
		case !ctx.wrong && !p.staleCode(ctx):
			// A known code refused for the locker's reasons (a door in
			// use, none free): not counted.
		default:
			// A wrong code, or a stale one (ended, used up, not yet
			// valid): both count (issue 11: a stale code typed forever
			// must meet the lockout too).
			now := ctx.now
			p.failures++
			if p.lockouts > 0 && now.Sub(p.lockedTill) > 24*time.Hour {
				p.lockouts = 0
			}
			if p.failures >= 5 {
				p.failures = 0
				p.lockouts++
				wait := time.Minute
				for i := 1; i < p.lockouts && wait < time.Hour; i++ {
					wait *= 2
				}
				p.lockedTill = now.Add(min(wait, time.Hour))
				want = 1
			}
		}
	}
	if lockouts != want {
		p.fail("%s: %d keypad_lockout traces, the model wants %d (failures %d)", ctx.kind, lockouts, want, p.failures)
	}

	// Every compartment is in exactly one state, and its facts agree.
	err = r.st.View(r.ctx, func(tx *store.Tx) error {
		all, err := tx.Compartments()
		if err != nil {
			return err
		}
		if len(all) != len(r.cab.comps) {
			return fmt.Errorf("%d compartments stored, %d wired", len(all), len(r.cab.comps))
		}
		for _, sc := range all {
			bad := func(why string) error {
				return fmt.Errorf("compartment %d: %s (%+v)", sc.Number, why, sc)
			}
			if !propStates[string(sc.State)] {
				return bad("unknown state " + string(sc.State))
			}
			if ps := PublicState(sc); sc.Disabled != (ps == "disabled") {
				return bad("disabled flag and public state " + ps + " disagree")
			}
			hasParcel := sc.State == "occupied" || sc.State == "expired"
			if hasParcel != (sc.ParcelID != "") {
				return bad("a parcel id exactly when occupied or expired")
			}
			if (sc.State == "fault") != (sc.Fault != "") {
				return bad("a fault reason exactly when in state fault")
			}
		}
		return nil
	})
	if err != nil {
		p.fail("%s: %v", ctx.kind, err)
	}
}

func (p *prop) actionOf(id string) string {
	if g := p.g[id]; g != nil {
		return g.action
	}
	return "command"
}

// activatePickup mirrors the nested pickup coming into force at deposit,
// unless the locker holds that grant id at the deposit's version or higher.
func (p *prop) activatePickup(d *pgrant, n int) {
	if d.pickup == nil || d.revoked {
		return
	}
	pg := p.grant(d.pickup.id)
	pg.parent = d.id
	if pg.version >= d.version {
		return
	}
	now := p.r.clock.Now()
	if pg.code != "" && pg.code != d.pickup.code {
		pg.oldCodes = append(pg.oldCodes, pg.code)
	}
	*pg = pgrant{id: pg.id, action: "pickup", version: d.version, exists: true, code: d.pickup.code, oldCodes: pg.oldCodes,
		compartment: n, parcel: d.parcel, from: now, until: d.pickup.until, uses: d.pickup.uses, parent: d.id}
}

// checkRelease checks one lock_released trace against what the step may do.
func (p *prop) checkRelease(ctx stepCtx, tr wire.Trace, count int) {
	bad := func(why string) {
		p.fail("%s: lock %d released for %q: %s", ctx.kind, tr.Compartment, tr.GrantID, why)
	}
	if ctx.locked {
		bad("the keypad is locked")
	}
	var before store.Compartment
	for _, sc := range ctx.before {
		if sc.Number == tr.Compartment {
			before = sc
		}
	}
	switch {
	case ctx.kind == "code":
		if count > 1 {
			bad("one code opened more than one door")
		}
		g := p.g[tr.GrantID]
		if g == nil || g.code != ctx.code {
			bad("not the grant of the code typed")
		}
		if ctx.wrong {
			bad("a wrong code (unknown, revoked or an old code)")
		}
		if !p.inForce(g, ctx.now) {
			bad(fmt.Sprintf("grant not in force (exists %v revoked %v from %v until %v uses %d deposited %d in use %d ended %v)",
				g.exists, g.revoked, g.from.Sub(t0), g.until.Sub(t0), g.uses, g.deposited, g.inUse, g.ended))
		}
		p.checkTarget(g, before, bad)
	case ctx.kind == "service open":
		if tr.GrantID != ctx.grant {
			bad("not the service grant whose menu is open")
		}
		if g := p.g[ctx.grant]; g == nil || !p.inForce(g, ctx.now) {
			bad("the service grant is not in force")
		}
		if tr.Compartment != ctx.n {
			bad(fmt.Sprintf("the menu asked for %d", ctx.n))
		}
	case ctx.kind == "self-test":
		if tr.GrantID != "" || before.Session.Active() || before.DoorOpen {
			bad("the self-test released a compartment with a session or an open door")
		}
	case ctx.kind == "command open":
		if tr.GrantID != ctx.grant || tr.Compartment != ctx.n {
			bad(fmt.Sprintf("command %s asked for %d", ctx.grant, ctx.n))
		}
	case ctx.movesOn != "" && tr.GrantID == ctx.movesOn:
		g := p.g[tr.GrantID]
		if g == nil || g.compartment != 0 || !p.inForce(g, ctx.now) {
			bad("a deposit moved on after a lock fault, but its grant is not a size grant in force")
		}
		p.checkTarget(g, before, bad)
	default:
		bad("nothing in this step may open a door")
	}
}

// checkTarget checks the compartment a grant's code opened.
func (p *prop) checkTarget(g *pgrant, sc store.Compartment, bad func(string)) {
	switch g.action {
	case "deposit":
		switch {
		case g.compartment != 0 && sc.Number != g.compartment:
			bad(fmt.Sprintf("the grant reserves %d", g.compartment))
		case sc.Disabled || sc.Session.Active():
			bad("a disabled compartment, or one with a release in progress")
		case g.compartment == 0 && (sc.State != "free" || sizeRank[sc.Size] < sizeRank[g.size]):
			bad(fmt.Sprintf("a size-%s deposit opened a %s compartment in state %s", g.size, sc.Size, sc.State))
		case g.compartment != 0 && sc.State != "free" && sc.State != "reserved":
			bad("a reserved deposit opened a compartment in state " + string(sc.State))
		}
	case "pickup", "reclaim":
		if sc.Number != g.compartment || sc.Disabled || (sc.State != "occupied" && sc.State != "expired") ||
			(g.parcel != "" && sc.ParcelID != g.parcel) {
			bad(fmt.Sprintf("a %s opened compartment %d in state %s with parcel %q", g.action, sc.Number, sc.State, sc.ParcelID))
		}
	case "service":
		if g.compartment != sc.Number {
			bad("a service code opened another compartment than its own")
		}
	default:
		bad("no such action")
	}
}

// propSeeds are the deterministic runs of the default test and the seed
// corpus of the fuzz target.
const propSeeds = 10

func propSequence(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

// raceBuild says whether the test binary was built with -race: SQLite
// (transpiled C) runs some 30 times slower under it, so the default run
// then makes fewer runs.
func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func TestControllerProperties(t *testing.T) {
	seeds, size := uint64(propSeeds), 1200
	if raceBuild() || testing.Short() {
		seeds, size = 1, 600
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runProperty(t, propSequence(seed, size))
		})
	}
}

// FuzzController decodes a byte slice into a step sequence (each byte
// picks a step or one of its arguments) and checks the invariants after
// every step.
func FuzzController(f *testing.F) {
	for seed := uint64(1); seed <= 8; seed++ {
		f.Add(propSequence(seed, 300))
	}
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], 42)
	f.Add(n[:])
	f.Fuzz(func(t *testing.T, b []byte) {
		limit := 600 // about 150 actions: long enough, and fast enough to fuzz
		if raceBuild() {
			limit = 120
		}
		if len(b) > limit {
			b = b[:limit]
		}
		runProperty(t, b)
	})
}

// Bugs the property test found, each as the shortest sequence that shows it.

// An idle service menu times out: a technician who walks away must not
// leave a keypad on which anyone can open any door with 1, a door number
// and #.
func TestIdleServiceMenuTimesOut(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(wire.GrantOp{Op: "put", GrantID: "svc", Version: 1, Action: "service", Holder: "13700000000",
		CodeHash: hash("908070"), ValidUntil: ptr(t0.Add(time.Hour))}))
	r.keys("908070#") // the technician opens the menu, and walks away
	r.clock.Advance(10 * time.Minute)
	r.tick()
	r.keys("101#") // a passer-by: 1 (open a door), 01, #
	if got := r.cab.Releases(); len(got) != 0 {
		t.Fatalf("10 min after the service code, the menu still opened door %v", got)
	}
}

// A release on a door that is already open (forced, or left open) is a
// session whose close finishes it: picked_up, not a lock fault later.
func TestReleaseOnAnOpenDoorFinishes(t *testing.T) {
	r := newRig(t, "M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.keys("123456#")
	r.door(1, true)
	r.parcel(1, true)
	r.door(1, false)
	r.door(1, true) // forced open
	r.types()
	r.keys("1234569#") // the recipient's pickup code: the lock of the open door is released
	r.parcel(1, false)
	r.door(1, false)
	got := r.types()
	if !slices.Contains(got, "picked_up") {
		r.clock.Advance(16 * time.Second)
		r.tick()
		t.Fatalf("pickup through a door that was already open: traces %v then %v; state %s", got, r.types(), r.state(1))
	}
}

// releasedWithin says whether compartment n's session began at most d ago:
// only then does a deposit move on after a lock fault.
func (p *prop) releasedWithin(ctx stepCtx, n int, d time.Duration) bool {
	for _, sc := range ctx.before {
		if sc.Number == n {
			return sc.Session.Active() && ctx.now.Sub(sc.Session.At) <= d
		}
	}
	return false
}
