package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/openlocker/locker/controller/fsm"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
)

// Why a code that matched a grant cannot be used now. The text goes into
// grant_rejected traces.
var (
	errNotYet   = errors.New("grant not yet valid")
	errEnded    = errors.New("grant expired")
	errUsedUp   = errors.New("grant used up")
	errNoFree   = errors.New("no free compartment of that size")
	errNotReady = errors.New("compartment not ready")
	errNoParcel = errors.New("parcel not in its compartment")
	errInUse    = errors.New("grant already has a door open")
)

// key handles one key press. The typed code lives only in c.entry, is
// hashed on '#', and is wiped right after; it is never logged.
func (c *Controller) key(ctx context.Context, k byte) {
	now := c.now()
	c.capLockout(now)
	if now.Before(c.lockedTill) {
		c.clearEntry()
		c.showLocked()
		return
	}
	switch {
	case c.service != nil:
		c.serviceKey(ctx, k)
	case k >= '0' && k <= '9':
		if len(c.entry) >= c.opts.MaxCodeLen {
			return
		}
		c.entry = append(c.entry, k)
		c.entryAt = now
		c.msgUntil = time.Time{}
		c.show(c.text(msgCode, strings.Repeat("*", len(c.entry))))
	case k == '*':
		c.clearEntry()
		c.msgUntil = time.Time{}
		c.showIdle()
	case k == '#':
		if len(c.entry) == 0 {
			return
		}
		code := string(c.entry)
		c.clearEntry()
		if c.storeErr != nil {
			c.message(msgStorage, "") // no door could be recorded, so none is looked up
			return
		}
		if len(code) < c.opts.MinCodeLen {
			c.wrongCode(ctx)
			return
		}
		c.tryCode(ctx, wire.CodeHash(c.opts.LockerID, code))
	default:
		// A-D are reserved for the service menu's later pages.
	}
}

// clearEntry wipes the typed digits.
func (c *Controller) clearEntry() {
	for i := range c.entry {
		c.entry[i] = 0
	}
	c.entry = c.entry[:0]
}

// tryCode looks up the grant for a typed code and acts on it.
func (c *Controller) tryCode(ctx context.Context, hash string) {
	now := c.now()
	var grants []store.Grant
	err := c.st.View(ctx, func(tx *store.Tx) error {
		var err error
		grants, err = tx.GrantsByCode(hash)
		return err
	})
	if err != nil {
		c.log.Error("grant lookup", "err", err)
		c.message(msgStorage, "")
		return
	}
	if len(grants) == 0 {
		c.wrongCode(ctx)
		return
	}
	var why error
	for _, g := range grants {
		if err := usable(g, now); err != nil {
			why = err
			continue
		}
		why = c.use(ctx, g)
		if why == nil {
			c.resetFailures(ctx)
			return
		}
	}
	// A known code that cannot be used now: say why, in a trace (at most
	// one per grant per RejectedTraceEvery: a stale code typed over and over
	// must not write a trace per try) and on the display.
	g := grants[0]
	if last, ok := c.rejTraced[g.ID]; !ok || now.Sub(last) >= RejectedTraceEvery || now.Before(last) {
		if len(c.rejTraced) >= 1024 {
			clear(c.rejTraced)
		}
		c.rejTraced[g.ID] = now
		err = c.update(ctx, func(tx *store.Tx) error {
			return c.record(tx, wire.Trace{Type: fsm.GrantRejected.String(), GrantID: g.ID, Actor: g.Actor, Compartment: g.Compartment,
				Reason: why.Error(), Content: "Code for grant " + g.ID + " refused: " + why.Error()})
		})
		if err != nil {
			c.log.Error("grant_rejected not recorded", "err", err)
		}
	}
	switch {
	case errors.Is(why, errEnded) || errors.Is(why, errUsedUp) || errors.Is(why, errNotYet):
		// The code itself is stale: it counts towards the lockout like a
		// wrong code, so that typing it forever meets the lockout too.
		c.failure(ctx, msgNotValid)
	case errors.Is(why, errNoFree):
		c.message(msgNoFree, "")
	default:
		c.message(msgNotValid, "") // not usable just now (a door in use): not the code's fault
	}
}

// RejectedTraceEvery is the least time between two grant_rejected traces
// for one grant.
const RejectedTraceEvery = 10 * time.Minute

// usable says whether grant g may be used at now.
func usable(g store.Grant, now time.Time) error {
	switch {
	case g.Revoked:
		return errEnded
	case now.Before(g.ValidFrom):
		return errNotYet
	case g.ValidUntil.IsZero() || !now.Before(g.ValidUntil):
		return errEnded // (no grant is stored without an end; a zero one is not "no end")
	case g.UsesLeft == 0:
		return errUsedUp
	}
	return nil
}

var sizeRank = map[string]int{"S": 1, "M": 2, "L": 3, "XL": 4}

// use acts on a usable grant: picks the compartment and releases its lock.
func (c *Controller) use(ctx context.Context, g store.Grant) error {
	var target int
	var parcel string
	err := c.st.View(ctx, func(tx *store.Tx) error {
		switch g.Action {
		case "deposit":
			all, err := tx.Compartments()
			if err != nil {
				return err
			}
			for _, sc := range all {
				if sc.Session.Active() && sc.Session.GrantID == g.ID {
					return errInUse // one use, one open door
				}
			}
			if g.Compartment != 0 {
				sc, err := tx.Compartment(g.Compartment)
				if err != nil {
					return errNotReady
				}
				if sc.Disabled || sc.Session.Active() || !sc.State.Empty() {
					return errNotReady
				}
				target = sc.Number
			} else {
				// Reserved now, whatever the stored state says: a
				// reservation that began since the last tick (or on a
				// clock not trusted, where the tick refreshes none) is
				// not yet stored as reserved.
				reserved, err := tx.ReservedCompartments(c.now())
				if err != nil {
					return err
				}
				// The smallest free compartment that fits; the lowest number among equals.
				for _, sc := range all {
					if sc.State != "free" || reserved[sc.Number] || sc.Disabled || sc.Session.Active() || sc.DoorOpen || sc.ParcelPresent ||
						sizeRank[sc.Size] < sizeRank[g.Size] {
						continue
					}
					if target == 0 || sizeRank[sc.Size] < sizeRank[c.hw[target].Size] {
						target = sc.Number
					}
				}
				if target == 0 {
					return errNoFree
				}
			}
			parcel = g.ParcelID
		case "pickup", "reclaim":
			sc, err := tx.Compartment(g.Compartment)
			if err != nil {
				return errNoParcel
			}
			// The right is the parcel's it was issued for: named by the
			// central (parcel id), or bound when a deposit brought the
			// pickup into force (parcel seq). Neither: it opens nothing.
			if sc.Session.Active() || !sc.State.HoldsParcel() ||
				(g.ParcelID != "" && sc.ParcelID != g.ParcelID) ||
				(g.ParcelSeq != 0 && sc.ParcelSeq != g.ParcelSeq) ||
				(g.Action == "pickup" && g.ParcelID == "" && g.ParcelSeq == 0) {
				return errNoParcel
			}
			if sc.Disabled {
				return errNotReady
			}
			target, parcel = sc.Number, sc.ParcelID
		case "service":
			if g.Compartment == 0 {
				return nil
			}
			target = g.Compartment
		default:
			return fmt.Errorf("unknown action %q", g.Action)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if g.Action == "service" && target == 0 {
		c.enterService(g)
		return nil
	}
	s := store.Session{GrantID: g.ID, Action: fsm.Action(g.Action), Actor: g.Actor, Parcel: parcel}
	takeUse := g.Action == "pickup" || g.Action == "reclaim" || g.Action == "service"
	if err := c.release(ctx, target, s, takeUse); err != nil {
		if refused(err) {
			return errNotReady // a session in progress there, or the wrong state: nothing changed
		}
		c.log.Error("release not recorded: door stays shut", "compartment", target, "err", err)
		c.message(msgStorage, "")
		return nil
	}
	msg := msgServiceOpen
	switch g.Action {
	case "deposit":
		msg = msgDepositOpen
	case "pickup", "reclaim":
		msg = msgPickupOpen
	}
	c.message(msg, two(target))
	return nil
}

// wrongCode counts a wrong code (failure).
func (c *Controller) wrongCode(ctx context.Context) { c.failure(ctx, msgWrong) }

// failure counts a code that opened nothing, shows msg, and locks the
// keypad after LockoutAfter in a row, for LockoutBase doubled with each
// further lockout, up to LockoutMax.
func (c *Controller) failure(ctx context.Context, msg msgID) {
	now := c.now()
	c.failures++
	locked := false
	if c.lockouts > 0 && now.Sub(c.lockedTill) > c.opts.LockoutDecay {
		c.lockouts = 0 // a quiet day: the next lockout is short again
	}
	if c.failures >= c.opts.LockoutAfter {
		c.failures = 0
		c.lockouts++
		wait := c.opts.LockoutBase
		for i := 1; i < c.lockouts && wait < c.opts.LockoutMax; i++ {
			wait *= 2
		}
		if wait > c.opts.LockoutMax {
			wait = c.opts.LockoutMax
		}
		c.lockedTill = now.Add(wait)
		locked = true
	}
	err := c.update(ctx, func(tx *store.Tx) error {
		if err := c.saveKeypadState(tx); err != nil {
			return err
		}
		if !locked {
			return nil
		}
		return c.record(tx, wire.Trace{Type: fsm.KeypadLockout.String(),
			Content: fmt.Sprintf("Keypad locked for %s after %d wrong codes (lockout %d)",
				c.lockedTill.Sub(now).Round(time.Second), c.opts.LockoutAfter, c.lockouts)})
	})
	if err != nil {
		c.log.Error("keypad state not recorded", "err", err)
	}
	if locked {
		c.showLocked()
		return
	}
	c.message(msg, "")
}

// resetFailures ends a run of wrong codes: a code opened a door. The
// lockout level stays (it decays after LockoutDecay), so that someone who
// holds one valid code cannot use it to reset the doubling.
func (c *Controller) resetFailures(ctx context.Context) {
	if c.failures == 0 {
		return
	}
	c.failures = 0
	if err := c.update(ctx, c.saveKeypadState); err != nil {
		c.log.Error("keypad state not recorded", "err", err)
	}
}

func (c *Controller) saveKeypadState(tx *store.Tx) error {
	if err := tx.SetSetting("keypad.failures", strconv.Itoa(c.failures)); err != nil {
		return err
	}
	if err := tx.SetSetting("keypad.lockouts", strconv.Itoa(c.lockouts)); err != nil {
		return err
	}
	return tx.SetSetting("keypad.locked_until", c.lockedTill.UTC().Format(time.RFC3339Nano))
}

// show writes two lines to the display, skipping a rewrite of the same text.
func (c *Controller) show(l1, l2 string) {
	if c.display == [2]string{l1, l2} {
		return
	}
	c.display = [2]string{l1, l2}
	if err := c.cab.Show(l1, l2); err != nil {
		c.log.Warn("display", "err", err)
	}
}

// message shows a result for MessageTime, then the idle prompt returns.
func (c *Controller) message(id msgID, arg string) {
	c.show(c.text(id, arg))
	c.msgUntil = c.now().Add(c.opts.MessageTime)
}

func (c *Controller) showIdle() {
	if c.storeErr != nil {
		c.show(c.text(msgStorage, ""))
		return
	}
	if c.now().Before(c.lockedTill) {
		c.showLocked()
		return
	}
	c.show(c.text(msgIdle, ""))
}

func (c *Controller) showLocked() {
	left := c.lockedTill.Sub(c.now()).Round(time.Second)
	if left < time.Second {
		left = time.Second
	}
	c.show(c.text(msgLocked, waitText(left, c.opts.Language)))
}

// waitText is a short remaining time: "1m 30s", "45s", "2h 0m"; in
// Chinese "1分30秒".
func waitText(d time.Duration, lang string) string {
	d = d.Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	if lang == "zh" { // two digits a number: Chinese characters stay on word boundaries
		switch {
		case h > 0:
			return fmt.Sprintf("%02d小时%02d分", h, m)
		case m > 0:
			return fmt.Sprintf("%02d分%02d秒", m, s)
		}
		return fmt.Sprintf("%02d秒", s)
	}
	units := [3]string{"h ", "m ", "s"}
	switch {
	case h > 0:
		return fmt.Sprintf("%d%s%d%s", h, units[0], m, strings.TrimSpace(units[1]))
	case m > 0:
		return fmt.Sprintf("%d%s%02d%s", m, units[1], s, units[2])
	}
	return fmt.Sprintf("%d%s", s, units[2])
}

// capLockout keeps the keypad's lockout within LockoutMax of now. A
// lockout taken while the clock was ahead (a wrong network time, trusted
// because it is after MinSaneTime) would otherwise outlive the clock's
// correction by as much as it was ahead: a year without a working keypad.
// The lockout in force is never longer than one taken now.
func (c *Controller) capLockout(now time.Time) {
	if most := now.Add(c.opts.LockoutMax); c.lockedTill.After(most) {
		c.lockedTill = most
	}
}
