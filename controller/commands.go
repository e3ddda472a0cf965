package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/openlocker/locker/controller/fsm"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
)

// rejectInterval is the least time between two envelope_rejected traces.
const rejectInterval = 10 * time.Second

// Execute runs one verified command at most once: a command id that ran
// before, whatever its result, gets {"ok": false, "error": "duplicate"}.
func (c *Controller) Execute(ctx context.Context, cmd *wire.Command) (wire.CommandResult, error) {
	var res wire.CommandResult
	var err error
	derr := c.do(ctx, func() { res, err = c.execute(ctx, cmd) })
	if derr != nil {
		return res, derr
	}
	return res, err
}

func (c *Controller) execute(ctx context.Context, cmd *wire.Command) (wire.CommandResult, error) {
	res := wire.CommandResult{CommandID: cmd.CommandID, OK: true}
	now := c.now()
	// The id is remembered from its run, or from the command's expiry if
	// later, for PurgeAfter: run on an estimated clock weeks behind, its
	// run's time was purged at the first purge on the true clock, while
	// the signed command had days to live and, delivered again, opened
	// the door again.
	keep := now
	if cmd.ExpiresAt.After(keep) {
		keep = cmd.ExpiresAt
	}
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
			return tx.PutCommand(cmd.CommandID, store.CommandResult{OK: false, Error: msg}, wire.FormatTime(keep))
		}
		if err := c.envelopeLifetime(cmd.IssuedAt, cmd.ExpiresAt); err != nil {
			return fail(err.Error())
		}
		sc, err := tx.Compartment(cmd.Compartment)
		if err != nil {
			return fail(fmt.Sprintf("no compartment %d", cmd.Compartment))
		}
		switch cmd.Action {
		case "open":
			// A session in progress is never replaced: its close records
			// the deposit or pickup it is for. (A door it opened is open.)
			if s := sc.Session; s.Active() {
				what := "a release"
				if s.Opened {
					what = "an open door"
				}
				return fail(fmt.Sprintf("compartment %d has %s for %s in progress: the command would end it", sc.Number, what, s.Action))
			}
			open = true
			return tx.PutCommand(cmd.CommandID, store.CommandResult{OK: true}, wire.FormatTime(keep))
		case "disable", "enable":
			kind := fsm.Enable
			if cmd.Action == "disable" {
				kind = fsm.Disable
			}
			if _, err := c.step(tx, sc, fsm.Event{Kind: kind, CommandID: cmd.CommandID, Reason: cmd.Reason}); err != nil {
				return err
			}
		default:
			return fail(fmt.Sprintf("unknown action %q", cmd.Action))
		}
		if err := c.refreshReservations(tx); err != nil {
			return err
		}
		return tx.PutCommand(cmd.CommandID, store.CommandResult{OK: true}, wire.FormatTime(keep))
	})
	if err != nil {
		return wire.CommandResult{}, err
	}
	if open {
		// The command is remembered as executed; the release records its own
		// intent (with its trace) before the coil fires.
		s := store.Session{GrantID: cmd.CommandID, Action: fsm.Command, Actor: "central"}
		if err := c.release(ctx, cmd.Compartment, s, false); err != nil {
			return wire.CommandResult{CommandID: cmd.CommandID, OK: false, Error: "release failed: " + err.Error()}, nil
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
			return c.record(tx, wire.Trace{Type: fsm.EnvelopeRejected.String(), Reason: reason, Suppressed: n,
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
