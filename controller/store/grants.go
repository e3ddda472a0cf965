package store

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
	Pickup      string    // JSON of the nested pickup grant; PutGrant takes it with or without the members PickupID and PickupCode keep, Grant gives it whole
	PickupID    string    // the nested pickup grant's grant_id; set with Pickup
	PickupCode  string    // the nested pickup grant's code hash; set with Pickup
	ExpiredSent bool
	ParcelSeq   int64     // pickup: the parcel it was brought into force for (the compartment's ParcelSeq); 0: any parcel with ParcelID
	IssuedAt    time.Time // issued_at of the envelope that last put or revoked it
	EndedAt     time.Time // when its last use was taken (UsesLeft reached 0); zero while it has uses
}

const grantCols = `grant_id, version, revoked, action, compartment, size, parcel_id, actor, code_hash,
	valid_from, valid_until, uses_left, pickup, expired_sent, parcel_seq, issued_at, pickup_id, pickup_code, ended_at`

func scanGrant(sc interface{ Scan(...any) error }) (Grant, error) {
	var g Grant
	var from, until, issued, ended string
	err := sc.Scan(&g.ID, &g.Version, &g.Revoked, &g.Action, &g.Compartment, &g.Size, &g.ParcelID, &g.Actor,
		&g.CodeHash, &from, &until, &g.UsesLeft, &g.Pickup, &g.ExpiredSent, &g.ParcelSeq, &issued,
		&g.PickupID, &g.PickupCode, &ended)
	g.ValidFrom, g.ValidUntil, g.IssuedAt, g.EndedAt = parseTime(from), parseTime(until), parseTime(issued), parseTime(ended)
	if err == nil {
		g.Pickup = unpackPickup(g.Pickup, g.PickupID, g.PickupCode)
	}
	return g, err
}

// A deposit grant's nested pickup is stored without the grant_id and
// code_hash members of its JSON, which the pickup_id and pickup_code
// columns keep (migration 7), and without a zero valid_from (no start);
// Grant gives them back. So a deposit grant's row stays under a page's
// largest local payload (487 bytes at PageSize 2 KiB for a WITHOUT ROWID
// table) with ids of 36 characters (UUIDs); a larger row spills onto an
// overflow page that each change of the row writes again, with the free
// list and the pointer map (TestParcelCycleWritesOnlyWhatItMust,
// TestGrantRowsFitTheirPage).

// zeroTime is how encoding/json writes the zero time.Time.
const zeroTime = `"0001-01-01T00:00:00Z"`

// packPickup drops the members of the pickup JSON js that id and code
// keep; js is returned as it is unless both are there with those values
// (a JSON without grant_id is packed already).
func packPickup(js, id, code string) string {
	if js == "" || !strings.Contains(js, `"grant_id"`) {
		// Already packed (the controller writes it so): a grant_id
		// member would have this text, its name being plain ASCII.
		return js
	}
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(js), &m) != nil || !rawString(m["grant_id"], id) || !rawString(m["code_hash"], code) {
		return js
	}
	delete(m, "grant_id")
	delete(m, "code_hash")
	if string(m["valid_from"]) == zeroTime {
		delete(m, "valid_from")
	}
	b, err := json.Marshal(m)
	if err != nil {
		return js
	}
	return string(b)
}

// unpackPickup puts back what packPickup dropped (a row stored whole, by
// an older version, is returned as it is).
func unpackPickup(js, id, code string) string {
	if js == "" || id == "" {
		return js
	}
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(js), &m) != nil {
		return js
	}
	if _, ok := m["grant_id"]; ok {
		return js
	}
	m["grant_id"], _ = json.Marshal(id)
	m["code_hash"], _ = json.Marshal(code)
	if _, ok := m["valid_from"]; !ok {
		m["valid_from"] = json.RawMessage(zeroTime)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return js
	}
	return string(b)
}

func rawString(raw json.RawMessage, want string) bool {
	var s string
	return raw != nil && json.Unmarshal(raw, &s) == nil && s == want
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

// GrantsByPickupCode returns the live (not revoked) grants that nest a
// pickup grant with this code hash: that pickup comes into force when its
// deposit grant is used, so its code is taken while the deposit grant is.
func (t *Tx) GrantsByPickupCode(codeHash string) ([]Grant, error) {
	return t.queryGrants("pickup_code = ? AND revoked = 0 AND pickup_code <> ''", codeHash)
}

// PickupsDue returns live pickup grants whose validity ended before now and
// for which pickup_expired was not yet sent.
func (t *Tx) PickupsDue(now time.Time) ([]Grant, error) {
	return t.queryGrants("revoked = 0 AND action = 'pickup' AND expired_sent = 0 AND valid_until <> '' AND valid_until <= ?",
		timeText(now))
}

// BindReclaims binds the reclaim grants of compartment n that name no
// parcel and are bound to none yet to the parcel just deposited there (its
// seq): they were put while it was empty, for the parcel to come.
func (t *Tx) BindReclaims(n int, seq int64) error {
	if seq == 0 {
		return nil
	}
	_, err := t.exec(`UPDATE grants SET parcel_seq = ? WHERE action = 'reclaim' AND compartment = ? AND parcel_id = ''
		AND parcel_seq = 0 AND revoked = 0`, seq, n)
	return err
}

// ErrPickupUnnamed is a grant that nests a pickup grant without naming its
// grant_id and code hash (PickupID, PickupCode): its code would escape the
// uniqueness check.
var ErrPickupUnnamed = errors.New("nested pickup grant without its id and code hash")

// PutGrant inserts or replaces g.
func (t *Tx) PutGrant(g Grant) error {
	if g.Pickup != "" && (g.PickupID == "" || g.PickupCode == "") {
		return fmt.Errorf("grant %q: %w", g.ID, ErrPickupUnnamed)
	}
	_, err := t.exec(`INSERT OR REPLACE INTO grants(`+grantCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		g.ID, g.Version, g.Revoked, g.Action, g.Compartment, g.Size, g.ParcelID, g.Actor, g.CodeHash,
		timeText(g.ValidFrom), timeText(g.ValidUntil), g.UsesLeft, packPickup(g.Pickup, g.PickupID, g.PickupCode), g.ExpiredSent, g.ParcelSeq, timeText(g.IssuedAt),
		g.PickupID, g.PickupCode, timeText(g.EndedAt))
	return err
}

// SetUses writes a grant's uses left and the time its last use was taken,
// and nothing else: an UPDATE of two columns that no index covers writes
// only the row's page, where PutGrant (INSERT OR REPLACE) deletes the row
// and inserts it again, touching every index of the table.
func (t *Tx) SetUses(id string, usesLeft int, endedAt time.Time) error {
	_, err := t.exec("UPDATE grants SET uses_left = ?, ended_at = ? WHERE grant_id = ?", usesLeft, timeText(endedAt), id)
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
	PickupID   string    // the nested pickup grant's grant_id, if any
	PickupCode string    // the nested pickup grant's code hash, if any
	IssuedAt   time.Time // issued_at of the envelope that last put or revoked it
}

// AllGrantMeta reads every grant's (and tombstone's) version, codes and
// issued_at. Applying envelopes holds the live ones only (LiveGrantMeta);
// tests read them all.
func (t *Tx) AllGrantMeta() (map[string]GrantMeta, error) {
	return t.grantMeta("")
}

// grantMeta reads the GrantMeta of the grants that where (an SQL condition,
// empty for all) selects, by grant id.
func (t *Tx) grantMeta(where string) (map[string]GrantMeta, error) {
	q := `SELECT grant_id, version, revoked, code_hash, valid_until, uses_left, pickup_id, pickup_code, issued_at
		FROM grants`
	if where != "" {
		q += " WHERE " + where
	}
	rows, err := t.query(q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]GrantMeta{}
	for rows.Next() {
		var id, until, issued string
		var m GrantMeta
		if err := rows.Scan(&id, &m.Version, &m.Revoked, &m.CodeHash, &until, &m.UsesLeft, &m.PickupID, &m.PickupCode,
			&issued); err != nil {
			return nil, err
		}
		m.ValidUntil, m.IssuedAt = parseTime(until), parseTime(issued)
		out[id] = m
	}
	return out, rows.Err()
}
