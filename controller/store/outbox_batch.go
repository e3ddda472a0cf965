package store

import (
	"context"
	"encoding/json"
	"os"
	"slices"
)

// HeldAcks bounds the acknowledged events AckLater keeps for a later
// transaction: past it, they are deleted at once.
const HeldAcks = 512

// AckLater notes that the events seqs were acknowledged by the broker. They
// leave the outbox in the next transaction that writes anyway (Update), or
// by FlushAcks: before a checkpoint, at Close, or at once when HeldAcks are
// held. Meanwhile Pending, OutboxLen and DropOldest leave them out. A
// deletion is not urgent: an event acknowledged but still stored after a
// crash is sent again, which the protocol allows (at least once, the
// central de-duplicates by event_id); a transaction of its own for it is a
// durable commit (two pages written and a flush) per burst of events.
func (s *Store) AckLater(ctx context.Context, seqs []int64) error {
	s.heldMu.Lock()
	for _, seq := range seqs {
		s.held[seq] = true
	}
	n := len(s.held)
	s.heldMu.Unlock()
	if n >= HeldAcks {
		return s.FlushAcks(ctx)
	}
	return nil
}

// FlushAcks deletes the acknowledged events held by AckLater, in a
// transaction of their own.
func (s *Store) FlushAcks(ctx context.Context) error {
	if s.Held() == 0 {
		return nil
	}
	return s.Update(ctx, func(tx *Tx) error {
		tx.flush = true
		return nil
	})
}

// Held counts the acknowledged events not yet deleted (AckLater).
func (s *Store) Held() int {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return len(s.held)
}

// heldSeqs returns the held acknowledged seqs, in order.
func (s *Store) heldSeqs() []int64 {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	out := make([]int64, 0, len(s.held))
	for seq := range s.held {
		out = append(out, seq)
	}
	slices.Sort(out)
	return out
}

// heldJSON is the held seqs as a JSON array, for json_each in a query.
func (s *Store) heldJSON() string {
	b, _ := json.Marshal(s.heldSeqs())
	if string(b) == "null" {
		return "[]"
	}
	return string(b)
}

// unhold forgets seqs once their deletion committed.
func (s *Store) unhold(seqs []int64) {
	if len(seqs) == 0 {
		return
	}
	s.heldMu.Lock()
	for _, seq := range seqs {
		delete(s.held, seq)
	}
	s.heldMu.Unlock()
}

// AckMany removes the events seqs from the outbox (after their PUBACKs), all
// in the transaction t. Seqs no longer there are skipped.
func (t *Tx) AckMany(seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	if err := t.keepLastSeq(func(s int64) bool { return slices.Contains(seqs, s) }); err != nil {
		return err
	}
	for _, seq := range seqs {
		if _, err := t.exec("DELETE FROM outbox WHERE seq = ?", seq); err != nil {
			return err
		}
	}
	return nil
}

// DiskBytes is the size on disk of the database: the main file plus its
// write-ahead log (and shared-memory index) in WAL mode.
func (s *Store) DiskBytes(context.Context) (int64, error) {
	var n int64
	for _, suffix := range []string{"", "-wal", "-shm"} {
		fi, err := os.Stat(s.path + suffix)
		switch {
		case err == nil:
			n += fi.Size()
		case suffix == "" || !os.IsNotExist(err):
			return 0, err
		}
	}
	return n, nil
}
