//go:build linux

package rs485

import (
	"testing"
	"time"

	"github.com/openlocker/locker/hal/rs485/proto"
	"github.com/openlocker/locker/hal/rs485/rs485test"
)

// TestSilenceOutlastsBurstGaps: Config.Silence is how long a quiet line
// cuts a reply short. An adapter (or a loaded machine) that leaves 40ms
// between the two halves of every reply has each cut short at the
// product's 25ms, and read whole with a longer Silence. The tests that
// drive simulated boards on a loaded machine rely on it (reply_silence in
// a wiring), without changing the product's timing.
func TestSilenceOutlastsBurstGaps(t *testing.T) {
	for _, tc := range []struct {
		silence time.Duration
		whole   bool
	}{{0, false}, {300 * time.Millisecond, true}} {
		r := newRig(t, proto.Kerong, map[int]int{1: 16}, Config{ReplyTimeout: 500 * time.Millisecond, Silence: tc.silence},
			func(b *rs485test.Boards) { b.BurstGap = 40 * time.Millisecond })
		if got := r.bus.Config().Silence; tc.silence == 0 && got != Silence {
			t.Errorf("default Silence %v, want %v", got, Silence)
		}
		// Count five transactions past the primed ones, answered or not.
		done := func() uint64 { st := r.bus.Stats(); return st.Polls + st.Timeouts + st.Malformed + st.Checksums }
		from := done()
		deadline := time.Now().Add(20 * time.Second)
		for done() < from+5 {
			if time.Now().After(deadline) {
				t.Fatalf("silence %v: five transactions not done in 20s: %+v", tc.silence, r.bus.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
		st := r.bus.Stats()
		switch {
		case tc.whole && st.Timeouts+st.Malformed+st.Checksums > 0:
			t.Errorf("silence %v: replies cut short: %+v", tc.silence, st)
		case !tc.whole && st.Polls > 0:
			t.Errorf("silence %v (the default): %d replies read whole across a 40ms gap: %+v", tc.silence, st.Polls, st)
		}
		r.cancel()
	}
}
