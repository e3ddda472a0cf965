package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Grant is a stored grant, or the tombstone of a revoked one.
type Grant struct {
	ID          string
	Version     int64
	Revoked     bool
	Action      string
	Compartment int
	Size        string
	ParcelID    string
	Actor       string // masked holder
	CodeHash    string
	ValidFrom   time.Time
	ValidUntil  time.Time // zero: no end
	UsesLeft    int       // -1: unlimited
	Pickup      string    // JSON of the nested pickup grant
	ExpiredSent bool
	ParcelSeq   int64     // pickup: the parcel it was brought into force for (the compartment's ParcelSeq); 0: any parcel with ParcelID
	IssuedAt    time.Time // issued_at of the envelope that last put or revoked it
}

const grantCols = `grant_id, version, revoked, action, compartment, size, parcel_id, actor, code_hash,
	valid_from, valid_until, uses_left, pickup, expired_sent, parcel_seq, issued_at`

func scanGrant(sc interface{ Scan(...any) error }) (Grant, error) {
	var g Grant
	var from, until, issued string
	err := sc.Scan(&g.ID, &g.Version, &g.Revoked, &g.Action, &g.Compartment, &g.Size, &g.ParcelID, &g.Actor,
		&g.CodeHash, &from, &until, &g.UsesLeft, &g.Pickup, &g.ExpiredSent, &g.ParcelSeq, &issued)
	g.ValidFrom, g.ValidUntil, g.IssuedAt = parseTime(from), parseTime(until), parseTime(issued)
	return g, err
}

func (t *Tx) queryGrants(where string, args ...any) ([]Grant, error) {
	rows, err := t.query("SELECT "+grantCols+" FROM grants WHERE "+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Grant
	for rows.Next() {
		g, err := scanGrant(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// Grant reads a grant or tombstone by id.
func (t *Tx) Grant(id string) (Grant, error) {
	row := t.queryRow("SELECT "+grantCols+" FROM grants WHERE grant_id = ?", id)
	g, err := scanGrant(row)
	if errors.Is(err, sql.ErrNoRows) {
		return g, fmt.Errorf("grant %q: %w", id, ErrNotFound)
	}
	return g, err
}

// GrantsByCode returns the live (not revoked) grants with this code hash.
func (t *Tx) GrantsByCode(codeHash string) ([]Grant, error) {
	return t.queryGrants("code_hash = ? AND revoked = 0 AND code_hash <> ''", codeHash)
}

// PickupsDue returns live pickup grants whose validity ended before now and
// for which pickup_expired was not yet sent.
func (t *Tx) PickupsDue(now time.Time) ([]Grant, error) {
	return t.queryGrants("revoked = 0 AND action = 'pickup' AND expired_sent = 0 AND valid_until <> '' AND valid_until < ?",
		timeText(now))
}

// PutGrant inserts or replaces g.
func (t *Tx) PutGrant(g Grant) error {
	_, err := t.exec(`INSERT OR REPLACE INTO grants(`+grantCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		g.ID, g.Version, g.Revoked, g.Action, g.Compartment, g.Size, g.ParcelID, g.Actor, g.CodeHash,
		timeText(g.ValidFrom), timeText(g.ValidUntil), g.UsesLeft, g.Pickup, g.ExpiredSent, g.ParcelSeq, timeText(g.IssuedAt))
	return err
}

// Tombstone marks grant id revoked at version, clearing everything but the
// version (and the issued_at of the envelope that revoked it) so that an
// older put cannot bring it back.
func (t *Tx) Tombstone(id string, version int64, issuedAt time.Time) error {
	return t.PutGrant(Grant{ID: id, Version: version, Revoked: true, IssuedAt: issuedAt})
}

// ReservedCompartments returns the compartments named by a deposit grant
// that is in force at now (live, started, not ended, uses left).
func (t *Tx) ReservedCompartments(now time.Time) (map[int]bool, error) {
	ts := timeText(now)
	rows, err := t.query(`SELECT DISTINCT compartment FROM grants
		WHERE revoked = 0 AND compartment <> 0 AND action = 'deposit' AND uses_left <> 0
		AND valid_from <= ? AND (valid_until = '' OR valid_until > ?)`, ts, ts)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]bool{}
	for rows.Next() {
		var n int
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out[n] = true
	}
	return out, rows.Err()
}

// GrantMeta is what applying an op needs to know of a stored grant.
type GrantMeta struct {
	Version    int64
	Revoked    bool
	CodeHash   string
	ValidUntil time.Time
	UsesLeft   int
}

// AllGrantMeta reads every grant's (and tombstone's) version and code, for
// applying a large envelope without a lookup per op.
func (t *Tx) AllGrantMeta() (map[string]GrantMeta, error) {
	rows, err := t.query("SELECT grant_id, version, revoked, code_hash, valid_until, uses_left FROM grants")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]GrantMeta{}
	for rows.Next() {
		var id, until string
		var m GrantMeta
		if err := rows.Scan(&id, &m.Version, &m.Revoked, &m.CodeHash, &until, &m.UsesLeft); err != nil {
			return nil, err
		}
		m.ValidUntil = parseTime(until)
		out[id] = m
	}
	return out, rows.Err()
}
