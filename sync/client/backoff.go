package client

import (
	"math/rand/v2"
	"time"
)

// backoff is full-jitter exponential back-off: before attempt n (counting
// from 0) the link sleeps a random time in [0, min(max, min·2^n)]. The count
// is reset only when a connection stayed up for at least stable, so that a
// broker that accepts and at once drops connections is not hammered.
//
// A backoff is used by one goroutine only.
type backoff struct {
	min, max time.Duration
	stable   time.Duration
	rnd      func(n int64) int64 // random in [0, n); rand.Int64N

	attempt int
	upSince time.Time // zero when not connected
}

func newBackoff(min, max, stable time.Duration) *backoff {
	return &backoff{min: min, max: max, stable: stable, rnd: rand.Int64N}
}

// ceiling is the upper bound of the next sleep.
func (b *backoff) ceiling() time.Duration {
	c := b.min
	for i := 0; i < b.attempt && c < b.max; i++ {
		c *= 2
	}
	return min(c, b.max)
}

// next returns how long to sleep before the next connection attempt and
// counts the attempt.
func (b *backoff) next() time.Duration {
	c := b.ceiling()
	b.attempt++
	if c <= 0 {
		return 0
	}
	return time.Duration(b.rnd(int64(c) + 1))
}

// connected records that a connection came up at now.
func (b *backoff) connected(now time.Time) { b.upSince = now }

// lost records that the connection went down at now; the attempt count is
// reset only if it had been up for at least b.stable.
func (b *backoff) lost(now time.Time) {
	if !b.upSince.IsZero() && now.Sub(b.upSince) >= b.stable {
		b.attempt = 0
	}
	b.upSince = time.Time{}
}
