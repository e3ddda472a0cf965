package main

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
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
