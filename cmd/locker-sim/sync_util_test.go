package main

// Helpers for the sync tests of this package (sync_contract_test.go,
// network_sync_test.go, outbox_sync_test.go, hostile_sync_test.go): a
// locker-sim built without -race (these tests time things), and readers
// for the process and its database.

import (
	"bufio"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/controller/wire"
)

// startSimFast is startSim with the binary built without -race.
func startSimFast(t *testing.T, broker, data string, args ...string) *sim {
	t.Helper()
	return startSimBinary(t, buildSimFast(t), broker, data, args...)
}

// kill9 kills the process without warning, as a power cut would.
func (s *sim) kill9() {
	s.t.Helper()
	s.cmd.Process.Kill()
	<-s.done
}

// rssKB is the process's resident set size (VmRSS) in KiB.
func (s *sim) rssKB() int {
	s.t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	s.t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// keyLatency presses "*" (clear: harmless, always answered) and returns how
// long the API took to say the daemon handled it.
func (s *sim) keyLatency() time.Duration {
	s.t.Helper()
	start := time.Now()
	s.keys("*")
	return time.Since(start)
}

// outboxState reads the locker's database (read-only, beside the running
// daemon): the last seq ever taken and the events still in the outbox,
// acknowledged ones among them until the daemon's next write or checkpoint
// (store.AckLater): s.outboxLen says how many wait for the broker.
func outboxState(t *testing.T, data string) (lastSeq int64, pending int) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, daemon.DBFile)+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow("SELECT MAX(COALESCE((SELECT MAX(seq) FROM outbox), 0), value) FROM counters WHERE name = 'seq'").Scan(&lastSeq); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM outbox").Scan(&pending); err != nil {
		t.Fatal(err)
	}
	return lastSeq, pending
}

// closeDoor pushes door n shut once the release pulse is surely over (a
// door shut while the coil still pulls is a sensor fault for hal).
func (s *sim) closeDoor(n int) {
	s.t.Helper()
	time.Sleep(400 * time.Millisecond)
	s.do(n, "door", map[string]string{"action": "close"})
}

// outboxLen is the daemon's own count of the events waiting for the broker
// (its status), without those acknowledged and not yet deleted.
func (s *sim) outboxLen() int {
	s.t.Helper()
	var st wire.Status
	if code := s.call("GET", "/api/daemon/status", nil, &st); code != 200 {
		s.t.Fatalf("GET /api/daemon/status: %d", code)
	}
	return st.Outbox
}
