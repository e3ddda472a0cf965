package client

import (
	"context"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
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
// connection of its epoch.
func (l *Link) drain(ctx context.Context, s *session) {
	var (
		window []flight // in seq order
		after  int64    // the last seq published on this connection
	)
	tick := time.NewTicker(l.opts.DrainEvery)
	defer tick.Stop()
	errLogged := time.Time{}
	fill := true
	for {
		// Settle the publishes that completed, keeping seq order for the rest.
		kept := window[:0]
		for _, f := range window {
			select {
			case <-f.tok.Done():
				if !l.settle(ctx, s, f) {
					return
				}
			default:
				kept = append(kept, f)
			}
		}
		clear(window[len(kept):])
		window = kept

		for fill && len(window) < l.opts.InFlight {
			want := l.opts.InFlight - len(window)
			evs, err := l.opts.Locker.PendingEvents(ctx, after, want)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if time.Since(errLogged) > time.Minute {
					l.log.Error("reading the outbox", "err", err)
					errLogged = time.Now()
				}
				break // retried on the next wake-up or tick
			}
			for _, ev := range evs {
				if ev.Seq <= after {
					// PendingEvents must return seq > after in order; never
					// publish out of order.
					l.log.Error("outbox returned events out of order", "seq", ev.Seq, "after", after)
					continue
				}
				tok := s.client.Publish(l.t.traces, 1, false, []byte(ev.Payload))
				window = append(window, flight{seq: ev.Seq, tok: tok, sent: time.Now()})
				after = ev.Seq
			}
			if len(evs) < want {
				break
			}
		}
		fill = false

		var head <-chan struct{}
		if len(window) > 0 {
			head = window[0].tok.Done()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.lost:
			return
		case <-l.opts.Locker.EventsAppended():
			fill = true
		case <-head:
			fill = true
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

// settle handles one completed trace publish. It returns false when the
// connection is over and draining on it must stop.
func (l *Link) settle(ctx context.Context, s *session, f flight) bool {
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
	if err := l.opts.Locker.AckEvent(ctx, f.seq); err != nil && ctx.Err() == nil {
		// It stays in the outbox and is sent again after the next reconnect.
		l.log.Error("acknowledging an outbox event", "seq", f.seq, "err", err)
	}
	return true
}
