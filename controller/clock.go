package controller

import (
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
	if err != nil || !ok {
		return err
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		c.highWater = t
	}
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
