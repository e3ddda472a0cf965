package controller

// The invariants of model_test.go, checked after every action.

import (
	"fmt"
	"time"

	"github.com/openlocker/locker/controller/store"
)

var modelStates = map[string]bool{"free": true, "reserved": true, "occupied": true, "expired": true, "fault": true}

func (w *mworld) checkAll(allowed *mallow, _ string) {
	m := w.m
	rels, hookErr := w.newReleases()
	if hookErr != "" {
		w.fail("I2", "%s", hookErr)
	}
	trs := w.newTraces()

	// I7: seq gapless from 1, across power cuts.
	for _, tr := range trs {
		if tr.Seq != m.lastSeq+1 {
			w.fail("I7", "trace %s has seq %d after %d", tr.Type, tr.Seq, m.lastSeq)
		}
		m.lastSeq = tr.Seq
	}
	if w.powered && (len(trs) > 0 || w.outboxUnchecked) {
		w.checkOutbox()
	}

	// I1, I3, I5: every release is one the model allows.
	used := map[int]bool{}
	for _, rel := range rels {
		grant := "?"
		for i, tr := range trs {
			if tr.Type == "lock_released" && tr.Compartment == rel.n && !used[i] {
				used[i], grant = true, tr.GrantID
				break
			}
		}
		switch {
		case allowed == nil:
			w.fail("I1", "lock %d released (for %q) by a step that may open nothing", rel.n, grant)
		case allowed.any:
		case allowed.targets[rel.n] != "" && (allowed.targets[rel.n] == grant || allowed.kind == "command"):
		default:
			inv, why := "I1", fmt.Sprintf("nothing allowed (%s)", allowed.why[1])
			if d, ok := allowed.deny[rel.n]; ok {
				inv, why = d[0], d[1]
			} else if allowed.why[0] != "" {
				inv = allowed.why[0]
			}
			if id := allowed.targets[rel.n]; id != "" && id != grant {
				inv, why = "I1", fmt.Sprintf("released for %q, the model's grant for that door is %s", grant, id)
			}
			w.fail(inv, "%s: lock %d released for %q: %s", allowed.kind, rel.n, grant, why)
		}
	}
	// A deposit moves on once, when its first door failed: then two coils.
	if allowed != nil && allowed.code && len(rels) > 1 && (len(rels) > 2 || !rels[0].failed) {
		w.fail("I3", "%s: one code opened %d doors", allowed.kind, len(rels))
	}

	// Fold the traces into the model.
	for _, tr := range trs {
		m.fold(w, tr)
	}
	if len(trs) > 0 && w.trusted() {
		// A trace on a trusted clock records it, and empties the
		// estimate recorded while it was not (controller/clock.go).
		m.lastTrustedWrite, m.maxEstimate = w.r.clock.Now(), time.Time{}
	}

	if !w.powered {
		return
	}
	// I9: the estimate of an untrusted clock.
	if !w.trusted() {
		est := w.r.c.Now()
		if !m.lastEstimate.IsZero() && est.Before(m.lastEstimate) {
			w.fail("I9", "the estimated time went back from %s to %s", modelTime(m.lastEstimate), modelTime(est))
		}
		m.lastEstimate = est
		// A start counts on from the last trusted time recorded, or from
		// the estimate recorded since (hourly, on a trace or a tick) when
		// later: never from an estimate above any this run or an earlier
		// one showed since the last trusted record.
		base := m.lastTrustedWrite
		if m.maxEstimate.After(base) {
			base = m.maxEstimate
		}
		elapsed := max(0, w.r.clock.Now().Sub(m.bootClock))
		lo, hi := m.lastTrustedWrite.Add(-time.Hour-tol), base.Add(elapsed+time.Hour+tol) // the marks are kept to the hour
		if est.Before(lo) || est.After(hi) {
			w.fail("I9", "the estimated time is %s; the last trusted time recorded was %s, the highest estimate since %s, %v ago on the board's clock",
				modelTime(est), modelTime(m.lastTrustedWrite), modelTime(m.maxEstimate), elapsed)
		}
		if est.After(m.maxEstimate) {
			m.maxEstimate = est
		}
	} else {
		m.lastEstimate = time.Time{}
	}

	// I8 and I4, once settled (storage up).
	phys := w.physical()
	comps := w.storedCompartments()
	if len(comps) != m.n {
		w.fail("I8", "%d compartments stored, %d wired", len(comps), m.n)
	}
	for _, sc := range comps {
		n := sc.Number
		switch {
		case !modelStates[string(sc.State)]:
			w.fail("I8", "compartment %d in unknown state %q", n, sc.State)
		case sc.ParcelID != "" && sc.State != "occupied" && sc.State != "expired":
			w.fail("I8", "compartment %d has parcel id %q in state %s", n, sc.ParcelID, sc.State)
		case (sc.State == "fault") != (sc.Fault != ""):
			w.fail("I8", "compartment %d in state %s with fault reason %q", n, sc.State, sc.Fault)
		}
		if !w.storageOK || m.sensorFault[n] || phys[n][0] {
			continue
		}
		if c := m.c[n]; c.present != phys[n][1] {
			w.fail("I4", "compartment %d: a parcel is %s, but the record says %s (no deposited/picked_up/reclaimed/parcel_found/parcel_missing explains it)",
				n, presence(phys[n][1]), presence(c.present))
		}
		if sc.ParcelPresent != phys[n][1] {
			w.fail("I8", "compartment %d: the parcel is %s, the controller's view says %s", n, presence(phys[n][1]), presence(sc.ParcelPresent))
		}
		if phys[n][1] && (sc.State == "free" || sc.State == "reserved") {
			w.fail("I8", "compartment %d holds a parcel behind its closed door, and is %s", n, sc.State)
		}
	}
}

func presence(in bool) string {
	if in {
		return "in"
	}
	return "out"
}

// checkOutbox checks I7 on the stored outbox: it holds exactly the seqs
// 1..lastSeq. checkAll calls it after a boot and after every step that
// recorded a trace, and runModel after the last step: a step that
// records nothing has no business with the outbox, and if it changed it
// all the same the next check sees it. Reading the whole outbox at every step made a sequence
// quadratic in its length; this reads only the events stored since the
// last check, and counts the rest: seqs are the outbox's unique keys, so
// with the smallest at least 1, the events up to outboxChecked all there
// (the count) and the ones after it in order, the outbox is 1..lastSeq.
func (w *mworld) checkOutbox() {
	m := w.m
	var first store.OutboxEvent
	var found bool
	var n int
	var fresh []store.OutboxEvent
	err := w.r.st.View(w.r.ctx, func(tx *store.Tx) error {
		var err error
		if first, found, err = tx.OldestPending(); err != nil {
			return err
		}
		if n, err = tx.OutboxLen(); err != nil {
			return err
		}
		fresh, err = tx.Pending(w.outboxChecked, 1<<20)
		return err
	})
	if err != nil {
		w.t.Fatalf("reading the outbox: %v", err)
	}
	if found && first.Seq < 1 {
		w.fail("I7", "the outbox holds seq %d", first.Seq)
	}
	for i, e := range fresh {
		if want := w.outboxChecked + int64(i+1); e.Seq != want {
			w.fail("I7", "outbox position %d holds seq %d", want, e.Seq)
			return
		}
	}
	if int64(n) != m.lastSeq || w.outboxChecked+int64(len(fresh)) != m.lastSeq {
		w.fail("I7", "the outbox holds %d events (%d after seq %d), the traces went up to %d", n, len(fresh), w.outboxChecked, m.lastSeq)
		return
	}
	w.outboxChecked = m.lastSeq
	w.outboxUnchecked = false
}

// storedCompartments reads the compartments from the store, or gives the
// ones read last when the store made no transaction since: the rows
// change only inside Store.Update (its Updates count), and a restart
// opens another store. The checks run all the same on what it returns.
// checkAll runs when the step has settled: no Update is in progress.
func (w *mworld) storedCompartments() []store.Compartment {
	if w.comps.st == w.r.st && w.comps.updates == w.r.st.Updates() && w.comps.rows != nil {
		return w.comps.rows
	}
	updates := w.r.st.Updates()
	var comps []store.Compartment
	w.readStore(func(tx *store.Tx) error { var err error; comps, err = tx.Compartments(); return err })
	w.comps.st, w.comps.updates, w.comps.rows = w.r.st, updates, comps
	return comps
}
