package controller

// TestModel, the shrinker and TestModelScenarios (model_test.go).

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	stdsync "sync"
	"testing"
	"time"
)

const modelScenarioDir = "../testdata/scenarios/model"

// modelSize: sequences and steps per sequence.
func modelSize() (seqs, steps int) {
	on := func(k string) bool { v := os.Getenv(k); return v != "" && v != "0" }
	// Measured on 2 cores: ~1,650 steps/s, ~87 under -race (SQLite is
	// transpiled C): 200 sequences take ~15 s, 25 under -race ~35 s.
	seqs, steps = 200, 120
	if raceBuild() {
		seqs = 25
	}
	if testing.Short() {
		seqs = 5
	}
	switch {
	case on("LOCKER_TORTURE_LONG"):
		seqs = 20000
	case on("LOCKER_TORTURE"):
		seqs = 3000
	}
	if s := os.Getenv("LOCKER_MODEL_SEQS"); s != "" {
		seqs, _ = strconv.Atoi(s)
	}
	return seqs, steps
}

func TestModel(t *testing.T) {
	seqs, steps := modelSize()
	first := uint64(1)
	if s := os.Getenv("LOCKER_MODEL_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LOCKER_MODEL_SEED=%q", s)
		}
		first, seqs = n, 1
	} else if s := os.Getenv("LOCKER_MODEL_FIRST"); s != "" {
		first, _ = strconv.ParseUint(s, 10, 64)
	}
	start := time.Now()
	var mu stdsync.Mutex // guards total, violations, found
	total, violations := 0, 0
	found := map[string]bool{}
	// The sequences are independent (a rig each): two workers per core,
	// since a worker waits on its controller's goroutine at every step
	// (one per core kept 2 cores 73% busy).
	workers := min(2*runtime.GOMAXPROCS(0), seqs)
	t.Run("workers", func(t *testing.T) {
		for w := 0; w < workers; w++ {
			t.Run(fmt.Sprint(w), func(t *testing.T) {
				t.Parallel()
				for seed := first + uint64(w); seed < first+uint64(seqs); seed += uint64(workers) {
					if !modelSequence(t, seed, steps, &mu, &total, &violations, found) {
						return
					}
				}
			})
		}
	})
	el := time.Since(start)
	t.Logf("%d workers", workers)
	t.Logf("%d sequences, %d steps in %v (%.0f steps/s, %.1f sequences/s), %d violations", seqs, total, el.Round(time.Millisecond),
		float64(total)/el.Seconds(), float64(seqs)/el.Seconds(), violations)
	row, _ := json.Marshal(struct {
		Torture string `json:"torture"`
		Tried   int    `json:"tried"`
		Unit    string `json:"unit"`
		Lost    int    `json:"lost"`
		Detail  string `json:"detail"`
	}{"adversarial model", seqs, "sequences", violations, fmt.Sprintf(
		"%d random sequences, %d steps (grants, keys, doors, power cuts, clock jumps, storage outages), every invariant I1–I9 checked after every step: %d violations",
		seqs, total, violations)})
	fmt.Printf("TORTURE-ROW %s\n", row)
}

// violationKey tells violations apart: the invariant and the first words
// of the message, without numbers.
func violationKey(v *violation) string {
	return v.inv + " " + strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, firstWords(v.msg, 5))
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = f[:n]
	}
	return strings.Join(f, " ")
}

// shrinkModel is delta debugging over the steps: the smallest sequence
// (1-minimal: no single step can go) that still breaks invariant inv.
func shrinkModel(t *testing.T, lines []string, key string) ([]string, *violation) {
	runs := 0
	var last *violation
	fails := func(c []string) bool {
		runs++
		_, v := runModel(t, c, nil)
		if v != nil && violationKey(v) == key {
			last = v
			return true
		}
		return false
	}
	if !fails(lines) {
		t.Logf("the failing sequence does not fail again when replayed (not deterministic?)")
		return lines, &violation{inv: key, msg: "not reproduced"}
	}
	best := last
	n := 2
	for len(lines) >= 2 && runs < 3000 {
		size := (len(lines) + n - 1) / n
		reduced := false
		for i := 0; i < len(lines); i += size {
			c := append(append([]string(nil), lines[:i]...), lines[min(i+size, len(lines)):]...)
			if fails(c) {
				lines, best, reduced = c[:last.step+1], last, true
				n = max(n-1, 2)
				break
			}
		}
		if !reduced {
			if n >= len(lines) {
				break
			}
			n = min(2*n, len(lines))
		}
	}
	for changed := true; changed && runs < 4000; {
		changed = false
		for i := 0; i < len(lines); i++ {
			c := append(append([]string(nil), lines[:i]...), lines[i+1:]...)
			if fails(c) {
				lines, best, changed = c[:last.step+1], last, true
				i--
			}
		}
	}
	return lines, best
}

func scenarioText(seed uint64, from int, lines []string, v *violation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Found by TestModel (LOCKER_MODEL_SEED=%d), shrunk from %d to %d steps.\n", seed, from, len(lines))
	fmt.Fprintf(&b, "# %s broke at step %d: %s\n", v.inv, v.step+1, v.msg)
	if len(v.traces) > 0 {
		fmt.Fprintf(&b, "# the last traces: %s\n", strings.Join(v.traces, "; "))
	}
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// readScenario returns the steps of a scenario file.
func readScenario(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// TestModelScenarios replays every scenario the model test ever shrunk
// (kept forever as regressions) and checks every invariant.
func TestModelScenarios(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(modelScenarioDir, "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no scenarios in " + modelScenarioDir)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			lines, err := readScenario(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, v := runModel(t, lines, nil); v != nil {
				t.Errorf("%v\nstep: %s", v, lines[v.step])
			}
		})
	}
}

// modelSequence runs one random sequence and reports (and shrinks) what it
// broke; false when the run should stop.
func modelSequence(t *testing.T, seed uint64, steps int, mu *stdsync.Mutex, total, violations *int, found map[string]bool) bool {
	g := newGen(seed, steps)
	lines, v := runModel(t, nil, g.next)
	mu.Lock()
	*total += len(lines)
	if v == nil {
		mu.Unlock()
		return true
	}
	*violations++
	key := violationKey(v)
	seen := found[key]
	found[key] = true
	distinct := len(found)
	mu.Unlock()
	if seen {
		t.Errorf("seed %d: %v (already shrunk above)", seed, v)
		return true
	}
	min, mv := shrinkModel(t, lines[:v.step+1], key)
	text := scenarioText(seed, len(lines), min, mv)
	t.Errorf("LOCKER_MODEL_SEED=%d: %v\nshrunk to %d steps:\n%s", seed, v, len(min), text)
	if os.Getenv("LOCKER_MODEL_SAVE") != "" {
		name := filepath.Join(modelScenarioDir, fmt.Sprintf("found-%s-seed%d.txt", strings.ToLower(mv.inv), seed))
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			t.Error(err)
		}
	}
	if distinct >= 8 {
		t.Error("8 distinct violations: stopping")
		return false
	}
	return true
}
