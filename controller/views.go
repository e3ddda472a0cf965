package controller

import (
	"context"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
)

// PublicState is the state of a compartment as docs/protocol.md names it.
func PublicState(sc store.Compartment) string { return sc.PublicState() }

func doorText(open bool) string {
	if open {
		return "open"
	}
	return "closed"
}

// Status is the locker status (State is left for the link to fill in).
func (c *Controller) Status(ctx context.Context) (wire.Status, error) {
	st := wire.Status{LockerID: c.opts.LockerID, Software: c.opts.Software, Time: wire.FormatTime(c.now()),
		StorageFault: c.StorageFault()}
	err := c.st.View(ctx, func(tx *store.Tx) error {
		var err error
		if st.LastSeq, err = tx.LastSeq(); err != nil {
			return err
		}
		if st.Outbox, err = tx.OutboxLen(); err != nil {
			return err
		}
		all, err := tx.Compartments()
		if err != nil {
			return err
		}
		for _, sc := range all {
			st.Compartments.Total++
			switch PublicState(sc) {
			case "free":
				st.Compartments.Free++
			case "reserved":
				st.Compartments.Reserved++
			case "occupied":
				st.Compartments.Occupied++
			case "expired":
				st.Compartments.Expired++
			case "disabled":
				st.Compartments.Disabled++
			case "fault":
				st.Compartments.Fault++
			}
		}
		return nil
	})
	return st, err
}

// Compartments is the state of every compartment.
func (c *Controller) Compartments(ctx context.Context) (wire.CompartmentsReport, error) {
	rep := wire.CompartmentsReport{LockerID: c.opts.LockerID, Time: wire.FormatTime(c.now()), Compartments: []wire.CompartmentState{}}
	err := c.st.View(ctx, func(tx *store.Tx) error {
		all, err := tx.Compartments()
		if err != nil {
			return err
		}
		for _, sc := range all {
			rep.Compartments = append(rep.Compartments, wire.CompartmentState{Number: sc.Number, Size: sc.Size,
				State: PublicState(sc), Door: doorText(sc.DoorOpen), ParcelID: sc.ParcelID})
		}
		return nil
	})
	return rep, err
}

// PendingEvents returns up to limit outbox events with seq > after, in seq order.
func (c *Controller) PendingEvents(ctx context.Context, after int64, limit int) ([]wire.OutboxEvent, error) {
	var out []wire.OutboxEvent
	err := c.st.View(ctx, func(tx *store.Tx) error {
		evs, err := tx.Pending(after, limit)
		for _, e := range evs {
			out = append(out, wire.OutboxEvent{Seq: e.Seq, Payload: e.Payload})
		}
		return err
	})
	return out, err
}

// AckEvent removes event seq from the outbox; call it only on its PUBACK.
func (c *Controller) AckEvent(ctx context.Context, seq int64) error {
	err := c.st.Update(ctx, func(tx *store.Tx) error { return tx.Ack(seq) })
	if err == nil {
		c.unsynced.Store(true)
		signal(c.changed)
	}
	return err
}

// Sync returns once the loop has finished everything it was doing: for
// tests and scenario runners that need the controller to be quiet.
func (c *Controller) Sync(ctx context.Context) error { return c.do(ctx, func() {}) }

// Housekeeping runs the periodic work (expiry, time-outs) now, on the loop:
// for runners whose clock is not the wall clock.
func (c *Controller) Housekeeping(ctx context.Context) error {
	return c.do(ctx, func() { c.housekeeping(ctx) })
}

// Display is what the controller last wrote to the display.
func (c *Controller) Display(ctx context.Context) ([2]string, error) {
	var d [2]string
	err := c.do(ctx, func() { d = c.display })
	return d, err
}
