package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/openlocker/locker/controller/store"
)

// rejectInterval is the least time between two envelope_rejected traces.
const rejectInterval = 10 * time.Second

// Execute runs one verified command at most once: a command id that ran
// before, whatever its result, gets {"ok": false, "error": "duplicate"}.
func (c *Controller) Execute(ctx context.Context, cmd *Command) (CommandResult, error) {
	var res CommandResult
	var err error
	derr := c.do(ctx, func() { res, err = c.execute(ctx, cmd) })
	if derr != nil {
		return res, derr
	}
	return res, err
}

func (c *Controller) execute(ctx context.Context, cmd *Command) (CommandResult, error) {
	res := CommandResult{CommandID: cmd.CommandID, OK: true}
	now := c.now()
	var open bool
	err := c.update(ctx, func(tx *store.Tx) error {
		if _, ran, err := tx.Command(cmd.CommandID); err != nil {
			return err
		} else if ran {
			res.OK, res.Error = false, "duplicate"
			return nil
		}
		fail := func(msg string) error {
			res.OK, res.Error = false, msg
			return tx.PutCommand(cmd.CommandID, store.CommandResult{OK: false, Error: msg}, FormatTime(now))
		}
		sc, err := tx.Compartment(cmd.Compartment)
		if err != nil {
			return fail(fmt.Sprintf("no compartment %d", cmd.Compartment))
		}
		why := cmd.Reason
		if why == "" {
			why = "remote command"
		}
		switch cmd.Action {
		case "open":
			if sc.Session.Active() && !sc.DoorOpen {
				return fail("a release is already in progress")
			}
			open = true
		case "disable":
			sc.Disabled = true
			if err := c.record(tx, Trace{Type: "compartment_disabled", Compartment: sc.Number, CommandID: cmd.CommandID,
				Reason: cmd.Reason, Content: "Compartment " + two(sc.Number) + " disabled: " + why}); err != nil {
				return err
			}
		case "enable":
			sc.Disabled = false
			if sc.State == "fault" { // the technician vouches for it
				sc.State, sc.Fault = "free", ""
				if sc.ParcelID != "" {
					sc.State = "occupied"
				}
			}
			if err := c.record(tx, Trace{Type: "compartment_enabled", Compartment: sc.Number, CommandID: cmd.CommandID,
				Reason: cmd.Reason, Content: "Compartment " + two(sc.Number) + " enabled: " + why}); err != nil {
				return err
			}
		default:
			return fail(fmt.Sprintf("unknown action %q", cmd.Action))
		}
		if err := c.putCompartment(tx, sc); err != nil {
			return err
		}
		if err := c.refreshReservations(tx); err != nil {
			return err
		}
		return tx.PutCommand(cmd.CommandID, store.CommandResult{OK: true}, FormatTime(now))
	})
	if err != nil {
		return CommandResult{}, err
	}
	if open {
		// The command is remembered as executed; the release records its own
		// intent (with its trace) before the coil fires.
		s := store.Session{GrantID: cmd.CommandID, Action: "command", Actor: "central"}
		if err := c.release(ctx, cmd.Compartment, s, false); err != nil {
			return CommandResult{CommandID: cmd.CommandID, OK: false, Error: "release failed: " + err.Error()}, nil
		}
	}
	c.log.Info("command", "command_id", cmd.CommandID, "action", cmd.Action, "compartment", cmd.Compartment,
		"ok", res.OK, "error", res.Error)
	return res, nil
}

// RejectEnvelope records an envelope_rejected trace with the reason, at
// most one per 10 s; the ones in between are counted in the next trace's
// `suppressed`.
func (c *Controller) RejectEnvelope(ctx context.Context, reason string) error {
	var err error
	derr := c.do(ctx, func() {
		now := c.now()
		if !c.rejLast.IsZero() && now.Sub(c.rejLast) < rejectInterval && now.After(c.rejLast.Add(-time.Minute)) {
			c.rejCount++
			return
		}
		n := c.rejCount
		err = c.update(ctx, func(tx *store.Tx) error {
			return c.record(tx, Trace{Type: "envelope_rejected", Reason: reason, Suppressed: n,
				Content: "Envelope rejected: " + reason})
		})
		if err == nil {
			c.rejLast, c.rejCount = now, 0
		}
	})
	if derr != nil {
		return derr
	}
	return err
}
