package hal

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Lock releases.
//
// A Release call becomes a releaseReq in Hardware.reqs, in call order. The
// lock worker (releaseLoop) walks the list whenever something changed and
// starts a pulse for each queued request it may start now:
//
//   - fewer than locks.max_energised coils are on (the power budget);
//   - at least locks.gap has passed since any pulse started or ended, and
//     no running pulse is due to end within locks.gap (it ends first);
//   - the request's coil is not on and has cooled down (locks.cooldown
//     since its last pulse ended).
//
// A request that must wait for its own coil to cool down does not hold up
// the requests behind it; otherwise the list is served first come, first
// served, so an "open all" of 96 compartments comes out staggered within
// the budget. Each pulse runs in its own goroutine; when it ends, the
// request waits up to locks.confirm for the debounced door sensor to read
// open. If it does not, the request is queued again in its old place for
// one retry pulse; if the door stays shut after that too, the release fails
// with ErrLockFault. A request whose door already reads open still gets one
// pulse, and is done once it has ended: a door sensor stuck open (a magnet
// that fell off) must not keep a recipient from a parcel behind a door that
// is really shut, and a pulse on a door that is really open does no harm.
// Each request ends with exactly one LockReleased event.

// releasePhase is where a release request is.
type releasePhase int

const (
	phaseQueued     releasePhase = iota + 1 // waiting for the budget
	phasePulsing                            // its coil is energised
	phaseConfirming                         // pulse done, waiting for the door to read open
)

// releaseReq is one Release call; guarded by Hardware.mu.
type releaseReq struct {
	n        int
	phase    releasePhase
	pulses   int       // pulses started
	opened   bool      // the door read open since the first pulse started
	deadline time.Time // phaseConfirming: give up on this pulse then
}

// lockState is the lock worker's bookkeeping; guarded by Hardware.mu.
type lockState struct {
	reqs      []*releaseReq
	on        int         // coils energised
	coilOn    []bool      // by compartment index
	endsAt    []time.Time // by compartment index: when its running pulse will end
	coolUntil []time.Time // by compartment index
	lastStart time.Time   // latest start of a pulse (after its pin write)
	lastEnd   time.Time   // latest end of a pulse (after its pin write)
	unsent    int         // LockReleased events of ended requests not yet in the events channel
	stuck     []bool      // by compartment index: a switch-off failed, the coil may be on
	stuckN    int         // coils stuck: they count against the power budget
	reports   []Event     // SensorFault/SensorRecovered of stuck coils, to emit
}

// releaseLoop is the lock worker: it starts pulses and resolves releases
// whenever woken (a Release, the end of a pulse, a door that opened) or
// when the next request becomes due, until ctx is done.
func (h *Hardware) releaseLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		events, starts, reports, next := h.scheduleLocked()
		for _, r := range starts {
			h.pulses.Go(func() { h.protect(func() { h.pulseOne(ctx, r) }) })
		}
		for _, ev := range reports {
			if !h.emit(ctx, ev) {
				return
			}
		}
		for i, ev := range events {
			if !h.emitReleased(ctx, ev) {
				h.mu.Lock()
				h.locks.unsent -= len(events) - i - 1 // never to be sent
				h.mu.Unlock()
				return
			}
		}
		var due <-chan time.Time
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), 0))
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		case <-due:
		}
		if due != nil && !timer.Stop() {
			select { // drain a fired timer so that Reset starts afresh
			case <-timer.C:
			default:
			}
		}
	}
}

// scheduleLocked takes h.mu and walks the requests: it ends those that are
// done, starts the pulses that may start, and returns the events to emit,
// the requests whose pulses to run, the reports of stuck coils and when to
// look again (zero: only when woken).
func (h *Hardware) scheduleLocked() (events []Event, starts []*releaseReq, reports []Event, next time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.halted {
		return nil, nil, nil, time.Time{}
	}
	reports, h.locks.reports = h.locks.reports, nil
	now := time.Now()
	soon := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	ls := &h.locks
	// A pulse that ends soon blocks new starts until it has ended, so that
	// no pulse starts within the gap before another one's end.
	endingSoon := false
	for i, on := range ls.coilOn {
		if on && ls.endsAt[i].Before(now.Add(h.gap+endMargin)) {
			endingSoon = true
		}
	}
	keep := ls.reqs[:0]
	for _, r := range ls.reqs {
		i := r.n - 1
		doorOpen := h.doors[i].state.Load()
		switch r.phase {
		case phaseQueued:
			if r.opened || (doorOpen && r.pulses > 0) {
				h.clog[i].Info("released", "pulses", r.pulses, "how", "door opened")
				events = append(events, Event{Kind: LockReleased, Compartment: r.n, At: now})
				continue
			}
			at := later(ls.lastStart.Add(h.gap), ls.lastEnd.Add(h.gap), ls.coolUntil[i])
			switch {
			case ls.coilOn[i] || ls.stuck[i] || ls.on+ls.stuckN >= h.maxOn || (endingSoon && h.gap > 0):
				// the end of a pulse wakes the worker
			case now.Before(at):
				soon(at)
			default:
				r.phase = phasePulsing
				r.pulses++
				ls.on++
				ls.coilOn[i] = true
				ls.endsAt[i] = now.Add(h.pulse)
				ls.lastStart = now // moved on by the pulse once its pin is written
				endingSoon = endingSoon || h.pulse < h.gap+endMargin
				starts = append(starts, r)
			}
		case phaseConfirming:
			switch {
			case r.opened || doorOpen:
				h.clog[i].Info("released", "pulses", r.pulses)
				events = append(events, Event{Kind: LockReleased, Compartment: r.n, At: now})
				continue
			case now.Before(r.deadline):
				soon(r.deadline)
			case r.pulses < 2:
				h.clog[i].Warn("door did not open after the release pulse: one more")
				r.phase = phaseQueued
				soon(now)
			default:
				h.clog[i].Error("lock fault: door did not open", "pulses", r.pulses)
				events = append(events, Event{Kind: LockReleased, Compartment: r.n, At: now,
					Err: fmt.Errorf("%w: compartment %d, %d pulses", ErrLockFault, r.n, r.pulses)})
				continue
			}
		}
		keep = append(keep, r)
	}
	clear(ls.reqs[len(keep):])
	ls.reqs = keep
	ls.unsent += len(events)
	return events, starts, reports, next
}

// endMargin is how late a pulse's end may come (timer latency) and still
// be kept a gap away from the start of another pulse.
const endMargin = 10 * time.Millisecond

// later returns the latest of ts.
func later(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

// pulseOne gives r's pulse and moves r on: to confirming, or, when the pulse
// could not be given, to its end with the error.
func (h *Hardware) pulseOne(ctx context.Context, r *releaseReq) {
	i := r.n - 1
	start := time.Now()
	err := h.coils[i].pulse(ctx, h.pulse, func(t time.Time) {
		h.mu.Lock()
		h.locks.lastStart = later(h.locks.lastStart, t)
		h.mu.Unlock()
	})
	end := time.Now()
	h.mu.Lock()
	ls := &h.locks
	ls.on--
	ls.coilOn[i] = false
	ls.lastEnd = later(ls.lastEnd, end)
	ls.coolUntil[i] = end.Add(h.cooldown)
	var ev *Event
	if err == nil || errors.Is(err, ErrCoilStuck) {
		// A coil that did not go off was on all the same: the door decides
		// the release, while the coil's own report (SensorFault "lock")
		// tells of the switch-off, and the power budget counts the coil
		// until it is off.
		r.phase, r.deadline = phaseConfirming, end.Add(h.confirm)
		h.clog[i].Debug("release pulse", "pulse", end.Sub(start).Round(time.Millisecond), "attempt", r.pulses, "err", err)
	} else if !h.halted && ctx.Err() == nil {
		h.clog[i].Error("release pulse", "err", err)
		for j, q := range ls.reqs {
			if q == r {
				ls.reqs = append(ls.reqs[:j], ls.reqs[j+1:]...)
				ls.unsent++
				ev = &Event{Kind: LockReleased, Compartment: r.n, Err: err, At: end}
				break
			}
		}
	}
	h.mu.Unlock()
	if ev != nil {
		h.emitReleased(ctx, *ev)
	}
	h.poke()
}

// coilReport hears from the coil of compartment index i that its switch-off
// failed (err, ErrCoilStuck) or that it is off again after such a failure
// (nil). A stuck coil counts against the power budget and blocks its own
// pulses until it is off; the lock worker reports it as a SensorFault of
// the compartment with Source "lock", and its end as SensorRecovered.
func (h *Hardware) coilReport(i int, err error) {
	now := time.Now()
	h.mu.Lock()
	ls := &h.locks
	ev := Event{Kind: SensorRecovered, Compartment: i + 1, Source: "lock", At: now}
	if err != nil {
		ev.Kind, ev.Err = SensorFault, err
		if !ls.stuck[i] {
			ls.stuck[i] = true
			ls.stuckN++
		}
		h.clog[i].Error("coil may be energised: switch-off failed; retrying", "err", err)
	} else {
		if ls.stuck[i] {
			ls.stuck[i] = false
			ls.stuckN--
			ls.lastEnd = later(ls.lastEnd, now)
			ls.coolUntil[i] = later(ls.coolUntil[i], now.Add(h.cooldown))
		}
		h.clog[i].Warn("coil switched off after a failed switch-off")
	}
	if !h.halted {
		ls.reports = append(ls.reports, ev)
	}
	h.mu.Unlock()
	h.poke()
}

// emitReleased emits the LockReleased event of a request that has ended;
// until it is in the events channel, Busy still counts it.
func (h *Hardware) emitReleased(ctx context.Context, ev Event) bool {
	ok := h.emit(ctx, ev)
	h.mu.Lock()
	h.locks.unsent--
	h.mu.Unlock()
	return ok
}

// doorOpened notes that compartment n's door read open, for the releases
// that wait for it.
func (h *Hardware) doorOpened(n int) {
	h.mu.Lock()
	found := false
	for _, r := range h.locks.reqs {
		if r.n == n && r.pulses > 0 {
			r.opened, found = true, true
		}
	}
	h.mu.Unlock()
	if found {
		h.poke()
	}
}

// poke wakes the lock worker.
func (h *Hardware) poke() {
	select {
	case h.wake <- struct{}{}:
	default: // already signalled
	}
}
