// Package clocktest is the tests' settable clock: a controller.Clock (and
// the clock of anything else that asks only for Now) that moves only when
// the test moves it.
package clocktest

import (
	"sync"
	"time"
)

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	elapsed time.Duration // the monotonic clock: moved by Advance only
}

// New returns a clock that reads t until it is moved.
func New(t time.Time) *Clock { return &Clock{now: t} }

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Elapsed is the monotonic clock (controller.Monotonic): how much time
// Advance let pass since New. Set and a negative Advance, which move the
// wall time only, leave it.
func (c *Clock) Elapsed() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.elapsed
}

// Advance lets d pass, or for a negative d sets the wall time back by -d
// (a clock set right; time does not run backwards).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	if d > 0 {
		c.elapsed += d
	}
}

// Set sets the wall time to t: a clock set, or jumping, not time passing.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
