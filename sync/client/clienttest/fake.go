// Package clienttest provides a fake Locker for tests of the MQTT link and of
// programs that wire it up.
package clienttest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/client"
)

var _ client.Locker = (*Locker)(nil)

// Locker is an in-memory client.Locker. It records what the link hands it,
// keeps an outbox of trace events, and lets a test change its status and
// compartments. It is safe for concurrent use.
type Locker struct {
	id       string
	appended chan struct{}
	changed  chan struct{}

	mu           sync.Mutex
	lastSeq      int64
	outbox       []wire.OutboxEvent // in seq order
	acks         []int64
	grants       []*wire.GrantsBody
	commands     []*wire.Command
	rejections   []string
	compartments []wire.CompartmentState
	seen         map[string]bool // executed command ids

	failPending error // set by FailPending
}

// New returns a fake locker with the given id and n free compartments of size M.
func New(id string, n int) *Locker {
	f := &Locker{
		id:       id,
		appended: make(chan struct{}, 1),
		changed:  make(chan struct{}, 1),
		seen:     map[string]bool{},
	}
	for i := 1; i <= n; i++ {
		f.compartments = append(f.compartments, wire.CompartmentState{Number: i, Size: "M", State: "free", Door: "closed"})
	}
	return f
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// LockerID implements client.Locker.
func (f *Locker) LockerID() string { return f.id }

// ApplyGrants records the body and counts every op as applied.
func (f *Locker) ApplyGrants(_ context.Context, body *wire.GrantsBody) (wire.GrantsAck, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants = append(f.grants, body)
	return wire.GrantsAck{IssuedAt: body.IssuedAt, Applied: len(body.Ops)}, nil
}

// Execute records the command; a repeated command id gets "duplicate".
func (f *Locker) Execute(_ context.Context, cmd *wire.Command) (wire.CommandResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen[cmd.CommandID] {
		return wire.CommandResult{CommandID: cmd.CommandID, OK: false, Error: "duplicate"}, nil
	}
	f.seen[cmd.CommandID] = true
	f.commands = append(f.commands, cmd)
	return wire.CommandResult{CommandID: cmd.CommandID, OK: true}, nil
}

// RejectEnvelope records the reason (without the controller's rate limit).
func (f *Locker) RejectEnvelope(_ context.Context, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rejections = append(f.rejections, reason)
	return nil
}

// PendingEvents implements client.Locker.
func (f *Locker) PendingEvents(_ context.Context, after int64, limit int) ([]wire.OutboxEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPending != nil {
		return nil, f.failPending
	}
	i, _ := slices.BinarySearchFunc(f.outbox, after+1, func(e wire.OutboxEvent, seq int64) int {
		return cmp.Compare(e.Seq, seq)
	})
	end := min(len(f.outbox), i+limit)
	return slices.Clone(f.outbox[i:end]), nil
}

// AckEvent removes the event; acknowledging an event no longer there is
// recorded too (a duplicate acknowledgement) and is not an error.
func (f *Locker) AckEvent(_ context.Context, seq int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acks = append(f.acks, seq)
	f.outbox = slices.DeleteFunc(f.outbox, func(e wire.OutboxEvent) bool { return e.Seq == seq })
	return nil
}

// EventsAppended implements client.Locker.
func (f *Locker) EventsAppended() <-chan struct{} { return f.appended }

// Status implements client.Locker.
func (f *Locker) Status(context.Context) (wire.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := wire.Counts{Total: len(f.compartments)}
	for _, cs := range f.compartments {
		switch cs.State {
		case "free":
			c.Free++
		case "reserved":
			c.Reserved++
		case "occupied":
			c.Occupied++
		case "expired":
			c.Expired++
		case "disabled":
			c.Disabled++
		case "fault":
			c.Fault++
		}
	}
	return wire.Status{LockerID: f.id, LastSeq: f.lastSeq, Outbox: len(f.outbox), Compartments: c}, nil
}

// Compartments implements client.Locker.
func (f *Locker) Compartments(context.Context) (wire.CompartmentsReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return wire.CompartmentsReport{LockerID: f.id, Compartments: slices.Clone(f.compartments)}, nil
}

// Changed implements client.Locker.
func (f *Locker) Changed() <-chan struct{} { return f.changed }

// Append records n trace events of the given type and signals EventsAppended.
// It returns the seq of the last one.
func (f *Locker) Append(typ string, n int) int64 {
	f.mu.Lock()
	for range n {
		f.lastSeq++
		t := wire.Trace{
			EventID: fmt.Sprintf("%s-%d", f.id, f.lastSeq),
			Seq:     f.lastSeq,
			Time:    "2026-11-22T10:03:12.345Z",
			Type:    typ,
			Content: "test event",
		}
		b, _ := json.Marshal(t)
		f.outbox = append(f.outbox, wire.OutboxEvent{Seq: t.Seq, Payload: b})
	}
	last := f.lastSeq
	f.mu.Unlock()
	signal(f.appended)
	return last
}

// SetCompartment changes one compartment's state and door and signals Changed.
func (f *Locker) SetCompartment(number int, state, door string) error {
	f.mu.Lock()
	i := slices.IndexFunc(f.compartments, func(c wire.CompartmentState) bool { return c.Number == number })
	if i < 0 {
		f.mu.Unlock()
		return errors.New("no such compartment")
	}
	f.compartments[i].State, f.compartments[i].Door = state, door
	f.mu.Unlock()
	signal(f.changed)
	return nil
}

// FailPending makes PendingEvents return err (nil: work again).
func (f *Locker) FailPending(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failPending = err
}

// Outbox returns the seqs still in the outbox.
func (f *Locker) Outbox() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := make([]int64, len(f.outbox))
	for i, e := range f.outbox {
		s[i] = e.Seq
	}
	return s
}

// Acks returns every seq passed to AckEvent, in call order.
func (f *Locker) Acks() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.acks)
}

// Grants returns the grants bodies applied so far.
func (f *Locker) Grants() []*wire.GrantsBody {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.grants)
}

// Commands returns the commands executed so far.
func (f *Locker) Commands() []*wire.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.commands)
}

// Rejections returns the reasons passed to RejectEnvelope.
func (f *Locker) Rejections() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rejections)
}

// BatchLocker is a Locker that also acknowledges outbox events in batches
// (client.BatchAcker) and reports a database size (client.DiskUser).
type BatchLocker struct {
	*Locker

	mu      sync.Mutex
	batches [][]int64
}

var (
	_ client.BatchAcker = (*BatchLocker)(nil)
	_ client.DiskUser   = (*BatchLocker)(nil)
)

// NewBatching returns a BatchLocker with the given id and n free compartments.
func NewBatching(id string, n int) *BatchLocker { return &BatchLocker{Locker: New(id, n)} }

// AckEvents removes the events in one step; each seq is recorded in Acks.
func (b *BatchLocker) AckEvents(_ context.Context, seqs []int64) error {
	b.mu.Lock()
	b.batches = append(b.batches, slices.Clone(seqs))
	b.mu.Unlock()
	f := b.Locker
	f.mu.Lock()
	defer f.mu.Unlock()
	gone := make(map[int64]bool, len(seqs))
	for _, s := range seqs {
		gone[s] = true
		f.acks = append(f.acks, s)
	}
	f.outbox = slices.DeleteFunc(f.outbox, func(e wire.OutboxEvent) bool { return gone[e.Seq] })
	return nil
}

// Batches returns the batches passed to AckEvents, in call order.
func (b *BatchLocker) Batches() [][]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.batches)
}

// DBBytes reports 4096 bytes per outbox event plus 8192.
func (b *BatchLocker) DBBytes(context.Context) (int64, error) {
	f := b.Locker
	f.mu.Lock()
	defer f.mu.Unlock()
	return 8192 + 4096*int64(len(f.outbox)), nil
}
