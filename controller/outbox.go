package controller

import (
	"context"

	"github.com/openlocker/locker/controller/store"
)

// AckEvents removes the events seqs from the outbox in one transaction: the
// MQTT link calls it with the seqs whose PUBACKs arrived (sync/client's
// BatchAcker). One durable transaction per batch instead of one per event
// lets a large backlog drain at the broker's pace.
func (c *Controller) AckEvents(ctx context.Context, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	err := c.st.Update(ctx, func(tx *store.Tx) error { return tx.AckMany(seqs) })
	if err == nil {
		signal(c.changed)
	}
	return err
}

// DBBytes is the database's size on disk (with its write-ahead log), for the
// status extension field db_bytes (sync/client's DiskUser).
func (c *Controller) DBBytes(ctx context.Context) (int64, error) { return c.st.DiskBytes(ctx) }
