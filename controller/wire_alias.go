package controller

import (
	"time"

	"github.com/openlocker/locker/controller/wire"
)

// The protocol's shapes, under the controller's names.
type (
	GrantsBody         = wire.GrantsBody
	GrantOp            = wire.GrantOp
	PickupSpec         = wire.PickupSpec
	GrantsAck          = wire.GrantsAck
	RejectedGrant      = wire.RejectedGrant
	Command            = wire.Command
	CommandResult      = wire.CommandResult
	Trace              = wire.Trace
	OutboxEvent        = wire.OutboxEvent
	Counts             = wire.Counts
	Status             = wire.Status
	CompartmentState   = wire.CompartmentState
	CompartmentsReport = wire.CompartmentsReport
)

// TimeFormat is the protocol's time format.
const TimeFormat = wire.TimeFormat

// FormatTime formats t as the protocol wants it.
func FormatTime(t time.Time) string { return wire.FormatTime(t) }

// CodeHash is the hex SHA-256 of "{lockerID}:{code}".
func CodeHash(lockerID, code string) string { return wire.CodeHash(lockerID, code) }

// MaskHolder masks a holder's phone number: "134****8888".
func MaskHolder(holder string) string { return wire.MaskHolder(holder) }
