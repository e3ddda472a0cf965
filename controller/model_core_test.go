package controller

// The reference model of model_test.go: grants, compartments, keypad.

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

// mg is the model's grant (or tombstone).
type mg struct {
	id       string
	version  int64
	issued   time.Time // issued_at of the envelope that last put or revoked it
	tomb     bool      // revoked
	put      bool      // a put is in force
	action   string
	code     string
	comp     int
	size     string
	parcel   string
	from     time.Time
	until    time.Time
	uses     int // -1: unlimited
	used     int
	ended    bool // picked_up, reclaimed
	pickup   *mpick
	nested   bool // a nested pickup brought into force at deposit
	inst     int  // nested: the parcel instance it was issued for
	rinst    int  // a reclaim naming no parcel: the instance it is bound to (0: none yet, or a stray: any)
	oldCodes []string
	doubt    bool // put by an envelope older than the last snapshot
}

type mpick struct {
	id, code string
	until    time.Time
	uses     int
}

// mcomp is the model's compartment, from the traces (the physical state is
// the fake cabinet's).
type mcomp struct {
	inst     int // the parcel on record: a new one at every deposited / parcel_found
	parcelID string
	occupied bool // a parcel on record (until picked_up / reclaimed)
	present  bool // the recorded presence
	gone     bool // parcel_missing
	stray    bool // the parcel on record is one nobody deposited (parcel_found)
	disabled bool
	sess     *msess
}

type msess struct {
	grant, action string
	opened        bool
	at            time.Time
}

// mallow is what one action may release.
type mallow struct {
	kind    string
	targets map[int]string // compartment → grant id
	any     bool           // any compartment (a self-test)
	code    bool           // a typed code: at most one door
	deny    map[int][2]string
	why     [2]string // nothing allowed: invariant and why
}

func (a *mallow) add(n int, id string) {
	if a.targets == nil {
		a.targets = map[int]string{}
	}
	a.targets[n] = id
}

func (a *mallow) refuse(n int, inv, why string) {
	if a.deny == nil {
		a.deny = map[int][2]string{}
	}
	if _, ok := a.deny[n]; !ok {
		a.deny[n] = [2]string{inv, why}
	}
}

type model struct {
	n           int
	comps       []hal.Compartment
	g           map[string]*mg
	ids         []string
	c           []mcomp // 1-based
	cmds        map[string]bool
	sensorFault map[int]bool
	recovered   map[int]bool
	lockedUntil time.Time

	// the keypad
	entry      string
	entryKnown bool
	menu       int // 0 closed, 1 open, 2 maybe
	menuGrant  string
	choice     byte
	menuEntry  string
	stars      int
	lastKey    time.Time
	haveKey    bool

	// the clock
	saneAt, setAt    time.Time
	beforeNow        time.Time
	lastTrustedWrite time.Time
	bootClock        time.Time
	lastEstimate     time.Time
	maxEstimate      time.Time // the highest estimate seen since lastTrustedWrite
	lastSeq          int64
	lastSnapshot     time.Time
}

func newModel(n int, comps []hal.Compartment) *model {
	return &model{n: n, comps: comps, g: map[string]*mg{}, c: make([]mcomp, n+1), cmds: map[string]bool{},
		sensorFault: map[int]bool{}, recovered: map[int]bool{}, entryKnown: true, lastTrustedWrite: t0, bootClock: t0}
}

func (m *model) grant(id string) *mg {
	g := m.g[id]
	if g == nil {
		g = &mg{id: id}
		m.g[id] = g
		m.ids = append(m.ids, id)
	}
	return g
}

const tol = 2 * time.Second

// inTime says whether t lies in [from, until): 1 yes, 0 no, 2 too close to say.
func inTime(now, from, until time.Time) int {
	near := func(a, b time.Time) bool { d := a.Sub(b); return d < tol && d > -tol }
	if near(now, from) || near(now, until) {
		return 2
	}
	if !now.Before(from) && now.Before(until) {
		return 1
	}
	return 0
}

// force says whether g may open a door at now: 1 yes, 0 no, 2 maybe; and
// why not.
func (m *model) force(g *mg, now time.Time) (int, string) {
	switch {
	case g == nil || !g.put || g.tomb:
		return 0, "revoked or never in force"
	case g.ended:
		return 0, "ended (picked up or reclaimed)"
	case g.uses >= 0 && g.used >= g.uses:
		return 0, fmt.Sprintf("used up (%d of %d)", g.used, g.uses)
	}
	switch inTime(now, g.from, g.until) {
	case 0:
		return 0, fmt.Sprintf("not in time: valid %s … %s, now %s", modelTime(g.from), modelTime(g.until), modelTime(now))
	case 2:
		return 2, ""
	}
	return 1, ""
}

// liveCodes are the codes a put may not take: those of the grants not
// ended (and the pending nested pickups of deposits not ended), but the
// grants named by skip. ambiguous: one of them ends about now.
func (m *model) liveCodes(now time.Time, skip ...string) (codes map[string]string, ambiguous map[string]bool) {
	codes, ambiguous = map[string]string{}, map[string]bool{}
	for _, id := range m.ids {
		g := m.g[id]
		if containsStr(skip, id) || !g.put || g.tomb || g.ended || (g.uses >= 0 && g.used >= g.uses) || !now.Before(g.until.Add(tol)) {
			continue
		}
		amb := g.until.Sub(now) < tol
		codes[g.code] = id
		if amb {
			ambiguous[g.code] = true
		}
		if g.action == "deposit" && g.pickup != nil && !containsStr(skip, g.pickup.id) {
			codes[g.pickup.code] = id
			if amb {
				ambiguous[g.pickup.code] = true
			}
		}
	}
	return codes, ambiguous
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// ---- grants ----

// mop is one parsed op.
type mop struct {
	op    wire.GrantOp
	code  string
	pcode string
}

func parseTimeTok(s string) (*time.Time, error) {
	switch s {
	case "none", "":
		return nil, nil
	case "zero":
		return &time.Time{}, nil
	case "absurd":
		t := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
		return &t, nil
	}
	if !strings.HasPrefix(s, "@") {
		return nil, fmt.Errorf("time %q", s)
	}
	d, err := time.ParseDuration(s[1:])
	if err != nil {
		return nil, err
	}
	t := t0.Add(d)
	return &t, nil
}

func modelTime(t time.Time) string {
	switch {
	case t.IsZero():
		return "zero"
	case t.Year() > 9000:
		return "absurd"
	}
	return "@" + t.Sub(t0).String()
}

// parseGrants reads `grants issued=@D [snapshot] | put k=v… | revoke id=… v=…`.
func parseGrants(line string) (*wire.GrantsBody, []mop, error) {
	parts := strings.Split(line, "|")
	head := strings.Fields(parts[0])
	b := &wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: t0}
	for _, f := range head[1:] {
		switch {
		case f == "snapshot":
			b.Snapshot = true
		case strings.HasPrefix(f, "issued="):
			t, err := parseTimeTok(f[len("issued="):])
			if err != nil || t == nil {
				return nil, nil, fmt.Errorf("issued: %v", err)
			}
			b.IssuedAt = *t
		}
	}
	b.ExpiresAt = b.IssuedAt.Add(10 * 365 * 24 * time.Hour)
	var ops []mop
	for _, p := range parts[1:] {
		f := strings.Fields(p)
		if len(f) == 0 {
			continue
		}
		kv := map[string]string{}
		for _, x := range f[1:] {
			k, v, _ := strings.Cut(x, "=")
			kv[k] = v
		}
		var o mop
		o.op.Op = f[0]
		o.op.GrantID = kv["id"]
		o.op.Version, _ = strconv.ParseInt(kv["v"], 10, 64)
		if f[0] == "put" {
			o.op.Action = kv["act"]
			o.op.Size = kv["size"]
			o.op.Compartment, _ = strconv.Atoi(kv["comp"])
			o.op.ParcelID = kv["parcel"]
			o.op.Holder = "13488888888"
			o.code = kv["code"]
			o.op.CodeHash = hash(o.code)
			var err error
			if o.op.ValidFrom, err = parseTimeTok(kv["from"]); err != nil {
				return nil, nil, err
			}
			if o.op.ValidUntil, err = parseTimeTok(kv["until"]); err != nil {
				return nil, nil, err
			}
			if u, ok := kv["uses"]; ok {
				n, _ := strconv.Atoi(u)
				o.op.Uses = &n
			}
			if pk, ok := kv["pickup"]; ok {
				ps := strings.Split(pk, "/")
				for len(ps) < 3 {
					ps = append(ps, "")
				}
				o.pcode = ps[1]
				o.op.Pickup = &wire.PickupSpec{GrantID: ps[0], Holder: "13499996666", CodeHash: hash(ps[1])}
				if o.op.Pickup.ValidUntil, err = parseTimeTok(ps[2]); err != nil {
					return nil, nil, err
				}
				if len(ps) > 3 {
					n, _ := strconv.Atoi(ps[3])
					o.op.Pickup.Uses = &n
				}
			}
		}
		ops = append(ops, o)
	}
	b.Ops = make([]wire.GrantOp, len(ops))
	for i := range ops {
		b.Ops[i] = ops[i].op
	}
	return b, ops, nil
}

// validate is the model's reading of the rules of a put.
func (m *model) validate(o *mop, now time.Time) string {
	op := o.op
	from := now
	if op.ValidFrom != nil {
		from = *op.ValidFrom
	}
	switch {
	case op.GrantID == "" || op.Version < 1:
		return "no id or version"
	case op.Op == "revoke":
		return ""
	case op.Op != "put":
		return "unknown op"
	case op.Action != "deposit" && op.Action != "pickup" && op.Action != "reclaim" && op.Action != "service":
		return "unknown action"
	case o.code == "":
		return "no code"
	case op.ValidUntil == nil || !op.ValidUntil.After(from):
		return "no end, or an end before the start"
	case op.Uses != nil && *op.Uses < 1:
		return "uses < 1"
	case op.Compartment < 0 || op.Compartment > m.n:
		return "no such compartment"
	case op.Action == "deposit" && op.Compartment == 0 && modelSizeRank[op.Size] == 0:
		return "a deposit needs a compartment or a size"
	case op.Action == "pickup" && (op.Compartment == 0 || op.ParcelID == ""):
		return "a pickup needs a compartment and a parcel"
	case op.Action == "reclaim" && op.Compartment == 0:
		return "a reclaim needs a compartment"
	case op.Pickup != nil && op.Action != "deposit":
		return "a nested pickup on a non-deposit"
	case op.Pickup != nil && (op.Pickup.GrantID == "" || o.pcode == "" || op.Pickup.ValidUntil == nil || op.Pickup.ValidUntil.IsZero()):
		return "a nested pickup without id, code or end"
	case op.Pickup != nil && op.Pickup.Uses != nil && *op.Pickup.Uses < 1:
		return "nested uses < 1"
	case op.Pickup != nil && (o.pcode == o.code || op.Pickup.GrantID == op.GrantID):
		return "the nested pickup shares the deposit's code or id"
	}
	return ""
}

// applyOp applies one op to the model: "applied", "stale" or a rejection.
func (m *model) applyOp(o *mop, issued, now time.Time) string {
	if why := m.validate(o, now); why != "" {
		return "rejected: " + why
	}
	op := o.op
	g := m.g[op.GrantID]
	if g != nil && op.Version <= g.version {
		return "stale"
	}
	if op.Op == "revoke" {
		g = m.grant(op.GrantID)
		g.version, g.tomb, g.put, g.issued = op.Version, true, false, issued
		return "applied"
	}
	skip := []string{op.GrantID}
	if op.Pickup != nil {
		skip = append(skip, op.Pickup.GrantID)
	}
	codes, amb := m.liveCodes(now, skip...)
	if id, ok := codes[o.code]; ok {
		if amb[o.code] {
			return "ambiguous"
		}
		return "rejected: code in use by " + id
	}
	if op.Pickup != nil {
		if id, ok := codes[o.pcode]; ok {
			if amb[o.pcode] {
				return "ambiguous"
			}
			return "rejected: nested code in use by " + id
		}
	}
	m.doPut(o, issued, now)
	return "applied"
}

// doPut puts the grant of o in force.
func (m *model) doPut(o *mop, issued, now time.Time) {
	op := o.op
	g := m.grant(op.GrantID)
	if g.code != "" && g.code != o.code {
		g.oldCodes = append(g.oldCodes, g.code)
	}
	old := g.oldCodes
	prev := *g
	*g = mg{id: g.id, version: op.Version, issued: issued, put: true, action: op.Action, code: o.code, comp: op.Compartment,
		size: op.Size, parcel: op.ParcelID, from: now, until: *op.ValidUntil, uses: 1, oldCodes: old}
	if op.ValidFrom != nil {
		g.from = *op.ValidFrom
	}
	if op.Action == "reclaim" && op.ParcelID == "" && op.Compartment >= 1 && op.Compartment <= m.n {
		// Bound to the parcel deposited in its compartment now, or else
		// to the next one deposited there.
		if c := &m.c[op.Compartment]; prev.put && !prev.tomb && prev.action == "reclaim" && prev.comp == op.Compartment {
			g.rinst = prev.rinst // put again: it keeps its binding
		} else if c.occupied && !c.stray {
			g.rinst = c.inst
		}
	}
	if op.Uses != nil {
		g.uses = *op.Uses
	} else if op.Action == "service" {
		g.uses = -1
	}
	if op.Pickup != nil {
		g.pickup = &mpick{id: op.Pickup.GrantID, code: o.pcode, until: *op.Pickup.ValidUntil, uses: 1}
		if op.Pickup.Uses != nil {
			g.pickup.uses = *op.Pickup.Uses
		}
	}
}

func cloneGrant(g *mg) *mg {
	if g == nil {
		return nil
	}
	c := *g
	c.oldCodes = append([]string(nil), g.oldCodes...)
	if g.pickup != nil {
		p := *g.pickup
		c.pickup = &p
	}
	return &c
}

func (w *mworld) grants(line string) {
	m := w.m
	b, ops, err := parseGrants(line)
	if err != nil {
		w.t.Fatalf("step %q: %v", line, err)
	}
	now := w.now()
	var before map[string]store.GrantMeta
	w.readStore(func(tx *store.Tx) error { var err error; before, err = tx.AllGrantMeta(); return err })

	saved := map[string]*mg{}
	results := make([]string, len(ops))
	for i := range ops {
		id := ops[i].op.GrantID
		if _, ok := saved[id]; !ok {
			saved[id] = cloneGrant(m.g[id])
		}
		if b.IssuedAt.Before(m.lastSnapshot) {
			// Issued before the newest snapshot applied, which was the
			// central's whole state at a later time: every op is stale.
			results[i] = "stale"
			continue
		}
		results[i] = m.applyOp(&ops[i], b.IssuedAt, now)
	}
	var ack wire.GrantsAck
	applyErr := false
	rejected := map[string]bool{}
	w.around(nil, func() {
		var err error
		ack, err = w.r.c.ApplyGrants(w.r.ctx, b)
		if err != nil && w.storageOK {
			w.t.Fatalf("ApplyGrants: %v", err)
		}
		if err != nil { // the storage cannot record: nothing applied
			applyErr = true
			for _, o := range b.Ops {
				rejected[o.GrantID] = true
			}
		}
	})
	for _, rj := range ack.Rejected {
		rejected[rj.GrantID] = true
	}
	changed := false
	for i, o := range ops {
		id := o.op.GrantID
		switch {
		case (results[i] == "applied" || results[i] == "ambiguous") && rejected[id]:
			// The controller is stricter than the model: follow it.
			if s := saved[id]; s != nil {
				m.g[id] = s
			} else {
				delete(m.g, id)
				m.ids = removeID(m.ids, id)
			}
		case results[i] == "ambiguous":
			w.t.Logf("step %d: op %s ambiguous in time; the controller applied it", w.step+1, id)
			m.applyOpForce(&ops[i], b.IssuedAt, now)
			changed = true
		case results[i] == "applied":
			changed = true
			if b.IssuedAt.Before(m.lastSnapshot) {
				m.g[id].doubt = true // older than the last snapshot, which did not name it: either reading holds
			}
		case results[i] != "stale" && !rejected[id]:
			changed = true // the model refused it, the controller did not: its own checks (I1…) judge what follows
		}
	}
	if applyErr {
		return
	}
	if b.Snapshot && !b.IssuedAt.Before(m.lastSnapshot) {
		m.lastSnapshot = b.IssuedAt
		named := map[string]bool{}
		for _, o := range b.Ops {
			named[o.GrantID] = true
			if o.Pickup != nil {
				named[o.Pickup.GrantID] = true
			}
		}
		for _, id := range m.ids {
			g := m.g[id]
			if g.put && !g.tomb && !named[id] && g.issued.Before(b.IssuedAt) {
				g.tomb, g.put = true, false
				changed = true
			}
		}
	}

	// I6: nothing changes when nothing should; no grant put later is revoked.
	var after map[string]store.GrantMeta
	w.readStore(func(tx *store.Tx) error { var err error; after, err = tx.AllGrantMeta(); return err })
	if !changed && !maps.Equal(before, after) {
		for id, a := range after {
			if bm, ok := before[id]; !ok || bm != a {
				w.fail("I6", "an envelope that changes nothing (every op stale or refused, the snapshot revokes nothing) changed grant %s: %+v → %+v", id, before[id], a)
			}
		}
		w.fail("I6", "an envelope that changes nothing removed a stored grant")
	}
	for _, id := range m.ids {
		g := m.g[id]
		if f, _ := m.force(g, now); f != 1 || g.doubt {
			continue
		}
		a, ok := after[id]
		if !ok || a.Revoked || a.Version != g.version {
			w.fail("I6", "grant %s (v%d, put by the envelope issued %s) is in force, but the locker holds %+v (present %v)", id, g.version, modelTime(g.issued), a, ok)
		}
	}
}

func (m *model) applyOpForce(o *mop, issued, now time.Time) { m.doPut(o, issued, now) }

func removeID(ids []string, id string) []string {
	out := ids[:0]
	for _, x := range ids {
		if x != id {
			out = append(out, x)
		}
	}
	return out
}

func (w *mworld) readStore(fn func(tx *store.Tx) error) {
	if err := w.r.st.View(w.r.ctx, fn); err != nil {
		w.t.Fatalf("reading the store: %v", err)
	}
}

// ---- the doors a grant may open ----

// targets adds what grant g (its code typed now) may open.
func (m *model) targets(a *mallow, g *mg, now time.Time, phys map[int][2]bool) {
	f, why := m.force(g, now)
	if f == 0 {
		inv := "I5"
		if !g.put && !g.tomb {
			inv = "I1"
		}
		a.why = [2]string{inv, fmt.Sprintf("grant %s: %s", g.id, why)}
		return
	}
	for n := 1; n <= m.n; n++ {
		if inv, why := m.target(g, n, now, phys); inv == "" {
			a.add(n, g.id)
		} else {
			a.refuse(n, inv, why)
		}
	}
}

// target says why grant g may not open compartment n ("" when it may).
func (m *model) target(g *mg, n int, now time.Time, phys map[int][2]bool) (string, string) {
	c := &m.c[n]
	switch g.action {
	case "deposit":
		switch {
		case g.comp != 0 && n != g.comp:
			return "I1", fmt.Sprintf("deposit %s reserves %d", g.id, g.comp)
		case g.comp == 0 && modelSizeRank[m.comps[n-1].Size] < modelSizeRank[g.size]:
			return "I1", fmt.Sprintf("deposit %s needs size %s", g.id, g.size)
		case c.disabled:
			return "I1", "compartment disabled"
		case c.occupied:
			return "I3", fmt.Sprintf("a deposit code (%s) opened a compartment with a parcel on record", g.id)
		case phys[n][1] && !m.sensorFault[n]:
			return "I3", fmt.Sprintf("a deposit code (%s) opened a compartment with a parcel physically in it", g.id)
		case g.comp == 0:
			for _, id := range m.ids {
				o := m.g[id]
				if o != g && o.action == "deposit" && o.comp == n {
					if f, _ := m.force(o, now); f == 1 {
						return "I1", fmt.Sprintf("a size deposit (%s) took compartment %d reserved by %s", g.id, n, o.id)
					}
				}
			}
		}
	case "pickup":
		switch {
		case n != g.comp:
			return "I3", fmt.Sprintf("pickup %s is for compartment %d", g.id, g.comp)
		case c.disabled:
			return "I1", "compartment disabled"
		case !c.occupied:
			return "I5", fmt.Sprintf("pickup %s: no parcel on record in %d (picked up or reclaimed)", g.id, n)
		case g.nested && c.inst != g.inst:
			return "I5", fmt.Sprintf("pickup %s was issued for parcel #%d of compartment %d, which now holds parcel #%d (%q)", g.id, g.inst, n, c.inst, c.parcelID)
		case !g.nested && c.parcelID != g.parcel:
			return "I3", fmt.Sprintf("pickup %s is for parcel %q, compartment %d holds %q", g.id, g.parcel, n, c.parcelID)
		}
	case "reclaim":
		switch {
		case n != g.comp:
			return "I3", fmt.Sprintf("reclaim %s is for compartment %d", g.id, g.comp)
		case c.disabled:
			return "I1", "compartment disabled"
		case !c.occupied:
			return "I5", fmt.Sprintf("reclaim %s: no parcel on record in %d", g.id, n)
		case g.parcel != "" && c.parcelID != g.parcel:
			return "I3", fmt.Sprintf("reclaim %s is for parcel %q, compartment %d holds %q", g.id, g.parcel, n, c.parcelID)
		case g.parcel == "" && g.rinst != 0 && g.rinst != c.inst:
			return "I1", fmt.Sprintf("reclaim %s (no parcel id) is bound to parcel #%d of compartment %d, which holds parcel #%d", g.id, g.rinst, n, c.inst)
		}
	case "service":
		if g.comp == 0 || n != g.comp {
			return "I1", fmt.Sprintf("service code %s is for compartment %d", g.id, g.comp)
		}
	}
	return "", ""
}

// moveOnTargets: a jammed first door of a size deposit typed within a
// minute moves on to another compartment.
func (m *model) moveOnTargets(n int, now time.Time, phys map[int][2]bool) *mallow {
	s := m.c[n].sess
	if s == nil || s.action != "deposit" || s.opened || now.Sub(s.at) > time.Minute+tol {
		return nil
	}
	g := m.g[s.grant]
	if g == nil || g.comp != 0 {
		return nil
	}
	a := &mallow{kind: "move on", code: true}
	saved := m.c[n].disabled
	m.c[n].disabled = true // not the jammed one
	m.targets(a, g, now, phys)
	m.c[n].disabled = saved
	return a
}

// ---- the keypad ----

func (m *model) key(k byte, now time.Time, storageOK bool, phys map[int][2]bool) *mallow {
	if m.haveKey {
		d := now.Sub(m.lastKey)
		switch {
		case d > 31*time.Second:
			m.entry, m.entryKnown, m.menu, m.choice, m.menuEntry = "", true, 0, 0, ""
		case d >= 29*time.Second || d < 0:
			m.entryKnown = false
			if m.menu != 0 {
				m.menu = 2
			}
		}
	}
	m.lastKey, m.haveKey = now, true
	if k == '*' {
		m.stars++
	} else {
		m.stars = 0
	}
	if now.Before(m.lockedUntil.Add(-tol)) {
		m.entry, m.entryKnown = "", true
		return nil
	}
	if m.menu == 2 {
		// Not sure whether the menu is open: either reading may hold.
		if m.stars >= 2 {
			m.menu, m.entry, m.entryKnown, m.choice, m.menuEntry = 0, "", true, 0, ""
			return nil
		}
		if k != '#' && k != '4' {
			m.entryKnown = false
			return nil
		}
		a := &mallow{kind: "menu or code (unsure)"}
		if g := m.g[m.menuGrant]; storageOK && g != nil {
			if f, why := m.force(g, now); f != 0 {
				a.any = true
			} else {
				a.why = [2]string{"I5", fmt.Sprintf("the service menu's grant %s has ended: %s", g.id, why)}
			}
		}
		if k == '#' && storageOK && !a.any {
			m.anyCode(a, now, phys)
		}
		return a
	}
	if m.menu == 1 {
		return m.menuKey(k, now, storageOK)
	}
	switch {
	case k >= '0' && k <= '9':
		m.entry += string(k)
		if len(m.entry) > 12 {
			m.entryKnown = false
		}
	case k == '*':
		m.entry, m.entryKnown = "", true
	case k == '#':
		code, known := m.entry, m.entryKnown
		m.entry, m.entryKnown = "", true
		a := &mallow{kind: "code " + code, code: true}
		if !storageOK {
			a.why = [2]string{"I1", "the storage cannot record"}
			return a
		}
		if !known {
			a.kind = "code (unsure)"
			m.anyCode(a, now, phys)
			return a
		}
		if len(code) < 6 {
			a.why = [2]string{"I1", "a code of fewer than 6 digits"}
			return a
		}
		var match []*mg
		for _, id := range m.ids {
			if g := m.g[id]; g.put && !g.tomb && g.code == code {
				match = append(match, g)
			}
		}
		if len(match) == 0 {
			a.why = [2]string{"I1", "a wrong code"}
			for _, id := range m.ids {
				g := m.g[id]
				if g.code == code || containsStr(g.oldCodes, code) {
					a.why = [2]string{"I5", fmt.Sprintf("the code of %s, which was revoked or transferred", id)}
				}
			}
			return a
		}
		for _, g := range match {
			if g.action == "service" && g.comp == 0 {
				switch f, _ := m.force(g, now); f {
				case 1:
					m.menu, m.menuGrant, m.choice, m.menuEntry = 1, g.id, 0, ""
				case 2:
					m.menu, m.menuGrant, m.choice, m.menuEntry = 2, g.id, 0, ""
				}
				a.why = [2]string{"I1", "a service code opens the menu, no door"}
				continue
			}
			m.targets(a, g, now, phys)
		}
		return a
	}
	return nil
}

// anyCode allows what any grant's code may open (the entry is not known).
func (m *model) anyCode(a *mallow, now time.Time, phys map[int][2]bool) {
	for _, id := range m.ids {
		if g := m.g[id]; g.put && !g.tomb && !(g.action == "service" && g.comp == 0) {
			m.targets(a, g, now, phys)
		}
	}
}

func (m *model) menuKey(k byte, now time.Time, storageOK bool) *mallow {
	g := m.g[m.menuGrant]
	inForce := func(a *mallow) bool {
		f, why := m.force(g, now)
		if f == 0 {
			a.why = [2]string{"I5", fmt.Sprintf("the service menu's grant %s has ended: %s", m.menuGrant, why)}
		}
		if !storageOK {
			a.why = [2]string{"I1", "the storage cannot record"}
			return false
		}
		return f != 0
	}
	switch {
	case k == '*':
		if m.choice != 0 {
			m.choice, m.menuEntry = 0, ""
		} else {
			m.menu, m.entry, m.entryKnown = 0, "", true
		}
	case m.choice == 0:
		switch k {
		case '1', '2', '3':
			m.choice, m.menuEntry = k, ""
		case '4':
			a := &mallow{kind: "self-test"}
			if inForce(a) {
				a.any = true
			}
			m.menu = 2
			return a
		}
	case k >= '0' && k <= '9':
		m.menuEntry += string(k)
		if len(m.menuEntry) > 2 {
			m.menu = 2
		}
	case k == '#':
		n, _ := strconv.Atoi(m.menuEntry)
		choice := m.choice
		m.choice, m.menuEntry = 0, ""
		if choice == '1' {
			a := &mallow{kind: "service open"}
			if inForce(a) {
				a.add(n, m.menuGrant)
			}
			return a
		}
	}
	return nil
}

// ---- what the traces tell ----

func (m *model) fold(w *mworld, tr wire.Trace) {
	at, _ := time.Parse(wire.TimeFormat, tr.Time)
	n := tr.Compartment
	var c *mcomp
	if n >= 1 && n <= m.n {
		c = &m.c[n]
	}
	giveBack := func() {
		if c == nil || c.sess == nil {
			return
		}
		if g := m.g[c.sess.grant]; g != nil && !c.sess.opened && g.action != "deposit" && g.used > 0 {
			g.used--
		}
		c.sess = nil
	}
	switch tr.Type {
	case "lock_released":
		if c == nil {
			return
		}
		action := "command"
		if g := m.g[tr.GrantID]; g != nil {
			action = g.action
			if g.action != "deposit" {
				g.used++
			}
		}
		c.sess = &msess{grant: tr.GrantID, action: action, at: at}
	case "door_opened":
		if c != nil && c.sess != nil {
			c.sess.opened = true
		}
	case "door_closed":
		if c != nil {
			c.sess = nil
		}
	case "lock_fault", "release_interrupted":
		giveBack()
	case "deposited":
		if c == nil {
			return
		}
		c.inst++
		c.occupied, c.present, c.gone, c.parcelID, c.stray = true, true, false, tr.ParcelID, false
		for _, id := range m.ids {
			if r := m.g[id]; r.action == "reclaim" && r.comp == n && r.parcel == "" && r.rinst == 0 && r.put && !r.tomb {
				r.rinst = c.inst
			}
		}
		g := m.g[tr.GrantID]
		if g == nil || !g.put {
			return
		}
		g.used++
		if g.pickup != nil {
			p := m.grant(g.pickup.id)
			if p.version >= g.version {
				return // the central's own put or revoke of that id wins
			}
			if p.code != "" && p.code != g.pickup.code {
				p.oldCodes = append(p.oldCodes, p.code)
			}
			*p = mg{id: p.id, version: g.version, issued: g.issued, put: true, action: "pickup", code: g.pickup.code, comp: n,
				parcel: g.parcel, from: at, until: g.pickup.until, uses: g.pickup.uses, nested: true, inst: c.inst, oldCodes: p.oldCodes}
		}
	case "picked_up", "reclaimed":
		if c != nil {
			c.occupied, c.present, c.gone, c.stray = false, false, false, false
		}
		if g := m.g[tr.GrantID]; g != nil {
			g.ended = true
		}
	case "parcel_missing":
		switch {
		case c != nil && c.stray:
			// A parcel nobody deposited is gone again: nothing on record.
			c.occupied, c.present, c.gone, c.stray = false, false, false, false
		case c != nil:
			c.present, c.gone = false, true
		}
	case "parcel_found":
		if c != nil {
			if c.occupied && c.gone {
				c.present, c.gone = true, false
			} else {
				c.inst++
				c.occupied, c.present, c.gone, c.parcelID, c.stray = true, true, false, "", true
			}
		}
	case "compartment_disabled":
		if c != nil {
			c.disabled = true
		}
	case "compartment_enabled":
		if c != nil {
			c.disabled = false
		}
	case "keypad_lockout":
		if u := at.Add(time.Minute); u.After(m.lockedUntil) {
			m.lockedUntil = u
		}
	case "started":
		m.entry, m.entryKnown, m.menu, m.choice, m.menuEntry, m.haveKey = "", true, 0, 0, "", false
	case "pickup_expired":
		if !w.trusted() || tr.TimeEstimated {
			w.fail("I9", "pickup_expired for %s while the clock is not trusted", tr.GrantID)
		}
		if g := m.g[tr.GrantID]; g != nil && g.put && !g.tomb && g.until.After(at.Add(tol)) {
			w.fail("I9", "pickup_expired for %s at %s, its pickup runs until %s", tr.GrantID, modelTime(at), modelTime(g.until))
		}
	case "door_left_open":
		if !w.trusted() || tr.TimeEstimated {
			w.fail("I9", "door_left_open on %d while the clock is not trusted", n)
		}
	}
}

// boot: the power comes back; the keypad starts empty.
func (m *model) boot(w *mworld) {
	m.entry, m.entryKnown, m.menu, m.choice, m.menuEntry, m.haveKey = "", true, 0, 0, "", false
	m.bootClock = w.r.clock.Now()
	m.lastEstimate = time.Time{}
}
