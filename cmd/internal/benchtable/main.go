// Command benchtable runs the locker's benchmarks (`make bench`) and prints
// one table: each figure beside its baseline, measured in the same run,
// their ratio and the target of issue 7. The last line says when and on
// what machine.
//
//	go run ./cmd/internal/benchtable            # from the module's root
//	go run ./cmd/internal/benchtable -short     # fewer iterations, for a quick look
//	go run ./cmd/internal/benchtable -only Soak -soak-years 1   # the soak alone, shorter
//
// After the table, the soak (controller's BenchmarkSoak: years of service
// on a fake clock, -soak-years, default 5; 0.2 with -short) is printed as a
// table of its own: year 0 (day 7), year 1 and the end, side by side. The
// fleet benchmark (locker-sim -fleet 10000 -fleet-bench against a
// Mosquitto of its own, as make fleet runs it; -fleet N, 0 for none) runs
// last, and one table gathers the figures of issue 12: the soak at year 0,
// 1 and 5, the wear of a parcel, and the fleet's memory, idle CPU and
// reconnect curve.
//
// Each benchmark is run with `go test -run '^$' -bench '^NAME$' -benchtime
// Nx` and read from its b.ReportMetric columns. A benchmark that is not in
// the tree (found by grepping its package for `func NAME(`) is shown as
// "not measured"; one that fails is shown as "failed" with its first error
// line. Neither stops the table.
package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/openlocker/locker/cmd/internal/machine"
)

// bench is one benchmark run and the rows it fills.
type bench struct {
	pkg   string   // ./controller
	names []string // candidates, first found wins: the benchmark may be renamed
	times int      // -benchtime Nx
	short int      // -benchtime with -short
	rows  []row
	// args are the test binary's own flags (after -args); timeout, when
	// longer than -timeout, is this benchmark's own.
	args    func(short bool) []string
	timeout time.Duration
}

// row is one line of the table, read from the benchmark's metrics.
type row struct {
	figure   string // what is measured
	unit     string // the figure's metric unit (b.ReportMetric); also the printed unit after the last '-'
	baseline string // what the baseline is
	baseUnit string
	ratio    string // the ratio's metric; "" computes figure/baseline
	target   string // issue 7's target, printed
	// ok says whether the figure meets the target; nil: no target.
	ok func(fig, base, ratio float64) bool
	// value, when set, prints the value column from all the metrics
	// (a breakdown); the row then has no baseline.
	value func(m map[string]float64) string
}

var benches = []bench{
	{pkg: "./controller", names: []string{"BenchmarkKeypadToCoil"}, times: 1000, short: 100, rows: []row{
		{figure: "keypad '#' to coil, p50 (100k grants)", unit: "p50-µs",
			baseline: "raw lookup + FULL commit, interleaved, p50", baseUnit: "base-p50-µs", target: "—"},
		{figure: "keypad '#' to coil, p99 (100k grants)", unit: "p99-µs",
			baseline: "raw lookup + FULL commit, interleaved, p99", baseUnit: "base-p99-µs", ratio: "p99/base",
			target: "≤ 2× baseline", ok: func(_, _, r float64) bool { return r <= 2 }},
	}},
	{pkg: "./simulator/scenario", names: []string{"BenchmarkKeypadToUnlockFrame"}, times: 200, short: 30, rows: []row{
		{figure: "keypad '#' to unlock frame at the board, Kerong RS485 via pty, p50", unit: "p50-µs",
			baseline: "the frame's wire time at 19200 baud (5 bytes, 8N1)", baseUnit: "wire-µs", target: "—"},
		{figure: "keypad '#' to unlock frame at the board, Kerong RS485 via pty, p99", unit: "p99-µs",
			baseline: "raw pty write to board decode, interleaved, p99", baseUnit: "raw-p99-µs", target: "—"},
	}},
	{pkg: "./controller", names: []string{"BenchmarkSnapshotApply", "BenchmarkSnapshot100k"}, times: 1, short: 1, rows: []row{
		{figure: "grant snapshot apply (100k grants)", unit: "applygrants-grants/s",
			baseline: "raw batched upsert, one transaction", baseUnit: "raw-upserts/s", ratio: "ratio",
			target: "≥ 0.5× baseline", ok: func(_, _, r float64) bool { return r >= 0.5 }},
	}},
	{pkg: "./sync/client", names: []string{"BenchmarkOutboxDrain", "BenchmarkDrainBacklog"}, times: 1, short: 1, rows: []row{
		{figure: "outbox drain to Mosquitto (100k traces)", unit: "link-events/s",
			baseline: "raw paho QoS 1, 100 in flight", baseUnit: "paho100-events/s", ratio: "ratio",
			target: "≥ 0.5× baseline", ok: func(_, _, r float64) bool { return r >= 0.5 }},
	}},
	{pkg: "./controller", names: []string{"BenchmarkWear"}, times: 300, short: 50, rows: []row{
		{figure: "storage writes per parcel cycle (deposit + pickup), /proc/self/io, real disk", unit: "cycle-B",
			baseline: "6 FULL commits of one page (WAL, same disk)", baseUnit: "raw-B", ratio: "ratio",
			target: "≤ 2× baseline", ok: func(_, _, r float64) bool { return r <= 2 }},
		{figure: "  the same, beside commits of one page at the store's page size (2 KiB)", unit: "cycle-B",
			baseline: "6 FULL commits of one 2 KiB page (WAL, same disk)", baseUnit: "rawpage-B", ratio: "pageratio",
			target: "≤ 2× baseline", ok: func(_, _, r float64) bool { return r <= 2 }},
		{figure: "  of which: '#'+release, door open, parcel, close, acks, housekeeping", value: func(m map[string]float64) string {
			var parts []string
			for _, p := range []string{"release", "open", "parcel", "close", "ack", "housekeeping"} {
				parts = append(parts, strings.TrimSuffix(format(m[p+"-B"], "B"), " B"))
			}
			return strings.Join(parts, " / ")
		}, target: "—"},
		{figure: "  later writes of its grants (expiry mark, purge, vacuum), per parcel", unit: "after-B",
			baseline: "whole life (cycle + later) / baseline", baseUnit: "raw-B", ratio: "life-ratio", target: "—"},
		{figure: "log volume per parcel cycle (Info, JSON as under systemd)", unit: "log-B", baseline: "—", target: "—"},
	}},
	{pkg: "./cmd/internal/daemon", names: []string{"BenchmarkColdStart"}, times: 10, short: 3, rows: []row{
		{figure: "cold start to Ready (100k grants), median", unit: "ready-ms",
			baseline: "process that opens + checks the DB", baseUnit: "rawopen-ms", ratio: "ratio",
			target: "≤ 300 ms", ok: func(f, _, _ float64) bool { return f <= 300 }},
	}},
	{pkg: "./cmd/internal/daemon", names: []string{"BenchmarkResidentMemory"}, times: 2, short: 1, rows: []row{
		{figure: "resident memory, 200 compartments, 100k grants", unit: "rss-MB",
			baseline: "process that opens + checks the DB", baseUnit: "rawopen-rss-MB", ratio: "ratio",
			target: "≤ 30 MB", ok: func(f, _, _ float64) bool { return f <= 30 }},
	}},
}

// binaries are the cross-builds whose sizes are reported.
var binaries = []struct{ name, goarch, goarm string }{
	{"lockerd linux/arm (GOARM=7)", "arm", "7"},
	{"lockerd linux/arm64", "arm64", ""},
	{"lockerd linux/amd64", "amd64", ""},
}

func main() {
	short := flag.Bool("short", false, "fewer iterations")
	only := flag.String("only", "", "run only the benchmarks whose name matches this regular expression (binaries: \"binary\")")
	timeout := flag.Duration("timeout", 10*time.Minute, "time-out of each go test run")
	verbose := flag.Bool("v", false, "show each go command and its output")
	flag.Float64Var(&soakYears, "soak-years", soakYears, "years of service the soak simulates (BenchmarkSoak; -short: 0.2)")
	var fl fleetFlags
	flag.IntVar(&fl.n, "fleet", 10000, "lockers of the fleet benchmark (locker-sim -fleet-bench, needs mosquitto; 0: none)")
	flag.DurationVar(&fl.traffic, "fleet-traffic", time.Minute, "the fleet's time trading parcels")
	flag.DurationVar(&fl.idle, "fleet-idle", 30*time.Second, "the fleet's idle CPU measurement")
	flag.StringVar(&fl.mosquitto, "fleet-mosquitto", "mosquitto", "the mosquitto binary the fleet starts as its broker")
	flag.Parse()
	if *short {
		fl.n, fl.traffic, fl.idle = min(fl.n, 300), min(fl.traffic, 10*time.Second), min(fl.idle, 5*time.Second)
	}
	var re *regexp.Regexp
	if *only != "" {
		var err error
		if re, err = regexp.Compile(*only); err != nil {
			fmt.Fprintf(os.Stderr, "benchtable: -only: %v\n", err)
			os.Exit(2)
		}
	}
	r := &runner{timeout: *timeout, verbose: *verbose}
	if out, err := r.goCmd(context.Background(), nil, "env", "GOMOD"); err != nil || strings.TrimSpace(out) == "" {
		fmt.Fprintln(os.Stderr, "benchtable: run it from the module (go env GOMOD is empty)")
		os.Exit(2)
	} else {
		r.root = filepath.Dir(strings.TrimSpace(out))
	}

	started := time.Now()
	var lines [][]string
	var soak, wear map[string]float64
	var soakStatus, wearStatus string
	for _, b := range append(benches, soakBench) {
		name := b.find(r.root)
		if re != nil && !re.MatchString(strings.Join(b.names, " ")) {
			continue
		}
		times := b.times
		if *short {
			times = b.short
		}
		var metrics map[string]float64
		var status string
		if name == "" {
			status = "not measured (no " + strings.Join(b.names, " or ") + " in " + b.pkg + ")"
		} else {
			fmt.Fprintf(os.Stderr, "benchtable: %s %s -benchtime %dx …\n", b.pkg, name, times)
			t0 := time.Now()
			var err error
			var args []string
			if b.args != nil {
				args = b.args(*short)
			}
			metrics, err = r.bench(b.pkg, name, times, max(r.timeout, b.timeout), args)
			if err != nil {
				status = "failed: " + err.Error()
			}
			fmt.Fprintf(os.Stderr, "benchtable: %s took %v\n", name, time.Since(t0).Round(time.Second))
		}
		if b.names[0] == soakBench.names[0] {
			soak, soakStatus = metrics, status
			continue
		}
		if b.names[0] == "BenchmarkWear" {
			wear, wearStatus = metrics, status
		}
		for _, rw := range b.rows {
			lines = append(lines, rw.line(metrics, status))
		}
	}
	var fleet fleetResult
	fleetStatus := "not run (-fleet 0)"
	if fl.n > 0 && (re == nil || re.MatchString("fleet")) {
		fmt.Fprintf(os.Stderr, "benchtable: the fleet of %d lockers (minutes) …\n", fl.n)
		t0 := time.Now()
		var err error
		fleet, err = r.runFleet(fl)
		fleetStatus = ""
		if err != nil {
			fleetStatus = "failed: " + err.Error()
		}
		fmt.Fprintf(os.Stderr, "benchtable: the fleet took %v\n", time.Since(t0).Round(time.Second))
	}
	if re == nil || re.MatchString("binary") {
		fmt.Fprintln(os.Stderr, "benchtable: cross-building ./cmd/lockerd …")
		for _, bin := range binaries {
			size, err := r.binarySize(bin.goarch, bin.goarm)
			v := fmt.Sprintf("%.2f MB", float64(size)/1e6)
			if err != nil {
				v = "failed: " + err.Error()
			}
			lines = append(lines, []string{bin.name + ", -s -w, CGO_ENABLED=0", v, "—", "—", "—", "—", ""})
		}
	}

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "figure\tvalue\tbaseline (same run)\tbaseline value\tratio\ttarget\tmet")
	fmt.Fprintln(w, "------\t-----\t-------------------\t--------------\t-----\t------\t---")
	for _, l := range lines {
		fmt.Fprintln(w, strings.Join(l, "\t"))
	}
	w.Flush()
	if re == nil || re.MatchString(strings.Join(soakBench.names, " ")) {
		printSoak(os.Stdout, soak, soakStatus)
	}
	printSummary(os.Stdout, soak, soakStatus, wear, wearStatus, fleet, fleetStatus)
	fmt.Printf("run %s, %v, on %s\n", started.UTC().Format("2006-01-02 15:04 MST"), time.Since(started).Round(time.Second), machine.Describe())
}

// find returns the first of b.names defined in b.pkg's test files, or "".
func (b bench) find(root string) string {
	files, _ := filepath.Glob(filepath.Join(root, b.pkg, "*_test.go"))
	var src []byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err == nil {
			src = append(src, data...)
		}
	}
	for _, n := range b.names {
		if bytes.Contains(src, []byte("func "+n+"(b *testing.B)")) || bytes.Contains(src, []byte("func "+n+"(")) {
			return n
		}
	}
	return ""
}

// line is the table row of rw from a benchmark's metrics (nil when it did
// not run; status then says why).
func (rw row) line(m map[string]float64, status string) []string {
	if m == nil {
		return []string{rw.figure, status, rw.baseline, "", "", rw.target, ""}
	}
	if rw.value != nil {
		return []string{rw.figure, rw.value(m), "—", "—", "—", rw.target, ""}
	}
	fig, okF := m[rw.unit]
	base, okB := m[rw.baseUnit]
	if !okF {
		return []string{rw.figure, "no metric " + rw.unit + " in the output", rw.baseline, "", "", rw.target, ""}
	}
	ratio, okR := m[rw.ratio]
	if !okR && okB && base != 0 {
		ratio, okR = fig/base, true
	}
	baseS, ratioS, met := "—", "—", ""
	if okB {
		baseS = format(base, rw.baseUnit)
	}
	if okR {
		ratioS = fmt.Sprintf("%.2f", ratio)
	}
	if rw.ok != nil {
		met = "yes"
		if !rw.ok(fig, base, ratio) {
			met = "NO"
		}
	}
	return []string{rw.figure, format(fig, rw.unit), rw.baseline, baseS, ratioS, rw.target, met}
}

// format prints v in the unit named by a metric (the part after its last '-').
func format(v float64, metric string) string {
	unit := metric[strings.LastIndexByte(metric, '-')+1:]
	switch {
	case strings.HasSuffix(unit, "/s"):
		return thousands(int64(v+0.5)) + " " + unit
	case unit == "µs" && v >= 1000:
		return fmt.Sprintf("%.2f ms", v/1000)
	case unit == "µs":
		return fmt.Sprintf("%.0f µs", v)
	case unit == "B" && v >= 1e6:
		return fmt.Sprintf("%.2f MB", v/1e6)
	case unit == "B" && v >= 1e4:
		return fmt.Sprintf("%.1f kB", v/1e3)
	case unit == "B":
		return fmt.Sprintf("%.0f B", v)
	default:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

type runner struct {
	root    string
	timeout time.Duration
	verbose bool
}

// goCmd runs the go command in the module's root.
func (r *runner) goCmd(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, cmp.Or(os.Getenv("GO"), "go"), args...)
	cmd.Dir = r.root
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if r.verbose {
		fmt.Fprintln(os.Stderr, "go", strings.Join(args, " "))
		cmd.Stdout = io.MultiWriter(&out, os.Stderr)
		cmd.Stderr = cmd.Stdout
	}
	err := cmd.Run()
	return out.String(), err
}

// benchLine is a result line: name-procs, iterations, then value-unit pairs.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)

// bench runs one benchmark and returns its metrics by unit.
func (r *runner) bench(pkg, name string, times int, timeout time.Duration, args []string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := []string{"test", "-run", "^$", "-bench", "^" + name + "$", "-benchtime", fmt.Sprintf("%dx", times),
		"-count", "1", "-timeout", timeout.String(), pkg}
	if len(args) > 0 {
		cmd = append(append(cmd, "-args"), args...)
	}
	out, err := r.goCmd(ctx, nil, cmd...)
	m := parse(out, name)
	if err != nil || m == nil {
		return nil, errors.New(firstError(out, err))
	}
	return m, nil
}

// parse reads the metrics of benchmark name from go test's output.
func parse(out, name string) map[string]float64 {
	for line := range strings.Lines(out) {
		sm := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if sm == nil || sm[1] != name {
			continue
		}
		m := map[string]float64{}
		f := strings.Fields(sm[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				m[f[i+1]] = v
			}
		}
		return m
	}
	return nil
}

// firstError is the first telling line of a failed run.
func firstError(out string, err error) string {
	for line := range strings.Lines(out) {
		l := strings.TrimSpace(line)
		if l == "" || strings.HasPrefix(l, "goos:") || strings.HasPrefix(l, "goarch:") || strings.HasPrefix(l, "pkg:") ||
			strings.HasPrefix(l, "cpu:") || strings.HasPrefix(l, "---") || strings.HasPrefix(l, "Benchmark") {
			continue
		}
		if len(l) > 100 {
			l = l[:100] + "…"
		}
		return l
	}
	if err != nil {
		return err.Error()
	}
	return "no result line"
}

// binarySize cross-builds ./cmd/lockerd as `make cross` does and returns its size.
func (r *runner) binarySize(goarch, goarm string) (int64, error) {
	dir, err := os.MkdirTemp("", "benchtable")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "lockerd")
	env := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + goarch}
	if goarm != "" {
		env = append(env, "GOARM="+goarm)
	}
	if o, err := r.goCmd(context.Background(), env, "build", "-ldflags", "-s -w", "-o", out, "./cmd/lockerd"); err != nil {
		return 0, errors.New(firstError(o, err))
	}
	st, err := os.Stat(out)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
