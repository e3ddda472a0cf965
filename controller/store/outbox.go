package store

import (
	"database/sql"
	"errors"
	"strings"
)

// OutboxEvent is one recorded event waiting for the broker's acknowledgement.
type OutboxEvent struct {
	Seq     int64
	Payload []byte
}

// AppendEvent records one event in the outbox: it takes the next seq
// (gapless: seq is only ever taken inside the transaction that records the
// event, so a rolled-back transaction takes none), builds the payload for
// it, and stores it. It returns the seq and the payload.
//
// The next seq is one more than the last one taken (lastSeq): the outbox's
// highest, or the seqs counter where the outbox no longer holds it. The
// counter is written only when that highest event leaves the outbox
// (keepLastSeq), not at every event: an append writes the outbox's page
// alone, not the counter's page too.
func (t *Tx) AppendEvent(typ string, build func(seq int64) ([]byte, error)) (int64, []byte, error) {
	seq, err := t.LastSeq()
	if err != nil {
		return 0, nil, err
	}
	seq++
	payload, err := build(seq)
	if err != nil {
		return 0, nil, err
	}
	if _, err := t.exec("INSERT INTO outbox(seq, payload, type) VALUES (?, ?, ?)", seq, payload, typ); err != nil {
		return 0, nil, err
	}
	return seq, payload, nil
}

// lastSeqQuery reads the last seq ever taken: the outbox's highest, or the
// counter, whichever is higher (the counter holds the seq of the last event
// that left the outbox as its highest).
const lastSeqQuery = `SELECT MAX(COALESCE((SELECT MAX(seq) FROM outbox), 0), value) FROM counters WHERE name = 'seq'`

// LastSeq is the seq of the last event ever recorded (0 before any).
func (t *Tx) LastSeq() (int64, error) {
	var seq int64
	err := t.queryRow(lastSeqQuery).Scan(&seq)
	return seq, err
}

// keepLastSeq writes the last seq taken to the counter when the outbox's
// highest event is among those about to leave it (gone reports whether a
// seq is), so that the seq is never taken again.
func (t *Tx) keepLastSeq(gone func(seq int64) bool) error {
	var hi sql.NullInt64
	if err := t.queryRow("SELECT MAX(seq) FROM outbox").Scan(&hi); err != nil {
		return err
	}
	if !hi.Valid || !gone(hi.Int64) {
		return nil
	}
	_, err := t.exec("UPDATE counters SET value = ? WHERE name = 'seq' AND value < ?", hi.Int64, hi.Int64)
	return err
}

// Pending returns up to limit outbox events with seq > after, in seq order,
// leaving out those acknowledged and held for deletion (AckLater).
func (t *Tx) Pending(after int64, limit int) ([]OutboxEvent, error) {
	rows, err := t.query("SELECT seq, payload FROM outbox WHERE seq > ? AND seq NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?",
		after, t.store.heldJSON(), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OutboxEvent
	for rows.Next() {
		var e OutboxEvent
		if err := rows.Scan(&e.Seq, &e.Payload); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// OldestPending is Pending(math.MinInt64, 1): the oldest event waiting,
// if any. It is a statement of its own: one prepared statement bound to a
// LIMIT of 1 and then of more is planned again by SQLite at each switch
// (sqlite3_expired; BenchmarkPendingLimits).
func (t *Tx) OldestPending() (OutboxEvent, bool, error) {
	var e OutboxEvent
	err := t.queryRow("SELECT seq, payload FROM outbox WHERE seq NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT 1",
		t.store.heldJSON()).Scan(&e.Seq, &e.Payload)
	if errors.Is(err, sql.ErrNoRows) {
		return e, false, nil
	}
	return e, err == nil, err
}

// Ack removes event seq from the outbox (after its PUBACK).
func (t *Tx) Ack(seq int64) error {
	if err := t.keepLastSeq(func(s int64) bool { return s == seq }); err != nil {
		return err
	}
	_, err := t.exec("DELETE FROM outbox WHERE seq = ?", seq)
	return err
}

// OutboxLen counts the events waiting in the outbox (not those
// acknowledged and held for deletion).
func (t *Tx) OutboxLen() (int, error) {
	var n int
	err := t.queryRow("SELECT COUNT(*) FROM outbox WHERE seq NOT IN (SELECT value FROM json_each(?))", t.store.heldJSON()).Scan(&n)
	return n, err
}

// Setting reads a setting; ok is false when it was never set.
func (t *Tx) Setting(key string) (value string, ok bool, err error) {
	err = t.queryRow("SELECT value FROM settings WHERE key = ?", key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return value, err == nil, err
}

// SetSetting writes a setting. An existing one is updated in place (an
// upsert): INSERT OR REPLACE would delete and insert it again, writing the
// key's index page too.
func (t *Tx) SetSetting(key, value string) error {
	_, err := t.exec("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
		key, value)
	return err
}

// CommandResult is the remembered result of an executed command.
type CommandResult struct {
	OK    bool
	Error string
}

// Command reads the result of command id; ok is false when it never ran.
func (t *Tx) Command(id string) (res CommandResult, ok bool, err error) {
	err = t.queryRow("SELECT ok, error FROM commands WHERE command_id = ?", id).Scan(&res.OK, &res.Error)
	if errors.Is(err, sql.ErrNoRows) {
		return res, false, nil
	}
	return res, err == nil, err
}

// PutCommand remembers that command id ran with this result; at is when
// it may be forgotten from (Purge): the later of its run and its expiry.
func (t *Tx) PutCommand(id string, res CommandResult, at string) error {
	_, err := t.exec("INSERT INTO commands(command_id, ok, error, at) VALUES (?, ?, ?, ?)", id, res.OK, res.Error, at)
	return err
}

// OutboxSpan is an upper bound of the outbox's length, cheap to read:
// the last seq minus the oldest pending one, plus one (0 when empty).
func (t *Tx) OutboxSpan() (int64, error) {
	var lo, hi sql.NullInt64
	if err := t.queryRow("SELECT MIN(seq), MAX(seq) FROM outbox").Scan(&lo, &hi); err != nil {
		return 0, err
	}
	if !lo.Valid {
		return 0, nil
	}
	return hi.Int64 - lo.Int64 + 1, nil
}

// DropOldest deletes up to n of the oldest outbox events whose type is one
// of types (not those acknowledged and held for deletion), and returns how many it deleted and the first and last seq
// among them.
func (t *Tx) DropOldest(n int, types []string) (dropped int, first, last int64, err error) {
	if n <= 0 || len(types) == 0 {
		return 0, 0, 0, nil
	}
	in := "?" + strings.Repeat(", ?", len(types)-1)
	args := make([]any, 0, len(types)+2)
	for _, ty := range types {
		args = append(args, ty)
	}
	args = append(args, t.store.heldJSON(), n)
	var lo, hi sql.NullInt64
	var cnt int
	const notHeld = ") AND seq NOT IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ?)"
	err = t.queryRow("SELECT COUNT(*), MIN(seq), MAX(seq) FROM (SELECT seq FROM outbox WHERE type IN ("+in+
		notHeld, args...).Scan(&cnt, &lo, &hi)
	if err != nil || cnt == 0 {
		return 0, 0, 0, err
	}
	if err := t.keepLastSeq(func(s int64) bool { return s <= hi.Int64 }); err != nil {
		return 0, 0, 0, err
	}
	if _, err := t.exec("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE type IN ("+in+
		notHeld, args...); err != nil {
		return 0, 0, 0, err
	}
	return cnt, lo.Int64, hi.Int64, nil
}
