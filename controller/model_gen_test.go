package controller

// The generator of model_test.go: random steps over everything that can
// happen, chosen from the model's state so that most of them do something.

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

type mgen struct {
	rng     *rand.Rand
	left    int
	queue   []string
	nextID  int
	codeSeq int
	issued  int // the central's clock: envelope k is issued at t0 + k s
	lines   []string
	lastPut map[string]string // grant id → the op of its last put
	cmds    []string
	nextCmd int
}

func newGen(seed uint64, steps int) *mgen {
	return &mgen{rng: rand.New(rand.NewPCG(seed, 0x110de1)), left: steps, lastPut: map[string]string{}}
}

func (g *mgen) intn(n int) int {
	if n <= 0 {
		return 0
	}
	return g.rng.IntN(n)
}

func (g *mgen) pct(p int) bool { return g.rng.IntN(100) < p }

func (g *mgen) code() string {
	g.codeSeq++
	return fmt.Sprintf("%d%05d", 1+g.intn(9), g.codeSeq*7%100000)
}

// next gives the next step, or false at the end.
func (g *mgen) next(w *mworld) (string, bool) {
	if len(g.queue) > 0 {
		l := g.queue[0]
		g.queue = g.queue[1:]
		return l, true
	}
	if g.left <= 0 {
		if !w.powered {
			return "power on", true
		}
		if !w.storageOK {
			return "storage on", true
		}
		return "", false
	}
	g.left--
	if !w.powered {
		return g.offStep(w), true
	}
	if !w.storageOK && g.pct(35) {
		return "storage on", true
	}
	m := w.m
	now := w.now()
	k := g.intn(100)
	switch {
	case k < 11:
		return g.putDeposit(w, now), true
	case k < 15:
		return g.putOther(w, now), true
	case k < 18:
		return g.revoke(w), true
	case k < 20:
		return g.transfer(w, now), true
	case k < 22:
		return g.snapshot(w), true
	case k < 25:
		if len(g.lines) > 0 {
			return g.lines[g.intn(len(g.lines))], true // delivered again, or older after newer
		}
		return g.putDeposit(w, now), true
	case k < 40:
		return g.typeCode(w, now), true
	case k < 44:
		return g.badCode(w), true
	case k < 45:
		if c := g.anyCode(w, false); c != "" {
			return fmt.Sprintf("stale %s %d", c, 10+g.intn(20)), true
		}
		return "tick", true
	case k < 51:
		return g.menu(w, now), true
	case k < 55:
		return g.command(w), true
	case k < 71:
		return g.door(w), true
	case k < 74:
		var open []int
		for n, p := range w.physical() {
			if p[0] {
				open = append(open, n)
			}
		}
		if len(open) == 0 {
			return g.door(w), true
		}
		n := open[g.intn(len(open))]
		return fmt.Sprintf("parcel %d %s", n, map[bool]string{true: "out", false: "in"}[w.physical()[n][1]]), true
	case k < 75:
		return fmt.Sprintf("flicker %d %d", 1+g.intn(m.n), 3+g.intn(20)), true
	case k < 79:
		if n := g.latched(w); n > 0 {
			return fmt.Sprintf("lock %d %s", n, []string{"ok", "jam", "jam"}[g.intn(3)]), true
		}
		return g.door(w), true
	case k < 80:
		w.hmu.Lock()
		on := w.failNext
		w.hmu.Unlock()
		if on {
			return "release-fails off", true
		}
		return "release-fails on", true
	case k < 82:
		for n := 1; n <= m.n; n++ {
			if m.sensorFault[n] && g.pct(50) {
				return fmt.Sprintf("sensor %d ok", n), true
			}
		}
		return fmt.Sprintf("sensor %d fault", 1+g.intn(m.n)), true
	case k < 86:
		return g.power(w), true
	case k < 91:
		if !w.trusted() && g.pct(50) {
			return "clock sane", true
		}
		return "clock " + []string{"+31s", "+3m", "+2h", "+25h", "+100h", "-2h", "-10m", "1970", "+10s", "+90s"}[g.intn(10)], true
	case k < 93:
		if w.storageOK {
			return "storage off", true
		}
		return "storage on", true
	}
	if g.pct(50) {
		return "tick", true
	}
	return "clock +" + []string{"5s", "20s", "45s"}[g.intn(3)], true
}

// offStep: the power is off; people use the doors meanwhile.
func (g *mgen) offStep(w *mworld) string {
	if g.pct(40) {
		return "power on"
	}
	n := 1 + g.intn(w.m.n)
	p := w.physical()[n]
	switch {
	case p[0] && g.pct(50):
		return fmt.Sprintf("parcel %d %s", n, map[bool]string{true: "out", false: "in"}[p[1]])
	case p[0]:
		return fmt.Sprintf("door %d close", n)
	case g.pct(30):
		return "clock +" + []string{"10s", "5m", "3h"}[g.intn(3)]
	}
	return fmt.Sprintf("door %d open", n)
}

func (g *mgen) envelope(snapshot bool, ops ...string) string {
	g.issued++
	head := "grants issued=" + modelTime(t0.Add(time.Duration(g.issued)*time.Second))
	if snapshot {
		head += " snapshot"
	}
	l := head + " | " + strings.Join(ops, " | ")
	g.lines = append(g.lines, l)
	return l
}

func (g *mgen) until(now time.Time) string {
	switch k := g.intn(40); {
	case k == 0:
		return "zero"
	case k == 1:
		return "absurd"
	case k == 2:
		return "none"
	case k == 3:
		return modelTime(now.Add(-time.Hour))
	}
	return modelTime(now.Add([]time.Duration{time.Hour, 24 * time.Hour, 72 * time.Hour, 5 * time.Minute, 2 * time.Minute}[g.intn(5)]))
}

// pendingCodes are codes a colliding put may take: grants' codes and the
// pending nested pickups'.
func (g *mgen) collidingCode(w *mworld) string {
	var cs []string
	for _, id := range w.m.ids {
		x := w.m.g[id]
		if x.put && !x.tomb {
			cs = append(cs, x.code)
			if x.pickup != nil {
				cs = append(cs, x.pickup.code, x.pickup.code, x.pickup.code)
			}
		}
	}
	if len(cs) == 0 {
		return g.code()
	}
	return cs[g.intn(len(cs))]
}

func (g *mgen) putDeposit(w *mworld, now time.Time) string {
	g.nextID++
	id := fmt.Sprintf("d%d", g.nextID)
	code := g.code()
	if g.pct(8) {
		code = g.collidingCode(w)
	}
	op := fmt.Sprintf("put id=%s v=1 act=deposit", id)
	if g.pct(25) {
		op += fmt.Sprintf(" comp=%d", 1+g.intn(w.m.n))
	} else {
		op += " size=" + []string{"S", "M", "L", "XL"}[g.intn(4)]
	}
	if g.pct(70) {
		op += " parcel=P" + id
	}
	op += " code=" + code
	if g.pct(5) {
		op += " from=" + modelTime(now.Add(time.Minute))
	}
	op += " until=" + g.until(now)
	if g.pct(80) {
		pc := g.code()
		switch {
		case g.pct(12):
			pc = g.collidingCode(w)
		case g.pct(3):
			pc = code
		}
		pu := modelTime(now.Add([]time.Duration{72 * time.Hour, time.Hour, 10 * time.Minute}[g.intn(3)]))
		if g.pct(4) {
			pu = "zero"
		}
		op += fmt.Sprintf(" pickup=%sp/%s/%s", id, pc, pu)
		if g.pct(10) {
			op += "/2"
		}
	} else if g.pct(20) {
		op += " uses=2"
	}
	g.lastPut[id] = op
	return g.envelope(false, op)
}

func (g *mgen) putOther(w *mworld, now time.Time) string {
	m := w.m
	var occ []int
	for n := 1; n <= m.n; n++ {
		if m.c[n].occupied {
			occ = append(occ, n)
		}
	}
	g.nextID++
	switch k := g.intn(3); {
	case k == 0 && len(occ) > 0:
		n := occ[g.intn(len(occ))]
		id := fmt.Sprintf("p%d", g.nextID)
		parcel := m.c[n].parcelID
		if parcel == "" || g.pct(20) {
			parcel = "PX" + id
		}
		op := fmt.Sprintf("put id=%s v=1 act=pickup comp=%d parcel=%s code=%s until=%s", id, n, parcel, g.code(), g.until(now))
		g.lastPut[id] = op
		return g.envelope(false, op)
	case k == 1 && len(occ) > 0:
		n := occ[g.intn(len(occ))]
		id := fmt.Sprintf("r%d", g.nextID)
		op := fmt.Sprintf("put id=%s v=1 act=reclaim comp=%d code=%s until=%s", id, n, g.code(), g.until(now))
		g.lastPut[id] = op
		return g.envelope(false, op)
	}
	return g.putService(w, now)
}

func (g *mgen) putService(w *mworld, now time.Time) string {
	id := fmt.Sprintf("s%d", g.nextID)
	comp := 0
	if g.pct(20) {
		comp = 1 + g.intn(w.m.n)
	}
	until := modelTime(now.Add([]time.Duration{2 * time.Hour, 2 * time.Minute, 40 * time.Second}[g.intn(3)]))
	op := fmt.Sprintf("put id=%s v=1 act=service comp=%d code=%s until=%s", id, comp, g.code(), until)
	g.lastPut[id] = op
	return g.envelope(false, op)
}

// knownIDs: every grant id the model knows, and the pending nested ones.
func (g *mgen) knownIDs(w *mworld) []string {
	ids := append([]string(nil), w.m.ids...)
	for _, id := range w.m.ids {
		if p := w.m.g[id].pickup; p != nil && w.m.g[p.id] == nil {
			ids = append(ids, p.id)
		}
	}
	return ids
}

func (g *mgen) revoke(w *mworld) string {
	ids := g.knownIDs(w)
	if w.m.menu != 0 && w.m.menuGrant != "" && g.pct(50) {
		ids = []string{w.m.menuGrant}
	}
	if len(ids) == 0 {
		return "tick"
	}
	id := ids[g.intn(len(ids))]
	var v int64 = 1
	if x := w.m.g[id]; x != nil {
		v = x.version + 1
		if g.pct(10) {
			v = x.version
		}
	}
	if v < 3 && g.pct(30) {
		v = 3 // above a nested pickup's deposit version
	}
	return g.envelope(false, fmt.Sprintf("revoke id=%s v=%d", id, v))
}

// transfer moves a deposit grant to a new holder and code.
func (g *mgen) transfer(w *mworld, now time.Time) string {
	var ids []string
	for _, id := range w.m.ids {
		if x := w.m.g[id]; x.put && !x.tomb && x.action == "deposit" && g.lastPut[id] != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return g.putDeposit(w, now)
	}
	id := ids[g.intn(len(ids))]
	x := w.m.g[id]
	op := g.lastPut[id]
	op = replaceField(op, "v", fmt.Sprint(x.version+1))
	op = replaceField(op, "code", g.code())
	g.lastPut[id] = op
	return g.envelope(false, op)
}

func replaceField(op, key, val string) string {
	f := strings.Fields(op)
	for i, x := range f {
		if strings.HasPrefix(x, key+"=") {
			f[i] = key + "=" + val
		}
	}
	return strings.Join(f, " ")
}

// snapshot: the central's complete set, which leaves one grant out.
func (g *mgen) snapshot(w *mworld) string {
	var ops []string
	var live []string
	for _, id := range w.m.ids {
		if x := w.m.g[id]; x.put && !x.tomb && g.lastPut[id] != "" {
			live = append(live, id)
		}
	}
	drop := ""
	if len(live) > 0 && g.pct(70) {
		drop = live[g.intn(len(live))]
	}
	for _, id := range live {
		if id != drop {
			ops = append(ops, g.lastPut[id])
		}
	}
	return g.envelope(true, ops...)
}

// anyCode: the code of a grant (or pending nested pickup); inForce: one
// that may open now.
func (g *mgen) anyCode(w *mworld, inForce bool) string {
	var cs []string
	now := w.now()
	for _, id := range w.m.ids {
		x := w.m.g[id]
		if x.action == "service" && x.comp == 0 && g.pct(70) {
			continue
		}
		if f, _ := w.m.force(x, now); inForce && f != 1 {
			continue
		}
		cs = append(cs, x.code)
		if x.pickup != nil && !inForce {
			cs = append(cs, x.pickup.code)
		}
		if !inForce {
			cs = append(cs, x.oldCodes...)
		}
	}
	if len(cs) == 0 {
		return ""
	}
	return cs[g.intn(len(cs))]
}

func (g *mgen) typeCode(w *mworld, now time.Time) string {
	c := g.anyCode(w, g.pct(65))
	if c == "" {
		c = g.anyCode(w, false)
	}
	if c == "" {
		return g.putDeposit(w, now)
	}
	return "keys **" + c + "#"
}

func (g *mgen) badCode(w *mworld) string {
	switch g.intn(4) {
	case 0, 1:
		return fmt.Sprintf("keys **0%05d#", g.intn(100000))
	case 2:
		if c := g.anyCode(w, false); c != "" {
			return "keys " + c[:1+g.intn(len(c)-1)]
		}
	}
	return "keys " + []string{"#", "*", "12#", "99999999999999#"}[g.intn(4)]
}

func (g *mgen) menu(w *mworld, now time.Time) string {
	m := w.m
	if m.menu == 0 {
		for _, id := range m.ids {
			if x := m.g[id]; x.action == "service" && x.comp == 0 && x.put && !x.tomb && g.pct(70) {
				return "keys **" + x.code + "#"
			}
		}
		g.nextID++
		return g.putService(w, now)
	}
	n := 1 + g.intn(m.n+1)
	switch g.intn(8) {
	case 0, 1, 2:
		return fmt.Sprintf("keys 1%02d#", n)
	case 3:
		return fmt.Sprintf("keys %d%02d#", 2+g.intn(2), n)
	case 4:
		return "keys 4"
	case 5:
		return "keys *"
	case 6:
		return "clock +" + []string{"45s", "3m", "10s"}[g.intn(3)]
	}
	return g.revoke(w)
}

func (g *mgen) command(w *mworld) string {
	var id string
	if len(g.cmds) > 0 && g.pct(20) {
		id = g.cmds[g.intn(len(g.cmds))]
	} else {
		g.nextCmd++
		id = fmt.Sprintf("c-%d", g.nextCmd)
		g.cmds = append(g.cmds, id)
	}
	n := 1 + g.intn(w.m.n)
	// During a session in progress, more often.
	for x := 1; x <= w.m.n; x++ {
		if w.m.c[x].sess != nil && g.pct(40) {
			n = x
		}
	}
	return fmt.Sprintf("cmd %s %s %d", id, []string{"open", "open", "disable", "enable"}[g.intn(4)], n)
}

// latched: a compartment released whose door did not open yet.
func (g *mgen) latched(w *mworld) int {
	phys := w.physical()
	var ns []int
	for n := 1; n <= w.m.n; n++ {
		if s := w.m.c[n].sess; s != nil && !s.opened && !phys[n][0] {
			ns = append(ns, n)
		}
	}
	if len(ns) == 0 {
		return 0
	}
	return ns[g.intn(len(ns))]
}

// door: the person opens a released door, or closes an open one (having
// put in or taken out the parcel, mostly), or forces one.
func (g *mgen) door(w *mworld) string {
	phys := w.physical()
	if n := g.latched(w); n > 0 && g.pct(75) {
		return fmt.Sprintf("door %d open", n)
	}
	var open []int
	for n := 1; n <= w.m.n; n++ {
		if phys[n][0] {
			open = append(open, n)
		}
	}
	if len(open) > 0 && g.pct(80) {
		n := open[g.intn(len(open))]
		if s := w.m.c[n].sess; s != nil && g.pct(80) {
			want := s.action == "deposit"
			if s.action == "command" || s.action == "service" {
				want = !phys[n][1]
			}
			if phys[n][1] != want {
				g.queue = append(g.queue, fmt.Sprintf("door %d close", n))
				return fmt.Sprintf("parcel %d %s", n, map[bool]string{true: "in", false: "out"}[want])
			}
		}
		return fmt.Sprintf("door %d close", n)
	}
	return fmt.Sprintf("door %d open", 1+g.intn(w.m.n))
}

func (g *mgen) power(w *mworld) string {
	if n := g.latched(w); n > 0 && g.pct(70) {
		// The power goes between the coil and the door: the person uses the
		// door while the board is down.
		s := w.m.c[n].sess
		move := "in"
		if s.action != "deposit" {
			move = "out"
		}
		g.queue = append(g.queue, fmt.Sprintf("door %d open", n))
		if g.pct(80) {
			g.queue = append(g.queue, fmt.Sprintf("parcel %d %s", n, move))
		}
		g.queue = append(g.queue, fmt.Sprintf("door %d close", n), "power on")
		return "power off"
	}
	if g.pct(50) {
		return "power off"
	}
	return "power cut"
}
