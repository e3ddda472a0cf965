package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/openlocker/locker/controller/fsm"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

// The handlers of this file are the only code that changes a compartment:
// each reads the compartment in a transaction, asks the state machine
// (fsm.Step) what it becomes, and step writes the answer — the traces, the
// effects on grants, the compartment — in that same transaction. A coil
// fires only after the transaction that recorded its release committed.

// step runs one state-machine step on sc inside tx: it records the traces
// (a deposit's `deposited` seq names the parcel: the compartment's
// ParcelSeq), applies the effects on grants, and stores the compartment.
func (c *Controller) step(tx *store.Tx, sc store.Compartment, ev fsm.Event) (fsm.Result, error) {
	res, err := fsm.Step(sc, ev)
	if err != nil {
		return res, err
	}
	next := res.Next
	for _, tr := range res.Traces {
		seq, err := c.recordSeq(tx, tr)
		if err != nil {
			return res, err
		}
		if tr.Type == fsm.Deposited.String() {
			next.ParcelSeq = seq
		}
	}
	for _, e := range res.Effects {
		if err := c.effect(tx, e, next); err != nil {
			return res, err
		}
	}
	res.Next = next
	return res, c.putCompartment(tx, next)
}

// effect applies one effect of a step on the grants, inside tx. Pulse is
// the caller's, after commit.
func (c *Controller) effect(tx *store.Tx, e fsm.Effect, sc store.Compartment) error {
	switch e.Kind {
	case fsm.TakeUse:
		g, err := tx.Grant(e.GrantID)
		if err != nil {
			return err
		}
		if g.UsesLeft > 0 { // unlimited (-1) grants are not written
			g.UsesLeft--
			c.ended(&g)
			return tx.SetUses(g.ID, g.UsesLeft, g.EndedAt)
		}
	case fsm.ReturnUse:
		g, err := tx.Grant(e.GrantID)
		if err != nil || g.Revoked || g.UsesLeft < 0 {
			return nil
		}
		return tx.SetUses(g.ID, g.UsesLeft+1, time.Time{})
	case fsm.DepositDone:
		g, err := tx.Grant(e.GrantID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && g.Revoked) {
			return nil
		}
		if err != nil {
			return err
		}
		uses, ended := g.UsesLeft, g.EndedAt
		if g.UsesLeft > 0 {
			g.UsesLeft--
		}
		c.ended(&g)
		if g.UsesLeft != uses || !g.EndedAt.Equal(ended) {
			if err := tx.SetUses(g.ID, g.UsesLeft, g.EndedAt); err != nil {
				return err
			}
		}
		if err := tx.BindReclaims(sc.Number, sc.ParcelSeq); err != nil {
			return err
		}
		return c.activatePickup(tx, g, sc)
	case fsm.ParcelGone:
		g, err := tx.Grant(e.GrantID)
		if err == nil && !g.Revoked && (g.UsesLeft != 0 || g.EndedAt.IsZero()) {
			g.UsesLeft = 0
			c.ended(&g)
			return tx.SetUses(g.ID, g.UsesLeft, g.EndedAt)
		}
	}
	return nil
}

// ended notes when g's last use was taken, for the purge.
func (c *Controller) ended(g *store.Grant) {
	if g.UsesLeft == 0 && g.EndedAt.IsZero() {
		g.EndedAt = c.now()
	}
}

// pickupSpec is the nested pickup grant as stored with its deposit grant:
// hashes and the masked holder only.
type pickupSpec struct {
	GrantID    string    `json:"grant_id,omitempty"`
	Actor      string    `json:"actor,omitempty"`
	CodeHash   string    `json:"code_hash,omitempty"`
	ValidFrom  time.Time `json:"valid_from,omitzero"`
	ValidUntil time.Time `json:"valid_until,omitempty"`
	Uses       int       `json:"uses"`
}

// activatePickup brings the deposit grant's nested pickup grant into force
// for the compartment the parcel went into, bound to that parcel (its
// ParcelSeq), unless the central already sent a newer version of it. Bound
// to the parcel, the code opens nothing once the parcel is gone, whether or
// not the central named a parcel id.
func (c *Controller) activatePickup(tx *store.Tx, dep store.Grant, sc store.Compartment) error {
	if dep.Pickup == "" {
		return nil
	}
	var p pickupSpec
	if err := json.Unmarshal([]byte(dep.Pickup), &p); err != nil {
		return fmt.Errorf("nested pickup of %s: %w", dep.ID, err)
	}
	old, err := tx.Grant(p.GrantID)
	if err == nil && old.Version >= dep.Version {
		return nil // the central sent this grant itself, or revoked it: that wins
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	// The code was kept for this pickup while its deposit grant was in
	// force; a deposit grant that ended while its door stood open let it
	// go, and another grant may hold it now: then the pickup does not come
	// into force (one code, one parcel), and the trace says so.
	if taken, err := (dbView{tx}).codeInUse(p.CodeHash, p.GrantID, p.GrantID, c.now()); err != nil {
		return err
	} else if taken {
		return c.record(tx, wire.Trace{Type: fsm.GrantRejected.String(), GrantID: p.GrantID, Actor: p.Actor, Compartment: sc.Number,
			Reason: "pickup code in use by another grant", ParcelID: dep.ParcelID,
			Content: "Pickup grant " + p.GrantID + " not brought into force: its code is in use by another grant"})
	}
	from := p.ValidFrom
	if from.IsZero() {
		from = c.now()
	}
	return tx.PutGrant(store.Grant{
		ID: p.GrantID, Version: dep.Version, Action: "pickup", Compartment: sc.Number, ParcelID: dep.ParcelID,
		ParcelSeq: sc.ParcelSeq, IssuedAt: dep.IssuedAt,
		Actor: p.Actor, CodeHash: p.CodeHash, ValidFrom: from, ValidUntil: p.ValidUntil, UsesLeft: p.Uses,
	})
}

// refreshReservations sets free compartments named by a deposit grant in
// force to reserved, and reserved ones that are no longer named to free.
func (c *Controller) refreshReservations(tx *store.Tx) error {
	all, err := tx.Compartments()
	if err != nil {
		return err
	}
	return c.refreshReservationsOf(tx, all)
}

// refreshReservationsOf is refreshReservations on all, every compartment as
// read in tx.
func (c *Controller) refreshReservationsOf(tx *store.Tx, all []store.Compartment) error {
	reserved, err := tx.ReservedCompartments(c.now())
	if err != nil {
		return err
	}
	for _, sc := range all {
		var ev fsm.Event
		switch {
		case sc.State == fsm.Free && reserved[sc.Number]:
			ev.Kind = fsm.Reserve
		case sc.State == fsm.Reserved && !reserved[sc.Number]:
			ev.Kind = fsm.Unreserve
		default:
			continue
		}
		if _, err := c.step(tx, sc, ev); err != nil {
			return err
		}
	}
	return nil
}

// release records the intent to open compartment n (durably, with its
// trace) and only then fires the coil. It refuses, changing nothing, a
// release that would replace a session in progress (fsm.ErrBusy), a
// deposit into a compartment that is not empty and a pickup from one that
// holds no parcel.
func (c *Controller) release(ctx context.Context, n int, s store.Session, takeUse bool) error {
	s.At = c.now()
	err := c.update(ctx, func(tx *store.Tx) error {
		sc, err := tx.Compartment(n)
		if err != nil {
			return err
		}
		_, err = c.step(tx, sc, fsm.Event{Kind: fsm.Release, Session: s, TakeUse: takeUse})
		return err
	})
	if err != nil {
		return err
	}
	delete(c.late, n) // a new release: an earlier one's late opening is past
	for m, l := range c.late {
		// A new release for the same grant (a courier typing the code
		// again after a lock fault) ends the wait for the old door: its
		// late opening would give one use a second door.
		if l.s.GrantID == s.GrantID {
			delete(c.late, m)
		}
	}
	if err := c.cab.Release(n); err != nil {
		c.lockFault(ctx, n, err.Error(), true)
		return err
	}
	c.led(n, true)
	return nil
}

// refused says whether err is the state machine refusing a release (as
// opposed to the storage failing).
func refused(err error) bool {
	return errors.Is(err, fsm.ErrBusy) || errors.Is(err, fsm.ErrNotEmpty) || errors.Is(err, fsm.ErrNoParcel)
}

// handle is the loop's reaction to one hardware event.
func (c *Controller) handle(ctx context.Context, ev hal.Event) {
	switch ev.Kind {
	case hal.KeyPressed:
		c.key(ctx, ev.Key)
		c.keys.Add(1)
	case hal.DoorChanged:
		c.door(ctx, ev.Compartment, ev.On, ev.At)
	case hal.ParcelChanged:
		c.parcel(ctx, ev.Compartment, ev.On)
	case hal.LockReleased:
		c.released(ctx, ev)
	case hal.SensorFault:
		c.sensorFault(ctx, ev.Compartment, ev.Source, ev.Err)
	case hal.SensorRecovered:
		c.sensorFault(ctx, ev.Compartment, ev.Source, nil)
		c.bootLate(ctx) // a board that answers again may have been unread since start
	}
}

// Stray parcel reports (a parcel in or out with nobody let in) are judged
// at once, StrayReports of them per compartment per StrayWindow; a sensor
// that changes faster is noted quietly and judged once it has held still
// for two housekeeping ticks (counted in ticks, not on the clock, which may
// not be trusted): a flickering occupancy sensor gives a bounded number of
// traces, and the record ends right.
const (
	StrayReports = 2
	StrayWindow  = time.Minute
)

// parcel reacts to a debounced occupancy sensor change.
func (c *Controller) parcel(ctx context.Context, n int, present bool) {
	now := c.now()
	err := c.update(ctx, func(tx *store.Tx) error {
		sc, err := tx.Compartment(n)
		if err != nil {
			return err
		}
		if sc.Session.Active() && sc.DoorOpen {
			// Someone stands at the open door of a release: the reading
			// changes nothing but itself (fsm.Step records no trace), and
			// the door's close records the reading it finds then (door),
			// as the start-up does after a power cut. Not written: one
			// durable commit less per deposit and per pickup.
			return nil
		}
		b := c.strays[n]
		if now.Sub(b.since) >= StrayWindow || now.Before(b.since) {
			b = strayBudget{since: now}
		}
		quiet := !sc.Session.Active() && b.used >= StrayReports
		res, err := c.step(tx, sc, fsm.Event{Kind: fsm.ParcelChange, Present: present, Quiet: quiet})
		if err != nil {
			return err
		}
		if quiet {
			b.due = c.ticks + 1
		} else if len(res.Traces) > 0 {
			b.used++
		}
		c.strays[n] = b
		if res.Next.State == sc.State {
			return nil
		}
		return c.refreshReservations(tx)
	})
	if err != nil {
		c.log.Error("occupancy change not recorded", "compartment", n, "err", err)
	}
}

// strayBudget counts a compartment's stray parcel reports in the current
// StrayWindow; due is one more than the housekeeping tick count at which a
// reading was last noted quietly (0: none).
type strayBudget struct {
	since time.Time
	used  int
	due   uint64
}

// judgeStrays judges, in tx, the occupancy readings noted quietly that
// have held still since the tick before the last.
func (c *Controller) judgeStrays(tx *store.Tx) error {
	for n, b := range c.strays {
		if b.due == 0 || c.ticks < b.due+1 {
			continue
		}
		sc, err := tx.Compartment(n)
		if err != nil {
			return err
		}
		b.due = 0
		c.strays[n] = b
		if _, err := c.step(tx, sc, fsm.Event{Kind: fsm.Judge}); err != nil {
			return err
		}
	}
	return nil
}

// released reacts to the end of a release: a door that did not open is a
// lock fault; one that did clears an earlier lock fault.
func (c *Controller) released(ctx context.Context, ev hal.Event) {
	n := ev.Compartment
	// The self-test's result goes last, after what the release itself records.
	defer c.selfTestResult(ctx, n, ev.Err)
	switch {
	case ev.Err == nil:
		err := c.update(ctx, func(tx *store.Tx) error {
			sc, err := tx.Compartment(n)
			if err != nil || sc.State != fsm.Faulted || sc.Fault != fsm.LockFault {
				return err
			}
			if _, err := c.step(tx, sc, fsm.Event{Kind: fsm.LockWorked}); err != nil {
				return err
			}
			return c.refreshReservations(tx)
		})
		if err != nil {
			c.log.Error("release result not recorded", "compartment", n, "err", err)
		}
	case errors.Is(ev.Err, hal.ErrHalted):
		c.log.Warn("release dropped: hardware halted", "compartment", n)
	default:
		// hal gave up on the door: a lock board may still have acted, its
		// status read too late (I15). An opening soon after is this
		// release's (door).
		if s := c.lockFault(ctx, n, ev.Err.Error(), true); s.Active() {
			c.late[n] = lateRelease{s: s, at: c.now()}
		}
	}
}

// sensorFault records a sensor that cannot be trusted (err set) or that
// reads sanely again (err nil). n is 0 for a fault of no one compartment.
// A free compartment with a faulty sensor is taken out of use until it
// recovers.
func (c *Controller) sensorFault(ctx context.Context, n int, source string, cause error) {
	err := c.update(ctx, func(tx *store.Tx) error {
		if n == 0 {
			return c.record(tx, cabinetSensorTrace(source, cause))
		}
		sc, err := tx.Compartment(n)
		if err != nil {
			return err
		}
		// A compartment has up to three sources of sensor faults (door,
		// occupancy, coil): it is in use again only once all have recovered.
		faults := c.sensorFaults[n]
		if faults == nil {
			faults = map[string]bool{}
			c.sensorFaults[n] = faults
		}
		ev := fsm.Event{Kind: fsm.SensorOK, Source: source}
		if cause != nil {
			faults[source] = true
			ev = fsm.Event{Kind: fsm.SensorFailed, Reason: cause.Error(), Source: source}
		} else {
			delete(faults, source)
			ev.Still = len(faults) > 0
		}
		if _, err := c.step(tx, sc, ev); err != nil {
			return err
		}
		return c.refreshReservations(tx)
	})
	if err != nil {
		if c.storeErr != nil {
			c.sensorLater(n, source, cause)
			return // resync records it
		}
		c.log.Error("sensor fault not recorded", "compartment", n, "err", err)
	}
}

// cabinetSensorTrace is the trace of a fault (cause set) or recovery of a
// source of no one compartment: an expander ("expander X1") or a lock board
// ("board BUS1/2"). Both begin their reason with the source, so that the
// central can pair each recovery with its fault (docs/protocol.md).
func cabinetSensorTrace(source string, cause error) wire.Trace {
	if cause == nil {
		if source == "" {
			return wire.Trace{Type: fsm.SensorRecovered.String(), Content: "Sensor reads sanely again"}
		}
		return wire.Trace{Type: fsm.SensorRecovered.String(), Reason: source,
			Content: strings.ToUpper(source[:1]) + source[1:] + " reads sanely again"}
	}
	reason := cause.Error()
	if source != "" {
		reason = source + ": " + reason
	}
	return wire.Trace{Type: fsm.SensorFaulted.String(), Reason: reason, Content: "Sensor fault: " + reason}
}

// led lights or darkens compartment n's status LED, where the cabinet has one.
func (c *Controller) led(n int, on bool) {
	if ind, ok := c.cab.(hal.Indicators); ok {
		if err := ind.SetLED(n, on); err != nil {
			c.log.Warn("status LED", "compartment", n, "err", err)
		}
	}
}

// door reacts to a debounced door sensor change.
//
// at is when hal saw the change. A door that reads closed less than
// MinOpenTime after it opened for a release contradicts the lock — nobody
// takes or puts a parcel that fast — so the sensor is not believed: that
// gives sensor_fault, and the session stays open until the door is seen
// to open and close again.
func (c *Controller) door(ctx context.Context, n int, open bool, at time.Time) {
	var res fsm.Result
	var doubted, late bool
	openedAt, seen := c.openedAt[n]
	if open {
		c.openedAt[n] = at
	} else {
		delete(c.openedAt, n)
	}
	err := c.update(ctx, func(tx *store.Tx) error {
		sc, err := tx.Compartment(n)
		if err != nil {
			return err
		}
		if sc.DoorOpen == open {
			return nil
		}
		s := sc.Session
		if open {
			ev := fsm.Event{Kind: fsm.DoorOpen}
			if l, ok := c.late[n]; ok && !s.Active() && c.now().Sub(l.at) <= LateOpenWithin {
				// A late unlock: the release hal gave up on opened it
				// (lateOpen checks the compartment still fits it).
				ev = fsm.Event{Kind: fsm.LateOpen, Session: l.s}
			}
			if res, err = c.step(tx, sc, ev); err != nil || ev.Kind == fsm.DoorOpen {
				return err
			}
			late = res.Next.Session.Active()
			return c.refreshReservations(tx) // its lock fault may be cleared
		}
		if s.Active() && s.Opened && seen && !at.IsZero() && at.Sub(openedAt) < c.opts.MinOpenTime {
			doubted = true // the door stays open as far as the locker knows
			_, err := c.step(tx, sc, fsm.Event{Kind: fsm.DoorDoubted,
				Reason: fmt.Sprintf("door read closed %s after it opened for a release", at.Sub(openedAt).Round(time.Millisecond))})
			return err
		}
		// The occupancy sensor's latest reading decides the deposit or
		// pickup: its event may come just after the door's.
		present := sc.ParcelPresent
		if p, ok, err := c.cab.ParcelPresent(n); err == nil && ok {
			present = p
		}
		res, err = c.step(tx, sc, fsm.Event{Kind: fsm.DoorClose, Present: present, HasOccupancy: c.hw[n].HasOccupancy})
		if err != nil {
			return err
		}
		return c.refreshReservations(tx)
	})
	if open {
		delete(c.late, n) // an opening ends the wait for one, credited or not
	}
	if late {
		// The door opened when the board acted, before hal could read it
		// (the board did not answer meanwhile): when is unknown, and a
		// close soon after hal saw it open does not contradict the lock.
		delete(c.openedAt, n)
	}
	if err != nil {
		c.log.Error("door change not recorded", "compartment", n, "open", open, "err", err)
		return
	}
	switch {
	case doubted:
	case open:
		c.openSince[n] = c.now()
	default:
		delete(c.openSince, n)
		delete(c.leftAlarm, n)
		c.led(n, false)
	}
	if !res.Finished {
		return
	}
	s, st := res.Ended, res.Next.State
	switch {
	case s.Action == fsm.Deposit && st == fsm.Occupied:
		c.message(msgDeposited, "")
	case s.Action == fsm.Deposit:
		c.message(msgCancelled, "")
	case s.Action.TakesParcel() && st == fsm.Free:
		c.message(msgPickedUp, "")
	case s.Action.TakesParcel():
		c.message(msgIncomplete, two(n))
	}
}
