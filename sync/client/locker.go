package client

import (
	"context"

	"github.com/openlocker/locker/controller/wire"
)

// Locker is what the MQTT link needs from the controller. *controller.Controller
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

// BatchAcker is implemented by a Locker that can remove many outbox events in
// one transaction. When the Locker implements it, the link acknowledges the
// events whose PUBACKs arrived in batches (a contiguous or not run of seqs,
// at most AckBatch of them, at most AckDelay after the first PUBACK) instead
// of one AckEvent per event: with synchronous=FULL a transaction costs a
// disk sync, and one per event caps the drain at a few thousand a second.
//
// A batch holds only seqs whose own PUBACK arrived on the connection that
// was current at that moment; a crash before the batch is committed leaves
// them in the outbox, and they are sent again (at least once).
type BatchAcker interface {
	// AckEvents removes every listed event from the outbox in one
	// transaction; seqs no longer there are not an error.
	AckEvents(ctx context.Context, seqs []int64) error
}

// DiskUser is implemented by a Locker that can say how much disk its
// database takes; the link then adds it to the status as the extension
// field `db_bytes` (docs/protocol.md).
type DiskUser interface {
	// DBBytes is the size on disk of the database with its journal.
	DBBytes(ctx context.Context) (int64, error)
}
