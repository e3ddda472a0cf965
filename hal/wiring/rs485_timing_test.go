package wiring

import (
	"strings"
	"testing"
	"time"
)

// TestRS485ReplyTimings: a bus's reply_timeout and reply_silence are read
// as durations (0, the default, leaves the bus's product timings) and
// checked with their line.
func TestRS485ReplyTimings(t *testing.T) {
	w, err := Parse([]byte(rsBase), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := w.Bus("BUS1"); b.ReplyTimeout != 0 || b.ReplySilence != 0 {
		t.Fatalf("defaults: %v %v, want 0 (the bus's own)", b.ReplyTimeout, b.ReplySilence)
	}
	timed := strings.Replace(rsBase, "    protocol: kerong\n", "    protocol: kerong\n    reply_timeout: 500ms\n    reply_silence: 200ms\n", 1)
	w, err = Parse([]byte(timed), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := w.Bus("BUS1"); b.ReplyTimeout != 500*time.Millisecond || b.ReplySilence != 200*time.Millisecond {
		t.Fatalf("reply_timeout %v, reply_silence %v", b.ReplyTimeout, b.ReplySilence)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"reply_timeout: 500ms", "reply_timeout: 6s", "c.yaml:7: rs485 bus BUS1: reply_timeout 6s out of range 0..5s"},
		{"reply_silence: 200ms", "reply_silence: -1ms", "c.yaml:8: rs485 bus BUS1: reply_silence -1ms out of range 0..5s"},
	} {
		_, err := Parse([]byte(strings.Replace(timed, tc.from, tc.to, 1)), "c.yaml")
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", tc.to, err, tc.want)
		}
	}
}
