package client

import (
	"context"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/openlocker/locker/controller/wire"
)

// flight is one trace publish awaiting its PUBACK.
type flight struct {
	seq  int64
	tok  mqtt.Token
	sent time.Time
}

// pubackTimeout is how long the oldest trace publish may wait for its PUBACK
// on a connection that otherwise looks alive before the link gives the
// connection up (the keep-alive catches dead connections sooner).
const pubackTimeout = 60 * time.Second

// drain publishes the controller's outbox on s, in seq order, with at most
// InFlight publishes awaiting their PUBACK, until s is lost or ctx is done.
//
// Each connection starts again from the lowest pending seq: whatever was in
// flight on an earlier connection is sent again (the central server
// de-duplicates by event_id). An event is acknowledged to the controller only
// when its own publish completed without error while s is still the current
// connection of its epoch. Events are read readAhead at a time; with a
// BatchAcker the acknowledgements are committed in batches (see AckBatch).
func (l *Link) drain(ctx context.Context, s *session) {
	var (
		window []flight           // in seq order
		buf    []wire.OutboxEvent // read but not yet published, in seq order
		after  int64              // the last seq read on this connection
		acks   ackBatch
	)
	batcher, _ := l.opts.Locker.(BatchAcker)
	defer func() {
		// Acknowledgements already earned are kept, even on the way out.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		l.flushAcks(fctx, batcher, &acks)
	}()
	tick := time.NewTicker(drainEvery)
	defer tick.Stop()
	flushT := time.NewTimer(time.Hour)
	defer flushT.Stop()
	errLogged := time.Time{}
	fill := true
	for {
		// Settle the publishes that completed, keeping seq order for the rest.
		kept := window[:0]
		for _, f := range window {
			select {
			case <-f.tok.Done():
				if !l.settle(ctx, s, f, batcher, &acks) {
					return
				}
			default:
				kept = append(kept, f)
			}
		}
		clear(window[len(kept):])
		window = kept
		if batcher != nil && acks.due(time.Now()) {
			l.flushAcks(ctx, batcher, &acks)
		}

		for len(window) < l.opts.InFlight {
			if len(buf) == 0 {
				if !fill {
					break
				}
				evs, err := l.opts.Locker.PendingEvents(ctx, after, readAhead)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					if time.Since(errLogged) > time.Minute {
						l.log.Error("reading the outbox", "err", err)
						errLogged = time.Now()
					}
					fill = false // retried on the next wake-up or tick
					break
				}
				if len(evs) < readAhead {
					fill = false // caught up: wait for EventsAppended
				}
				for _, ev := range evs {
					if ev.Seq <= after {
						// PendingEvents must return seq > after in order;
						// never publish out of order.
						l.log.Error("outbox returned events out of order", "seq", ev.Seq, "after", after)
						continue
					}
					buf = append(buf, ev)
					after = ev.Seq
				}
				if len(buf) == 0 {
					break
				}
			}
			ev := buf[0]
			buf[0] = wire.OutboxEvent{}
			buf = buf[1:]
			tok := s.client.Publish(l.t.traces, 1, false, []byte(ev.Payload))
			window = append(window, flight{seq: ev.Seq, tok: tok, sent: time.Now()})
		}

		var head <-chan struct{}
		if len(window) > 0 {
			head = window[0].tok.Done()
		}
		var flushC <-chan time.Time
		if len(acks.seqs) > 0 {
			if len(window) == 0 {
				// Idle: nothing else will complete soon; commit now.
				l.flushAcks(ctx, batcher, &acks)
			} else {
				flushT.Reset(max(time.Until(acks.first.Add(AckDelay)), 0))
				flushC = flushT.C
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.lost:
			return
		case <-l.opts.Locker.EventsAppended():
			fill = true
		case <-head:
		case <-flushC:
		case <-tick.C:
			fill = true
			if len(window) > 0 && time.Since(window[0].sent) > pubackTimeout && l.isCurrent(s) {
				l.log.Warn("no PUBACK for a trace; reconnecting", "seq", window[0].seq, "waited", time.Since(window[0].sent).Round(time.Second))
				l.drop(s)
				return
			}
		}
	}
}

// ackBatch collects the seqs whose PUBACKs arrived, for a BatchAcker.
type ackBatch struct {
	seqs  []int64
	first time.Time // when the first seq of the batch was added
}

func (a *ackBatch) add(seq int64, now time.Time) {
	if len(a.seqs) == 0 {
		a.first = now
	}
	a.seqs = append(a.seqs, seq)
}

func (a *ackBatch) due(now time.Time) bool {
	return len(a.seqs) >= AckBatch || (len(a.seqs) > 0 && now.Sub(a.first) >= AckDelay)
}

// flushAcks commits the batch. On failure the events stay in the outbox and
// are sent again after the next reconnect or restart (at least once).
func (l *Link) flushAcks(ctx context.Context, b BatchAcker, a *ackBatch) {
	if b == nil || len(a.seqs) == 0 {
		return
	}
	if err := b.AckEvents(ctx, a.seqs); err != nil && ctx.Err() == nil {
		l.log.Error("acknowledging outbox events", "from", a.seqs[0], "n", len(a.seqs), "err", err)
	}
	a.seqs = a.seqs[:0]
}

// settle handles one completed trace publish. It returns false when the
// connection is over and draining on it must stop.
func (l *Link) settle(ctx context.Context, s *session, f flight, b BatchAcker, acks *ackBatch) bool {
	if err := f.tok.Error(); err != nil {
		if l.isCurrent(s) {
			// Later events may already be on the wire: to keep seq order,
			// give this connection up and start again on a new one.
			l.log.Warn("trace publish failed; reconnecting", "seq", f.seq, "err", err)
			l.drop(s)
		}
		return false
	}
	// A token from an earlier connection proves nothing (paho completes
	// tokens without a PUBACK when a session is resumed): only the current
	// connection's acknowledgements remove events.
	if !l.isCurrent(s) {
		return false
	}
	if b != nil {
		acks.add(f.seq, time.Now())
		return true
	}
	if err := l.opts.Locker.AckEvent(ctx, f.seq); err != nil && ctx.Err() == nil {
		// It stays in the outbox and is sent again after the next reconnect.
		l.log.Error("acknowledging an outbox event", "seq", f.seq, "err", err)
	}
	return true
}
