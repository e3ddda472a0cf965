package logtest_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/openlocker/locker/simulator/logtest"
)

// Writers on several goroutines lose nothing (run with -race), and Take
// empties the buffer.
func TestBufferConcurrentWritesAndTake(t *testing.T) {
	var b logtest.Buffer
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				fmt.Fprintf(&b, "g%d-%d\n", g, i)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 400 {
		t.Fatalf("%d lines, want 400", n)
	}
	if got := b.Take(); strings.Count(got, "\n") != 400 {
		t.Fatalf("Take returned %d lines, want 400", strings.Count(got, "\n"))
	}
	if got := b.String(); got != "" {
		t.Fatalf("after Take the buffer holds %q", got)
	}
}
