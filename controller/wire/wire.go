// Package wire holds the JSON shapes the locker exchanges with the central
// server (docs/protocol.md): grants, commands, their answers, traces, status. It
// is a leaf: the controller builds and reads them, sync moves them over
// MQTT, and neither the pins nor MQTT are known here.
package wire

import (
	"encoding/json"
	"time"
)

// GrantsBody is the body of a signed `grants` envelope (docs/protocol.md).
type GrantsBody struct {
	Kind      string    `json:"kind"`
	LockerID  string    `json:"locker_id"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Snapshot  bool      `json:"snapshot"`
	Ops       []GrantOp `json:"ops"`
}

// GrantOp is one `put` or `revoke` of a grants body.
type GrantOp struct {
	Op          string      `json:"op"` // put, revoke
	GrantID     string      `json:"grant_id"`
	Version     int64       `json:"version"`
	Action      string      `json:"action,omitempty"` // deposit, pickup, reclaim, service
	Compartment int         `json:"compartment,omitempty"`
	Size        string      `json:"size,omitempty"`
	ParcelID    string      `json:"parcel_id,omitempty"`
	Holder      string      `json:"holder,omitempty"`
	CodeHash    string      `json:"code_hash,omitempty"`
	ValidFrom   *time.Time  `json:"valid_from,omitempty"`
	ValidUntil  *time.Time  `json:"valid_until,omitempty"`
	Uses        *int        `json:"uses,omitempty"`
	Pickup      *PickupSpec `json:"pickup,omitempty"`
}

// PickupSpec is the pickup grant nested in a deposit grant; it comes into
// force for the deposit's compartment when the parcel is deposited.
type PickupSpec struct {
	GrantID    string     `json:"grant_id"`
	Holder     string     `json:"holder,omitempty"`
	CodeHash   string     `json:"code_hash"`
	ValidFrom  *time.Time `json:"valid_from,omitempty"`
	ValidUntil *time.Time `json:"valid_until,omitempty"`
	Uses       *int       `json:"uses,omitempty"`
}

// GrantsAck is published on P/grants/ack after each grants envelope.
type GrantsAck struct {
	IssuedAt time.Time       `json:"issued_at"`
	Applied  int             `json:"applied"`
	Stale    int             `json:"stale"`
	Rejected []RejectedGrant `json:"rejected"`
}

// RejectedGrant names one op that was not applied and why.
type RejectedGrant struct {
	GrantID string `json:"grant_id"`
	Error   string `json:"error"`
}

// Command is the body of a signed `command` envelope.
type Command struct {
	Kind        string    `json:"kind"`
	LockerID    string    `json:"locker_id"`
	CommandID   string    `json:"command_id"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	Action      string    `json:"action"` // open, disable, enable
	Compartment int       `json:"compartment"`
	Reason      string    `json:"reason,omitempty"`
}

// CommandResult is published on P/commands/result.
type CommandResult struct {
	CommandID string `json:"command_id"`
	OK        bool   `json:"ok"`
	Error     string `json:"error"`
}

// Trace is one event as published on P/traces. Fields that do not apply are
// left out.
type Trace struct {
	EventID     string `json:"event_id"`
	Seq         int64  `json:"seq"`
	Time        string `json:"time"` // RFC 3339 UTC with milliseconds
	Type        string `json:"type"`
	Compartment int    `json:"compartment,omitempty"`
	ParcelID    string `json:"parcel_id,omitempty"`
	GrantID     string `json:"grant_id,omitempty"`
	Actor       string `json:"actor,omitempty"`
	Content     string `json:"content,omitempty"`
	// Extensions (documented in docs/protocol.md).
	Reason     string `json:"reason,omitempty"`
	Suppressed int    `json:"suppressed,omitempty"`
	CommandID  string `json:"command_id,omitempty"`
	// TimeEstimated: the board's clock was not trusted when the event was
	// recorded; Time is the last trusted time plus the time elapsed since.
	TimeEstimated bool `json:"time_estimated,omitempty"`
	// Dropped, DroppedFrom, DroppedTo: outbox_overflow only. The outbox was
	// full; this many routine events between these seqs were dropped.
	Dropped     int   `json:"dropped,omitempty"`
	DroppedFrom int64 `json:"dropped_from,omitempty"`
	DroppedTo   int64 `json:"dropped_to,omitempty"`
}

// OutboxEvent is one recorded trace waiting for the broker's PUBACK.
type OutboxEvent struct {
	Seq     int64
	Payload json.RawMessage // the exact Trace JSON to publish
}

// Counts is the number of compartments in each state.
type Counts struct {
	Total    int `json:"total"`
	Free     int `json:"free"`
	Reserved int `json:"reserved"`
	Occupied int `json:"occupied"`
	Expired  int `json:"expired"`
	Disabled int `json:"disabled"`
	Fault    int `json:"fault"`
}

// Status is the locker status published retained on P/status.
type Status struct {
	State        string `json:"state"` // online, offline
	LockerID     string `json:"locker_id"`
	Software     string `json:"software,omitempty"`
	Time         string `json:"time,omitempty"`
	LastSeq      int64  `json:"last_seq"`
	Outbox       int    `json:"outbox"`
	Compartments Counts `json:"compartments"`
	// StorageFault is an extension: why the data folder cannot be written
	// just now (the locker opens no door meanwhile); absent when it can.
	StorageFault string `json:"storage_fault,omitempty"`
}

// CompartmentState is one compartment as published on P/compartments.
type CompartmentState struct {
	Number   int    `json:"number"`
	Size     string `json:"size"`
	State    string `json:"state"` // free, reserved, occupied, expired, disabled, fault
	Door     string `json:"door"`  // open, closed
	ParcelID string `json:"parcel_id,omitempty"`
}

// CompartmentsReport is published retained on P/compartments.
type CompartmentsReport struct {
	LockerID     string             `json:"locker_id"`
	Time         string             `json:"time"`
	Compartments []CompartmentState `json:"compartments"`
}

// TimeFormat is the protocol's time format: RFC 3339, UTC, milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// FormatTime formats t as the protocol wants it.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }
