package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Purge deletes, up to limit rows per table, what can no longer matter:
//
//   - tombstones whose revoke (the envelope's issued_at) is before cutoff;
//   - grants whose last use was taken before cutoff (ended_at), put by an
//     envelope issued before cutoff (a use taken on an estimated clock
//     weeks behind is "old" at once; its envelope may still be alive);
//   - grants whose validity ended before cutoff, a pickup only once its
//     pickup_expired was recorded;
//   - executed command ids whose at (the later of their run and their
//     expiry) is before cutoff.
//
// The caller picks cutoff so that no envelope old enough to name them can
// still be applied (the controller's PurgeAfter and MaxEnvelopeLifetime).
// It returns how many rows went.
func (t *Tx) Purge(cutoff time.Time, commandCutoff string, limit int) (int, error) {
	c := timeText(cutoff)
	res, err := t.exec(`DELETE FROM grants WHERE grant_id IN (SELECT grant_id FROM grants WHERE
		(revoked = 1 AND issued_at < ?)
		OR (revoked = 0 AND uses_left = 0 AND ended_at <> '' AND ended_at < ? AND issued_at < ?)
		OR (revoked = 0 AND valid_until <> '' AND valid_until < ? AND (action <> 'pickup' OR expired_sent = 1 OR uses_left = 0))
		LIMIT ?)`, c, c, c, c, limit)
	if err != nil {
		return 0, fmt.Errorf("purge grants: %w", err)
	}
	g, _ := res.RowsAffected()
	res, err = t.exec(`DELETE FROM commands WHERE command_id IN (SELECT command_id FROM commands WHERE at < ? LIMIT ?)`,
		commandCutoff, limit)
	if err != nil {
		return int(g), fmt.Errorf("purge commands: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(g + n), nil
}

// NextDue is the earliest time after now at which time alone changes what
// the locker must do: a pickup grant's validity ends (pickup_expired), or a
// deposit grant that names a compartment starts or ends (a reservation).
// ok is false when no such time is stored.
func (t *Tx) NextDue(now time.Time) (due time.Time, ok bool, err error) {
	ts := timeText(now)
	var a, b, c sql.NullString
	err = t.queryRow(`SELECT
		(SELECT MIN(valid_until) FROM grants WHERE revoked = 0 AND action = 'pickup' AND expired_sent = 0 AND valid_until > ?),
		(SELECT MIN(valid_from) FROM grants WHERE revoked = 0 AND action = 'deposit' AND compartment <> 0 AND uses_left <> 0 AND valid_from > ?),
		(SELECT MIN(valid_until) FROM grants WHERE revoked = 0 AND action = 'deposit' AND compartment <> 0 AND uses_left <> 0 AND valid_until > ?)`,
		ts, ts, ts).Scan(&a, &b, &c)
	if err != nil {
		return time.Time{}, false, err
	}
	for _, v := range []sql.NullString{a, b, c} {
		if !v.Valid || v.String == "" {
			continue
		}
		if t := parseTime(v.String); !ok || t.Before(due) {
			due, ok = t, true
		}
	}
	return due, ok, nil
}

// IncrementalVacuum gives up to pages free pages back to the file system
// (the database is in auto_vacuum=INCREMENTAL mode: see Open).
func (s *Store) IncrementalVacuum(ctx context.Context, pages int) error {
	defer s.wroteWAL()
	defer s.exclusive()()
	_, err := s.conn.ExecContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", pages))
	return err
}

// incrementalVacuumMode puts the database in auto_vacuum=INCREMENTAL mode,
// so that the pages a purge frees can be given back in small steps. A new
// database takes it before its first table; an older one needs one VACUUM,
// once, at the first start of this version.
func (s *Store) incrementalVacuumMode(ctx context.Context) error {
	var mode int
	if err := s.conn.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&mode); err != nil {
		return err
	}
	if mode == 2 {
		return nil
	}
	if _, err := s.conn.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
		return err
	}
	var tables int
	if err := s.conn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil {
		return err
	}
	if tables == 0 {
		return nil
	}
	_, err := s.conn.ExecContext(ctx, "VACUUM")
	return err
}
