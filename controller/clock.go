package controller

import (
	"context"
	"strings"
	"time"

	"github.com/openlocker/locker/controller/store"
)

// MinSaneTime is the earliest wall-clock time the controller trusts: this
// software was built after it. A board without a real-time clock boots in
// 1970 until NTP sets its clock.
var MinSaneTime = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// The clock rule (docs/protocol.md, "Time"):
//
//   - A reading before Options.MinSaneTime is not trusted.
//   - While the clock is not trusted, the controller's time is the last
//     trusted time it recorded (kept in the database) plus the time elapsed
//     since start on the monotonic clock, and traces recorded meanwhile say
//     so with "time_estimated": true. It never goes backwards.
//   - While the clock is not trusted nothing expires: no pickup_expired, no
//     reservation ends, no door_left_open.
//   - Keypad codes still work, judged at the estimated time.

const highWaterKey = "clock.trusted"

// estimateKey holds the estimate, kept to the hour while the clock is not
// trusted: a restart counts on from it, not from the last trusted time (a
// board that ran for days without a network clock and restarted judged
// codes days in the past, and an ended code worked again). Emptied once the
// clock is trusted: the trusted clock rules both ways.
const estimateKey = "clock.estimate"

// horizonKey holds the purge's horizon (advanceHorizon) and the trusted
// time it was recorded at: "horizon wall", both RFC 3339.
const horizonKey = "purge.horizon"

// elapsed reads the monotonic clock: the Clock's own when it has one,
// else its wall time since start.
func (c *Controller) elapsed() time.Duration {
	if m, ok := c.clock.(Monotonic); ok {
		return m.Elapsed()
	}
	return c.clock.Now().Sub(c.bootAt)
}

// Now is the controller's time (the clock's when it is trusted, else the
// estimate): the time at which codes are judged and envelopes expire. It
// may be called from any goroutine.
func (c *Controller) Now() time.Time { return c.now() }

// now is the controller's time: the clock's when it is trusted, else the
// estimate.
func (c *Controller) now() time.Time {
	t := c.clock.Now()
	if c.trusted(t) {
		return t
	}
	c.clockMu.Lock()
	defer c.clockMu.Unlock()
	est := c.highWater.Add(t.Sub(c.bootAt))
	if est.Before(c.highWater) {
		return c.highWater
	}
	return est
}

func (c *Controller) trusted(t time.Time) bool { return !t.Before(c.opts.MinSaneTime) }

// clockTrusted says whether the clock can be trusted now.
func (c *Controller) clockTrusted() bool { return c.trusted(c.clock.Now()) }

// startClock notes the clock at start and reads the last trusted time
// recorded.
func (c *Controller) startClock(tx *store.Tx) error {
	c.clockMu.Lock()
	defer c.clockMu.Unlock()
	c.bootAt = c.clock.Now()
	v, ok, err := tx.Setting(highWaterKey)
	if err != nil {
		return err
	}
	if t, err := time.Parse(time.RFC3339Nano, v); ok && err == nil {
		c.highWater = t
	}
	if err := c.startHorizon(tx); err != nil {
		return err
	}
	if !ok {
		return nil
	}
	e, ok, err := tx.Setting(estimateKey)
	if err != nil || !ok || e == "" {
		return err
	}
	c.estimateStored = true
	if t, err := time.Parse(time.RFC3339Nano, e); err == nil && t.After(c.highWater) {
		c.highWater = t
		c.estimateSaved = t
	}
	return nil
}

// saveEstimate records the estimate while the clock is not trusted, once
// an hour (the housekeeping tick calls it; a restart loses at most that
// hour, never going back further).
func (c *Controller) saveEstimate(ctx context.Context, now time.Time) {
	if c.clockTrusted() || now.Sub(c.estimateSaved) < time.Hour {
		return
	}
	_ = c.update(ctx, func(tx *store.Tx) error { return c.noteEstimate(tx, now) })
}

// noteEstimate records the estimate now in tx when the clock is not
// trusted and the last one recorded is an hour old (every trace recorded
// meanwhile calls it too).
func (c *Controller) noteEstimate(tx *store.Tx, now time.Time) error {
	if c.clockTrusted() || now.Sub(c.estimateSaved) < time.Hour {
		return nil
	}
	if err := tx.SetSetting(estimateKey, now.UTC().Format(time.RFC3339Nano)); err != nil {
		return err
	}
	// Noted before the commit: a rolled-back write costs at most an hour
	// of the estimate at the next restart.
	c.estimateSaved, c.estimateStored = now, true
	return nil
}

// saveHighWater records now as the last trusted time, when it is. It
// follows the trusted clock both ways: a clock that jumped into the future
// and was set right again must not leave the future behind as the base of
// every later estimate (a board that then boots without a network clock
// would judge codes, and expire parcels, at that future time).
func (c *Controller) saveHighWater(tx *store.Tx) error {
	t := c.clock.Now()
	if !c.trusted(t) {
		return nil
	}
	if c.estimateStored {
		// An estimate from an untrusted spell must not outlive it: it may
		// rest on a future the trusted clock has since left.
		if err := tx.SetSetting(estimateKey, ""); err != nil {
			return err
		}
		c.estimateStored, c.estimateSaved = false, time.Time{}
	}
	c.clockMu.Lock()
	d := t.Sub(c.highWater)
	// Kept to the hour: the estimate needs no more, and most transactions
	// are two pages lighter (the setting and its index), which is most of
	// a card's wear at rest.
	if d < time.Hour && d > -time.Hour {
		c.clockMu.Unlock()
		return nil
	}
	c.highWater = t
	c.clockMu.Unlock()
	return tx.SetSetting(highWaterKey, t.UTC().Format(time.RFC3339Nano))
}

// The purge's horizon: what ended before it can be forgotten. It follows
// now - PurgeAfter, but moves on at most as fast as time passes on the
// monotonic clock: a network clock a year ahead (trusted: it is after
// MinSaneTime) would otherwise purge every tombstone and used-up grant,
// and once the clock was set right, their envelopes, still alive, would
// apply again. It goes back with a clock set back (that only keeps more).
// It is recorded with the trusted time of the record; at a start, it
// catches up on the time since by that time, by at most PurgeAfter -
// MaxEnvelopeLifetime: one start on a clock far ahead still leaves it
// before the issue of any envelope alive, and a locker that is off for an
// hour every night does not fall behind. (One off for longer than that
// keeps the rest as extra history: the purge lags by it.)

// startHorizon reads the recorded horizon at start (c.highWater read).
func (c *Controller) startHorizon(tx *store.Tx) error {
	c.horizonAt, c.horizonRecorded = c.elapsed(), false
	now := c.clock.Now()
	v, ok, err := tx.Setting(horizonKey)
	if err != nil {
		return err
	}
	var h, wall time.Time
	if f := strings.Fields(v); ok && len(f) == 2 {
		h, _ = time.Parse(time.RFC3339Nano, f[0])
		wall, _ = time.Parse(time.RFC3339Nano, f[1])
	}
	switch {
	case !h.IsZero() && !wall.IsZero():
		if c.trusted(now) && now.After(wall) {
			h = h.Add(min(now.Sub(wall), c.opts.PurgeAfter-MaxEnvelopeLifetime(c.opts.PurgeAfter)))
		}
	case !c.highWater.IsZero():
		// None recorded yet (a database from before it was kept): from
		// the last trusted time recorded, or now if earlier.
		base := c.highWater
		if c.trusted(now) && now.Before(base) {
			base = now
		}
		h = base.Add(-c.opts.PurgeAfter)
	case c.trusted(now):
		h = now.Add(-c.opts.PurgeAfter) // a new locker
	}
	c.horizon = h
	return nil
}

// advanceHorizon moves the horizon on (every tick, on a trusted clock). It
// is recorded at the first tick of a run and with every purge (daily): the
// catch-up at the next start covers what ran since the record too.
func (c *Controller) advanceHorizon(ctx context.Context, now time.Time) {
	if !c.clockTrusted() || c.storeErr != nil {
		return
	}
	el := c.elapsed()
	target := now.Add(-c.opts.PurgeAfter)
	h := target
	if !c.horizon.IsZero() {
		if most := c.horizon.Add(el - c.horizonAt); most.Before(h) {
			h = most
		}
	}
	c.horizon, c.horizonAt = h, el
	if !c.horizonRecorded {
		if err := c.update(ctx, func(tx *store.Tx) error { return c.recordHorizon(tx, now) }); err == nil {
			c.horizonRecorded = true
		}
	}
}

// recordHorizon writes the horizon with the trusted time now.
func (c *Controller) recordHorizon(tx *store.Tx, now time.Time) error {
	return tx.SetSetting(horizonKey, c.horizon.UTC().Format(time.RFC3339Nano)+" "+now.UTC().Format(time.RFC3339Nano))
}
