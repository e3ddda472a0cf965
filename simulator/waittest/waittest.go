// Package waittest holds the tests' wait: poll a condition until it holds,
// or fail the test once a deadline has passed.
//
// It reads the time through the time package only, so inside a
// testing/synctest bubble the deadline is on the bubble's fake clock and a
// wait costs no real time.
package waittest

import (
	"testing"
	"time"
)

// Poll is how often For checks its condition.
const Poll = 5 * time.Millisecond

// For polls cond every Poll until it holds; if it does not hold within d it
// fails the test (t.Fatalf) with "timed out after d waiting for " and what
// format and args say.
func For(t testing.TB, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if !time.Now().Before(deadline) {
			t.Fatalf("timed out after %v waiting for "+format, append([]any{d}, args...)...)
		}
		time.Sleep(Poll)
	}
}
