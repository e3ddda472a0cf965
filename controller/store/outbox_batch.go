package store

import (
	"context"
	"os"
	"slices"
)

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
