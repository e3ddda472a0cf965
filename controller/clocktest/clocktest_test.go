package clocktest

import (
	"sync"
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	c := New(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now = %v, want %v", got, t0)
	}
	c.Advance(90 * time.Second)
	if got := c.Now(); !got.Equal(t0.Add(90 * time.Second)) {
		t.Errorf("after Advance: %v", got)
	}
	c.Set(time.Unix(0, 0))
	if got := c.Now(); !got.Equal(time.Unix(0, 0)) {
		t.Errorf("after Set: %v", got)
	}
	// Concurrent readers and writers (run with -race).
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				c.Advance(time.Millisecond)
				_ = c.Now()
			}
		})
	}
	wg.Wait()
	if got := c.Now(); !got.Equal(time.Unix(0, 0).Add(400 * time.Millisecond)) {
		t.Errorf("after 400 concurrent advances of 1 ms: %v", got)
	}
}
