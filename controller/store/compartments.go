package store

import (
	"database/sql"
	"errors"
	"fmt"
	"github.com/openlocker/locker/controller/fsm"
)

// Compartment is one compartment's stored state, and Session the release
// in progress on it: the state machine's own types (controller/fsm), whose
// columns carry CHECK constraints (migration 6).
type (
	Compartment = fsm.Compartment
	Session     = fsm.Session
)

const compartmentCols = `number, size, state, disabled, door_open, parcel_present, parcel_id,
	session_grant, session_action, session_actor, session_parcel, session_at, session_opened, fault, parcel_seq, parcel_missing`

func scanCompartment(sc interface{ Scan(...any) error }) (Compartment, error) {
	var c Compartment
	var at string
	err := sc.Scan(&c.Number, &c.Size, &c.State, &c.Disabled, &c.DoorOpen, &c.ParcelPresent, &c.ParcelID,
		&c.Session.GrantID, &c.Session.Action, &c.Session.Actor, &c.Session.Parcel, &at, &c.Session.Opened, &c.Fault, &c.ParcelSeq, &c.Missing)
	c.Session.At = parseTime(at)
	return c, err
}

// Compartment reads compartment n.
func (t *Tx) Compartment(n int) (Compartment, error) {
	row := t.queryRow("SELECT "+compartmentCols+" FROM compartments WHERE number = ?", n)
	c, err := scanCompartment(row)
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("compartment %d: %w", n, ErrNotFound)
	}
	return c, err
}

// Compartments reads every compartment in ascending number.
func (t *Tx) Compartments() ([]Compartment, error) {
	rows, err := t.query("SELECT " + compartmentCols + " FROM compartments ORDER BY number")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Compartment
	for rows.Next() {
		c, err := scanCompartment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// PutCompartment inserts or replaces compartment c.
func (t *Tx) PutCompartment(c Compartment) error {
	_, err := t.exec(`INSERT OR REPLACE INTO compartments(`+compartmentCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Number, c.Size, c.State, c.Disabled, c.DoorOpen, c.ParcelPresent, c.ParcelID,
		c.Session.GrantID, c.Session.Action, c.Session.Actor, c.Session.Parcel, timeText(c.Session.At), c.Session.Opened,
		c.Fault, c.ParcelSeq, c.Missing)
	return err
}

// DeleteCompartment removes compartment n (a wiring that lost it).
func (t *Tx) DeleteCompartment(n int) error {
	_, err := t.exec("DELETE FROM compartments WHERE number = ?", n)
	return err
}
