package daemon_test

// Benchmarks of a whole daemon process: cold start to Ready, and resident
// memory, with 100,000 grants. Each iteration runs this test binary again
// as a child (TestBenchChild) so that the figure includes the process start
// and the memory is that of one locker alone. The baseline, measured in the
// same run the same way, is a child that only opens the same database with
// database/sql and checks it (PRAGMA quick_check and a count of the grants):
// the floor of what any start-up must do.
//
// The database sits in the page cache (the parent has just written it): a
// cold start here is a cold process, not a cold disk. The child is the test
// binary, which links a little more than lockerd (the testing package).

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/protocol"
)

// Environment of a benchmark child.
const (
	childEnv      = "LOCKER_BENCH_CHILD" // "daemon" or "raw"
	childDirEnv   = "LOCKER_BENCH_DIR"   // the data folder, with wiring.yaml and locker.db
	benchLockerID = "BENCH01"
	benchGrants   = 100_000
)

// TestBenchChild is the child process of the benchmarks below; it skips
// unless LOCKER_BENCH_CHILD is set. It prints "ready" once the daemon is
// ready (or the raw database is checked), then waits for its stdin to close
// and stops cleanly.
func TestBenchChild(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("the child process of BenchmarkColdStart and BenchmarkResidentMemory")
	}
	dir := os.Getenv(childDirEnv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if mode == "raw" {
		db, err := sql.Open("sqlite", store.DSN(filepath.Join(dir, daemon.DBFile)))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var ok string
		var n int
		if err := db.QueryRow("PRAGMA quick_check").Scan(&ok); err != nil || ok != "ok" {
			t.Fatalf("quick_check: %v %s", err, ok)
		}
		if err := db.QueryRow("SELECT count(*) FROM grants").Scan(&n); err != nil {
			t.Fatal(err)
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		return
	}
	w, err := wiring.Load(filepath.Join(dir, "wiring.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cab, err := simulator.New(w, simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cab.Halt()
	kp, err := protocol.GenerateKeyPair("bench")
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(ctx, daemon.Options{LockerID: benchLockerID, DataDir: dir, Wiring: w, Pins: cab.ByName,
		Hal: hal.Options{NoDisplayDelays: true, Buses: cab.Bus},
		// A broker that is never there: the link starts after Ready and retries in the background.
		Link: client.Options{Broker: "tcp://127.0.0.1:1", Keys: kp.Keyring()}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case <-d.Controller.Ready():
	case err := <-done:
		t.Fatalf("the daemon stopped before it was ready: %v", err)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// benchWiringYAML is a cabinet of n compartments with a keypad and a display.
func benchWiringYAML(n int) string {
	var b strings.Builder
	b.WriteString("name: bench\nlocks:\n  pulse: 300ms\nsensors:\n  debounce: 30ms\n  poll: 5ms\n")
	b.WriteString("keypad:\n  rows: [KP_R1, KP_R2, KP_R3, KP_R4]\n  cols: [KP_C1, KP_C2, KP_C3, KP_C4]\n  layout: [\"123A\", \"456B\", \"789C\", \"*0#D\"]\n")
	b.WriteString("display:\n  type: hd44780\n  cols: 20\n  rows: 2\n  rs: LCD_RS\n  e: LCD_E\n  data: [LCD_D4, LCD_D5, LCD_D6, LCD_D7]\n")
	b.WriteString("compartments:\n")
	sizes := []string{"S", "M", "L", "XL"}
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  - {number: %d, size: %s, lock: LOCK%03d, door: DOOR%03d, parcel: PARCEL%03d}\n", i, sizes[(i-1)*4/n], i, i, i)
	}
	return b.String()
}

// benchData writes a data folder: a wiring of n compartments and a
// database holding 100,000 grants (deposits by size, each with its pickup),
// after one clean start of the daemon so that the schema is the daemon's.
func benchData(b *testing.B, n int) string {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "wiring.yaml"), []byte(benchWiringYAML(n)), 0o600); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, daemon.DBFile))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	err = st.Update(ctx, func(tx *store.Tx) error {
		for i := range benchGrants {
			g := store.Grant{ID: fmt.Sprintf("g-%06d", i), Version: 1, Action: "deposit", Size: "M",
				ParcelID: fmt.Sprintf("JT%013d", i), Actor: "134****8888",
				CodeHash:  wire.CodeHash(benchLockerID, fmt.Sprintf("%08d", 2*i)),
				ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(24 * time.Hour), UsesLeft: 1,
				Pickup: fmt.Sprintf(`{"grant_id":"g-%06d-p","holder":"134****6666","code_hash":%q}`, i,
					wire.CodeHash(benchLockerID, fmt.Sprintf("%08d", 2*i+1))),
				PickupID: fmt.Sprintf("g-%06d-p", i), PickupCode: wire.CodeHash(benchLockerID, fmt.Sprintf("%08d", 2*i+1))}
			if err := tx.PutGrant(g); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	startChild(b, "daemon", dir, 0) // the first start: boot-time writes, WAL checkpoint
	return dir
}

// startChild runs one child to "ready" and returns the time from its start
// to "ready" and, when settle > 0, its VmRSS after settle.
func startChild(b *testing.B, mode, dir string, settle time.Duration) (time.Duration, uint64) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childDirEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if sc.Text() == "ready" {
			ready = true
			break
		}
	}
	took := time.Since(start)
	var rss uint64
	if ready && settle > 0 {
		time.Sleep(settle)
		rss = vmRSS(b, cmd.Process.Pid)
	}
	stdin.Close()
	go io.Copy(io.Discard, stdout)
	werr := cmd.Wait()
	if !ready || werr != nil {
		b.Fatalf("child %s: ready %v, %v\n%s", mode, ready, werr, stderr.String())
	}
	return took, rss
}

// vmRSS reads a process's resident set size from /proc.
func vmRSS(b *testing.B, pid int) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Skipf("no /proc here: %v", err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	b.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkColdStart times a daemon process from its start to Ready with
// 100,000 grants and the default simulated cabinet's 24 compartments
// (median of b.N starts), beside a process that only opens and checks the
// same database.
func BenchmarkColdStart(b *testing.B) {
	dir := benchData(b, 24)
	var daemonT, rawT []time.Duration
	b.ResetTimer()
	for range b.N {
		d, _ := startChild(b, "daemon", dir, 0)
		r, _ := startChild(b, "raw", dir, 0)
		daemonT, rawT = append(daemonT, d), append(rawT, r)
	}
	b.StopTimer()
	dm, rm := median(daemonT), median(rawT)
	b.ReportMetric(float64(dm.Microseconds())/1000, "ready-ms")
	b.ReportMetric(float64(rm.Microseconds())/1000, "rawopen-ms")
	b.ReportMetric(float64(dm)/float64(rm), "ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkResidentMemory reads the resident memory of a daemon process
// with 200 compartments and 100,000 grants, 2 s after Ready (the largest
// of b.N starts), beside a process that only opens and checks the same
// database.
func BenchmarkResidentMemory(b *testing.B) {
	dir := benchData(b, 200)
	var daemonM, rawM uint64
	b.ResetTimer()
	for range b.N {
		_, d := startChild(b, "daemon", dir, 2*time.Second)
		_, r := startChild(b, "raw", dir, 2*time.Second)
		daemonM, rawM = max(daemonM, d), max(rawM, r)
	}
	b.StopTimer()
	b.ReportMetric(float64(daemonM)/(1<<20), "rss-MB")
	b.ReportMetric(float64(rawM)/(1<<20), "rawopen-rss-MB")
	b.ReportMetric(float64(daemonM)/float64(rawM), "ratio")
	b.ReportMetric(0, "ns/op")
}
