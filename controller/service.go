package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/openlocker/locker/controller/fsm"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
)

// The service menu, opened by a service code: 1 opens a door, 2 disables
// a compartment, 3 enables one, 4 runs the self-test; * leaves. Every
// action is a trace naming the masked technician.
type serviceMode struct {
	grantID, actor string
	codeHash       string // the code that opened the menu: a transfer (a put with another code) ends it
	choice         byte   // 0: the menu; '1'..'3': waiting for a compartment number
}

func (c *Controller) enterService(g store.Grant) {
	c.service = &serviceMode{grantID: g.ID, actor: g.Actor, codeHash: g.CodeHash}
	c.entryAt = c.now()
	c.showServiceMenu()
}

func (c *Controller) showServiceMenu() {
	c.msgUntil = time.Time{}
	c.show(c.text(msgServiceMenu, ""))
}

func (c *Controller) serviceKey(ctx context.Context, k byte) {
	sm := c.service
	c.entryAt = c.now()
	if k != '*' && !c.serviceGrantInForce(ctx) {
		// The grant ended (revoked, transferred, past valid_until) while
		// the menu was open: the menu ends with it, before the key acts.
		c.clearEntry()
		c.service = nil
		c.message(msgNotValid, "")
		return
	}
	if k == '*' {
		c.clearEntry()
		if sm.choice != 0 {
			sm.choice = 0
			c.showServiceMenu()
			return
		}
		c.service = nil
		c.showIdle()
		return
	}
	if sm.choice == 0 {
		switch k {
		case '1', '2', '3':
			sm.choice = k
			c.show(c.text(msgServiceDoor, ""))
		case '4':
			if _, err := c.startSelfTest(ctx, true, sm.actor, nil); err != nil {
				c.log.Warn("self-test", "err", err)
			}
		}
		return
	}
	switch {
	case k >= '0' && k <= '9' && len(c.entry) < 3:
		c.entry = append(c.entry, k)
		c.show(c.text(msgServiceDoor, string(c.entry)))
	case k == '#':
		n, err := strconv.Atoi(string(c.entry))
		c.clearEntry()
		choice := sm.choice
		sm.choice = 0
		if _, wired := c.hw[n]; err != nil || !wired {
			c.message(msgNoSuchDoor, "")
			return
		}
		c.serviceAction(ctx, choice, n)
	}
}

// serviceGrantInForce says whether the grant that opened the service menu
// is still in force now, for the code that opened the menu: every action of
// the menu checks it again, so that a menu left open outlives no revoke, no
// transfer and no valid_until.
func (c *Controller) serviceGrantInForce(ctx context.Context) bool {
	var g store.Grant
	err := c.st.View(ctx, func(tx *store.Tx) error {
		var err error
		g, err = tx.Grant(c.service.grantID)
		return err
	})
	return err == nil && g.Action == "service" && g.Compartment == 0 && g.CodeHash == c.service.codeHash &&
		usable(g, c.now()) == nil
}

// serviceAction carries out a menu choice on compartment n.
func (c *Controller) serviceAction(ctx context.Context, choice byte, n int) {
	sm := c.service
	if choice == '1' {
		// One of the grant's uses per door opened, as for a service code
		// of one compartment and the control API: a one-use code opened
		// every door of the cabinet from the menu, again and again. A
		// grant without uses (unlimited) is not counted down.
		s := store.Session{GrantID: sm.grantID, Action: fsm.Service, Actor: sm.actor}
		if err := c.release(ctx, n, s, true); err != nil {
			if refused(err) {
				c.message(msgDoorBusy, two(n)) // a deposit or pickup is in progress there
				return
			}
			c.log.Error("service release not recorded: door stays shut", "compartment", n, "err", err)
			c.message(msgStorage, "")
			return
		}
		c.message(msgServiceOpen, two(n))
		return
	}
	disable := choice == '2'
	err := c.update(ctx, func(tx *store.Tx) error {
		sc, err := tx.Compartment(n)
		if err != nil {
			return err
		}
		kind := fsm.Enable
		if disable {
			kind = fsm.Disable
		}
		if _, err := c.step(tx, sc, fsm.Event{Kind: kind, GrantID: sm.grantID, Actor: sm.actor, ByTechnician: true}); err != nil {
			return err
		}
		return c.refreshReservations(tx)
	})
	if err != nil {
		c.log.Error("service action not recorded", "compartment", n, "err", err)
		c.message(msgStorage, "")
		return
	}
	if disable {
		c.message(msgDisabled, two(n))
	} else {
		c.message(msgEnabled, two(n))
	}
}

// ErrNotAuthorized: the service code matches no service grant in force
// for that compartment.
var ErrNotAuthorized = errors.New("controller: not a service code in force for that compartment")

// ServiceOpen opens compartment n for a technician who gives a service
// code (lockerctl open): the code must match a service grant in force,
// for that compartment if the grant names one. It is hashed at once and
// never kept. A wrong code counts towards the keypad lockout.
func (c *Controller) ServiceOpen(ctx context.Context, code string, n int) error {
	var err error
	derr := c.do(ctx, func() { err = c.serviceOpen(ctx, code, n) })
	if derr != nil {
		return derr
	}
	return err
}

func (c *Controller) serviceOpen(ctx context.Context, code string, n int) error {
	if c.now().Before(c.lockedTill) {
		return errors.New("controller: the keypad is locked: wait " + waitText(c.lockedTill.Sub(c.now()), "en"))
	}
	if _, wired := c.hw[n]; !wired {
		return fmt.Errorf("controller: no compartment %d", n)
	}
	hash := wire.CodeHash(c.opts.LockerID, code)
	var grants []store.Grant
	if err := c.st.View(ctx, func(tx *store.Tx) error {
		var err error
		grants, err = tx.GrantsByCode(hash)
		return err
	}); err != nil {
		return err
	}
	for _, g := range grants {
		if g.Action != "service" || usable(g, c.now()) != nil || (g.Compartment != 0 && g.Compartment != n) {
			continue
		}
		s := store.Session{GrantID: g.ID, Action: fsm.Service, Actor: g.Actor}
		// One use per door, as the keypad takes for a service code of one
		// compartment: a one-use code opened its door again and again here.
		return c.release(ctx, n, s, true)
	}
	if len(grants) == 0 {
		c.wrongCode(ctx)
	}
	return ErrNotAuthorized
}

// CheckServiceCode says whether code is the code of a service grant in
// force for the whole cabinet (no compartment: the grant that opens the
// service menu), and returns its masked holder; a wrong code counts towards
// the keypad lockout. A service code for one compartment does not pass: it
// ran the self-test on every door, parcels included.
func (c *Controller) CheckServiceCode(ctx context.Context, code string) (actor string, err error) {
	derr := c.do(ctx, func() {
		err = ErrNotAuthorized
		if c.now().Before(c.lockedTill) {
			return
		}
		var grants []store.Grant
		if err = c.st.View(ctx, func(tx *store.Tx) error {
			var err error
			grants, err = tx.GrantsByCode(wire.CodeHash(c.opts.LockerID, code))
			return err
		}); err != nil {
			return
		}
		err = ErrNotAuthorized
		for _, g := range grants {
			if g.Action == "service" && g.Compartment == 0 && usable(g, c.now()) == nil {
				actor, err = g.Actor, nil
				return
			}
		}
		if len(grants) == 0 {
			c.wrongCode(ctx)
		}
	})
	if derr != nil {
		return "", derr
	}
	return actor, err
}
