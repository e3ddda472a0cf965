package client

import (
	"context"

	"github.com/openlocker/locker/controller/wire"
)

// Locker is what the MQTT link needs from the wire. *wire.Controller
// implements it; tests use a fake.
//
// None of these methods may be called from inside a paho callback: the link
// hands every received message to its own goroutine first.
type Locker interface {
	// LockerID is this locker's id (the MQTT client id and topic prefix).
	LockerID() string
	// ApplyGrants applies all ops of one verified, decoded grants body in one
	// transaction and says what happened to each.
	ApplyGrants(ctx context.Context, body *wire.GrantsBody) (wire.GrantsAck, error)
	// Execute runs one verified, decoded command at most once.
	Execute(ctx context.Context, cmd *wire.Command) (wire.CommandResult, error)
	// RejectEnvelope records an envelope_rejected trace with the reason (the
	// controller rate-limits these to one per 10 s, counting the rest).
	RejectEnvelope(ctx context.Context, reason string) error
	// PendingEvents returns up to limit outbox events with seq > after, in seq order.
	PendingEvents(ctx context.Context, after int64, limit int) ([]wire.OutboxEvent, error)
	// AckEvent removes the event from the outbox: call it only on its own PUBACK.
	AckEvent(ctx context.Context, seq int64) error
	// EventsAppended signals (capacity 1, never blocks the sender) that new
	// events were committed to the outbox.
	EventsAppended() <-chan struct{}
	// Status is the current status (State is filled in by the link).
	Status(ctx context.Context) (wire.Status, error)
	// Compartments is the current state of every compartment.
	Compartments(ctx context.Context) (wire.CompartmentsReport, error)
	// Changed signals (capacity 1) that status or compartments changed.
	Changed() <-chan struct{}
}
