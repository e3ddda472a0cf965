package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Compartment is one compartment's stored state.
type Compartment struct {
	Number        int
	Size          string
	State         string // free, reserved, occupied, expired, fault (disabled is a flag)
	Disabled      bool
	DoorOpen      bool
	ParcelPresent bool
	ParcelID      string
	Fault         string // why State is fault: "lock", "sensor" or "parcel" (one that should not be there)
	ParcelSeq     int64  // the seq of the trace that put the parcel there (deposited, parcel_found); 0: none
	Session       Session
}

// Session is the release in progress on a compartment: recorded before the
// coil fires, ended when the door is closed again.
type Session struct {
	GrantID string
	Action  string // deposit, pickup, reclaim, service, command; "" when none
	Actor   string // masked
	Parcel  string
	At      time.Time
	Opened  bool // the door was seen open since the release
}

// Active says whether a session is in progress.
func (s Session) Active() bool { return s.Action != "" }

const compartmentCols = `number, size, state, disabled, door_open, parcel_present, parcel_id,
	session_grant, session_action, session_actor, session_parcel, session_at, session_opened, fault, parcel_seq`

func scanCompartment(sc interface{ Scan(...any) error }) (Compartment, error) {
	var c Compartment
	var at string
	err := sc.Scan(&c.Number, &c.Size, &c.State, &c.Disabled, &c.DoorOpen, &c.ParcelPresent, &c.ParcelID,
		&c.Session.GrantID, &c.Session.Action, &c.Session.Actor, &c.Session.Parcel, &at, &c.Session.Opened, &c.Fault, &c.ParcelSeq)
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
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Number, c.Size, c.State, c.Disabled, c.DoorOpen, c.ParcelPresent, c.ParcelID,
		c.Session.GrantID, c.Session.Action, c.Session.Actor, c.Session.Parcel, timeText(c.Session.At), c.Session.Opened,
		c.Fault, c.ParcelSeq)
	return err
}

// DeleteCompartment removes compartment n (a wiring that lost it).
func (t *Tx) DeleteCompartment(n int) error {
	_, err := t.exec("DELETE FROM compartments WHERE number = ?", n)
	return err
}
