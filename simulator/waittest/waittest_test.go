package waittest

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		start := time.Now()
		For(t, time.Second, func() bool { return n.Add(1) == 3 }, "the third call")
		if got := time.Since(start); got != 2*Poll {
			t.Errorf("held at the third call after %v, want %v", got, 2*Poll)
		}
	})
}

// recorder keeps what Fatalf said and ends the goroutine, as Fatalf does.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestForTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{TB: t}
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			For(r, time.Second, func() bool { return false }, "door %d to open", 3)
		}()
		<-done
		if want := "timed out after 1s waiting for door 3 to open"; r.msg != want {
			t.Errorf("Fatalf(%q), want %q", r.msg, want)
		}
		if took := time.Since(start); took < time.Second || took > time.Second+Poll {
			t.Errorf("gave up after %v, want 1s", took)
		}
	})
}
