package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
)

// scaled picks a torture test's size: def under `go test` (make test),
// torture under LOCKER_TORTURE=1 (make torture), long under
// LOCKER_TORTURE_LONG=1 (make torture-long); the environment variable
// named env, when set, overrides all three.
func scaled(t *testing.T, env string, def, torture, long int) int {
	n := def
	switch {
	case os.Getenv("LOCKER_TORTURE_LONG") != "":
		n = long
	case os.Getenv("LOCKER_TORTURE") != "":
		n = torture
	}
	return envInt(t, env, n)
}

// printTortureRow prints the line that `make torture` collects into its
// table: what was tried, how much, and how much was lost (must be 0).
func printTortureRow(torture string, tried int, unit string, lost int, detail string) {
	b, _ := json.Marshal(map[string]any{"torture": torture, "tried": tried, "unit": unit, "lost": lost, "detail": detail})
	fmt.Printf("TORTURE-ROW %s\n", b)
}

// uniqueCode draws a six-digit code not drawn before (codes remembers them).
func uniqueCode(rng *rand.Rand, codes map[string]bool) string {
	for {
		c := fmt.Sprintf("%06d", 100000+rng.IntN(900000))
		if !codes[c] {
			codes[c] = true
			return c
		}
	}
}

// waitOnline waits, 20 s at most, for the daemon to say it is connected.
func (s *sim) waitOnline(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st wire.Status
		if s.call("GET", "/api/daemon/status", nil, &st) == 200 && st.State == "online" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the locker did not connect to the broker within 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
