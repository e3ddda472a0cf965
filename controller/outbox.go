package controller

import (
	"context"
)

// AckEvents removes the events seqs from the outbox: the MQTT link calls it
// with the seqs whose PUBACKs arrived (sync/client's BatchAcker). They are
// deleted with the next transaction that writes anyway (store.AckLater) —
// a door's next step, a grant — or before the next checkpoint, not in a
// durable commit of their own for each burst of events; meanwhile the
// outbox's length and its pending events leave them out.
func (c *Controller) AckEvents(ctx context.Context, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	err := c.st.AckLater(ctx, seqs)
	if err == nil {
		signal(c.changed)
	}
	return err
}

// DBBytes is the database's size on disk (with its write-ahead log), for the
// status extension field db_bytes (sync/client's DiskUser).
func (c *Controller) DBBytes(ctx context.Context) (int64, error) { return c.st.DiskBytes(ctx) }
