package hal

import (
	"context"
	"time"
)

// RestPoll is how often the sensors are sampled and the keypad scanned
// while they rest on inputs that tell of their changes
// (Options.InputChanges): a safety net, should a change go untold. At 1 s
// it was still 17 µs/s of an idle fleet locker's 223 (1,200 lockers).
const RestPoll = 5 * time.Second

// pacer paces a sampling loop (the sensor poller, the keypad scanner):
// a sample every period; or, when the inputs tell of their changes
// (Options.InputChanges) and the last sample left nothing in progress, a
// sample at the next change, or after RestPoll at the latest. It is owned by
// the loop's goroutine.
type pacer struct {
	t       *time.Ticker
	period  time.Duration
	changes <-chan struct{} // nil: sample every period
	cancel  func()
	resting bool
}

// newPacer starts the pacer; subscribe is Options.InputChanges (nil on real
// pins).
func newPacer(period time.Duration, subscribe func() (<-chan struct{}, func())) *pacer {
	p := &pacer{t: time.NewTicker(period), period: period, cancel: func() {}}
	if subscribe != nil {
		p.changes, p.cancel = subscribe()
	}
	return p
}

func (p *pacer) stop() {
	p.t.Stop()
	p.cancel()
}

// wait returns when the next sample is due, or false once ctx is done.
// atRest says that the last sample left nothing in progress: no debounce or
// chatter under way, no key down.
func (p *pacer) wait(ctx context.Context, atRest bool) bool {
	rest := atRest && p.changes != nil
	if rest != p.resting {
		p.resting = rest
		if rest {
			p.t.Reset(RestPoll)
		} else {
			p.t.Reset(p.period)
		}
	}
	if !rest {
		select {
		case <-ctx.Done():
			return false
		case <-p.t.C:
			return true
		}
	}
	select {
	case <-ctx.Done():
		return false
	case <-p.changes:
		return true
	case <-p.t.C:
		return true
	}
}

// sensorsAtRest reports whether the last poll left every sensor at rest:
// its debounced level read, no change pending, no chatter fault (whose end
// is judged by time). A cabinet with expanders or RS485 boards never rests:
// their transactions and checks are due every poll.
func (h *Hardware) sensorsAtRest() bool {
	if len(h.expanders) > 0 || len(h.buses) > 0 {
		return false
	}
	for i, d := range h.doors {
		if !d.atRest() {
			return false
		}
		if p := h.parcels[i]; p != nil && !p.atRest() {
			return false
		}
	}
	return true
}

func (s *sensor) atRest() bool { return !s.deb.pending && !s.chat.faulty && s.chat.raw == s.deb.stable }

// atRest reports whether the scanner has nothing in progress: no key down,
// no press or release being confirmed.
func (k *Keypad) atRest() bool { return k.down < 0 && k.cand < 0 && k.count == 0 }
