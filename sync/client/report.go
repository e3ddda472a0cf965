package client

import (
	"context"
	"encoding/json"
	"time"

	"github.com/openlocker/locker/controller/wire"
)

// throttle coalesces changes into at most one publish per interval.
type throttle struct {
	every time.Duration
	last  time.Time // last publish attempt; zero: never
	dirty bool
}

// due reports whether a publish is due at now, or else how long until it is
// (0 when nothing is pending).
func (t *throttle) due(now time.Time) (bool, time.Duration) {
	if !t.dirty {
		return false, 0
	}
	if t.last.IsZero() {
		return true, 0
	}
	if wait := t.last.Add(t.every).Sub(now); wait > 0 {
		return false, wait
	}
	return true, 0
}

// report publishes the retained status and compartments on s: at once, then
// after every change signalled by the controller, at most once per
// statusEvery and compartmentsEvery. A failed publish is retried at the next
// slot.
func (l *Link) report(ctx context.Context, s *session) {
	status := throttle{every: statusEvery, dirty: true}
	comps := throttle{every: compartmentsEvery, dirty: true}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var wait time.Duration
		for _, step := range []struct {
			t    *throttle
			pub  func(context.Context, *session) error
			what string
		}{{&comps, l.publishCompartments, "compartments"}, {&status, l.publishStatus, "status"}} {
			ok, w := step.t.due(time.Now())
			if ok {
				step.t.last = time.Now()
				if err := step.pub(ctx, s); err != nil {
					if ctx.Err() != nil || isClosed(s.lost) {
						return
					}
					l.log.Warn(step.what+" not published", "err", err)
					w = step.t.every // stays dirty: retry at the next slot
				} else {
					step.t.dirty = false
				}
			}
			if w > 0 && (wait == 0 || w < wait) {
				wait = w
			}
		}
		var tc <-chan time.Time
		if wait > 0 {
			timer.Reset(wait) // Go ≥ 1.23: Reset discards a stale fire
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-s.lost:
			return
		case <-l.opts.Locker.Changed():
			status.dirty, comps.dirty = true, true
		case <-tc:
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (l *Link) publishStatus(ctx context.Context, s *session) error {
	st, err := l.opts.Locker.Status(ctx)
	if err != nil {
		return err
	}
	st.State = "online"
	st.LockerID = l.id
	if st.Software == "" {
		st.Software = l.opts.Software
	}
	st.Time = wire.FormatTime(l.opts.Now())
	var v any = st
	if du, ok := l.opts.Locker.(DiskUser); ok {
		// Extension field (docs/protocol.md): the database's size on disk.
		n, err := du.DBBytes(ctx)
		if err != nil {
			return err
		}
		v = struct {
			wire.Status
			DBBytes int64 `json:"db_bytes"`
		}{st, n}
	}
	payload, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return l.publishWait(ctx, s, l.t.status, true, payload)
}

func (l *Link) publishCompartments(ctx context.Context, s *session) error {
	r, err := l.opts.Locker.Compartments(ctx)
	if err != nil {
		return err
	}
	r.LockerID = l.id
	r.Time = wire.FormatTime(l.opts.Now())
	if r.Compartments == nil {
		r.Compartments = []wire.CompartmentState{}
	}
	payload, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return l.publishWait(ctx, s, l.t.compartments, true, payload)
}
