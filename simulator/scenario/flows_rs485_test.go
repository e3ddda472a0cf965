package scenario

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openlocker/locker/hal/wiring"
)

// TestDefaultFlowsOnKerong plays every scenario written for the default
// cabinet on the default cabinet wired to two simulated Kerong boards
// (testdata/wiring/kerong-24.yaml) behind a pseudo-terminal, and compares
// the log with the same golden: every flow of the default cabinet runs
// end to end on RS485 boards, with the same traces.
func TestDefaultFlowsOnKerong(t *testing.T) {
	files, err := filepath.Glob("../../testdata/scenarios/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	w, err := wiring.Load("../../testdata/wiring/kerong-24.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if WiringDirective(data) != "" {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			steps, err := Parse(data, filepath.Base(f))
			if err != nil {
				t.Fatal(err)
			}
			lines, err := Run(context.Background(), steps, Options{Dir: t.TempDir(), Wiring: w, Verbose: func(s string) { t.Log(s) }})
			got := strings.Join(lines, "\n") + "\n"
			if err != nil {
				t.Fatalf("%v\nlog so far:\n%s", err, got)
			}
			want, err := os.ReadFile(strings.TrimSuffix(f, ".txt") + ".golden")
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("on the Kerong cabinet the log differs from %s.golden\ngot:\n%s\nwant:\n%s", name, got, want)
			}
		})
	}
}
