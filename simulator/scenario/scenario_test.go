package scenario

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openlocker/locker/hal/wiring"
)

var update = flag.Bool("update", false, "rewrite the golden trace logs")

// TestScenarios plays every testdata/scenarios/*.txt and compares the log
// with its .golden file (go test ./simulator/scenario -update rewrites them).
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("../../testdata/scenarios/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			steps, err := Parse(data, filepath.Base(f))
			if err != nil {
				t.Fatal(err)
			}
			opts := Options{Dir: t.TempDir(), Verbose: func(s string) { t.Log(s) }, KerongSilentUnlock: SilentUnlockDirective(data)}
			if w := WiringDirective(data); w != "" {
				if opts.Wiring, err = wiring.Load(filepath.Join("../../testdata/wiring", w)); err != nil {
					t.Fatal(err)
				}
			}
			lines, err := Run(context.Background(), steps, opts)
			got := strings.Join(lines, "\n") + "\n"
			if err != nil {
				t.Fatalf("%v\nlog so far:\n%s", err, got)
			}
			golden := strings.TrimSuffix(f, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("trace log differs from %s (-update rewrites it)\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"keys 12x#", "s.txt:1: keys"},
		{"# ok\n\ndoor 3 slam", `s.txt:3: "slam"`},
		{"teleport 3", `s.txt:1: unknown step "teleport"`},
		{"grant put g-1", "s.txt:1: grant put ID ACTION"},
		{"advance soon", "s.txt:1: advance"},
		{`expect display "unclosed`, "s.txt:1: unclosed quote"},
		{"parcel zero in", `s.txt:1: "zero" is not a compartment number`},
		{"expect mood 3 happy", `s.txt:1: expect "mood"`},
	} {
		_, err := Parse([]byte(tc.text), "s.txt")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tc.text, err, tc.want)
		}
	}
	steps, err := Parse([]byte(`grant put g-1 deposit size=M code=123456 snapshot  # trailing comment
expect display "Door 09 open"`), "s.txt")
	if err != nil || len(steps) != 2 || steps[0].Opts["snapshot"] != "true" || steps[0].Opts["code"] != "123456" ||
		steps[1].Args[1] != "Door 09 open" {
		t.Fatalf("steps = %+v, %v", steps, err)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/scenarios/*.txt")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		steps, err := Parse(data, "fuzz")
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a multi-line error: %q", err)
			}
			return
		}
		for _, s := range steps {
			if _, ok := want[s.Verb]; !ok {
				t.Fatalf("accepted unknown verb %q", s.Verb)
			}
		}
	})
}
