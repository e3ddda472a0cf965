package controller

import (
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
)

var wearDir = flag.String("wear-dir", "/var/tmp", "BenchmarkWear: a folder on a real disk (not a tmpfs: the kernel counts no writes to storage there)")

// wearCommits is the least number of durable commits a parcel cycle needs:
// for the deposit and for the pickup, the release intent (before the
// coil), the door opened, and the door closed with the parcel's fate.
const wearCommits = 6

// tmpfsMagic is the f_type of a tmpfs (linux/magic.h).
const tmpfsMagic = 0x01021994

// BenchmarkWear counts the bytes the process writes to storage per parcel
// cycle (deposit and pickup), from the kernel's own count
// (/proc/self/io write_bytes), with the database on a real disk folder
// (-wear-dir, default /var/tmp): b.N cycles, each with its real
// transactions, the outbox acknowledgements the MQTT link makes (one batch
// after each step) and housekeeping ticks (after each step, and every 10 s
// of simulated time over 10 idle minutes after each visit, as the
// daemon's 1 s ticker would find nothing else to do).
//
// The baseline, measured in the same run and folder, is the raw minimum:
// wearCommits synchronous=FULL commits a cycle of a single-row update on a
// one-row table in WAL mode (one page each, SQLite's own checkpoints),
// with modernc.org/sqlite and SQLite's default 4 KiB pages. The ratio's
// target is ≤ 2. The same baseline with the store's own page size
// (store.PageSize) is reported too (rawpage-B, pageratio).
//
// It reports where the bytes go (per cycle: the '#' with the release, door
// opened, parcel in or out, door closed, the acknowledgements — held by
// the store for the next transaction that writes anyway, so that this
// column shows only the batches flushed on their own — housekeeping with
// its checkpoints), what the cycles' grants cost later
// (pickup validity ending, purge and vacuum after PurgeAfter: after-B,
// per parcel), and the log volume at the daemon's default level (Info,
// JSON as under systemd).
func BenchmarkWear(b *testing.B) {
	n := b.N
	dir, err := os.MkdirTemp(*wearDir, "locker-wear-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		b.Fatal(err)
	}
	if fs.Type == tmpfsMagic {
		b.Fatalf("-wear-dir %s is a tmpfs: the kernel counts no storage writes there", *wearDir)
	}

	logs := &countingWriter{}
	logger := slog.New(slog.NewJSONHandler(logs, nil)).With("part", "controller")
	day0 := time.Date(2027, 3, 1, 6, 0, 0, 0, time.UTC)
	r := newSoakRig(b, filepath.Join(dir, "locker.db"), strings.Repeat("S M L ", 8), day0, logger)

	// The grants for every cycle, in one envelope (not counted).
	var ops []wire.GrantOp
	code := func(prefix, k int) string { return fmt.Sprintf("%d%07d", prefix, k) }
	for k := 0; k <= n; k++ {
		ops = append(ops, wire.GrantOp{Op: "put", GrantID: fmt.Sprintf("w%d", k), Version: 1, Action: "deposit", Size: "S",
			ParcelID: fmt.Sprintf("JT%012d", k), Holder: "13488888888", CodeHash: wire.CodeHash(lockerID, code(1, k)),
			ValidUntil: ptr(day0.Add(7 * 24 * time.Hour)), Pickup: &wire.PickupSpec{GrantID: fmt.Sprintf("w%d-p", k),
				Holder: "13499996666", CodeHash: wire.CodeHash(lockerID, code(2, k)), ValidUntil: ptr(day0.Add(7 * 24 * time.Hour))}})
	}
	ack := r.apply(&wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: day0, ExpiresAt: day0.Add(time.Hour), Ops: ops})
	if ack.Applied != n+1 {
		b.Fatalf("applied %d of %d grants: %+v", ack.Applied, n+1, ack.Rejected)
	}
	r.ack()
	r.tick()

	phases := []string{"release", "open", "parcel", "close", "ack", "housekeeping"}
	bytesIn := map[string]int64{}
	wrote := func(phase string, f func()) {
		w := procIO(b, "write_bytes")
		f()
		bytesIn[phase] += procIO(b, "write_bytes") - w
	}
	visit := func(k int, deposit bool) {
		c := code(2, k)
		if deposit {
			c = code(1, k)
		}
		var comp int
		wrote("release", func() { comp, _ = r.code(c) })
		if comp == 0 {
			b.Fatalf("cycle %d: the code opened nothing", k)
		}
		r.clock.Advance(4 * time.Second)
		wrote("open", func() { r.door(comp, true) })
		r.clock.Advance(12 * time.Second)
		wrote("parcel", func() { r.parcel(comp, deposit) })
		r.clock.Advance(5 * time.Second)
		wrote("close", func() { r.door(comp, false) })
		wrote("ack", r.ack)
		wrote("housekeeping", func() {
			r.tick()
			for range 60 {
				r.clock.Advance(10 * time.Second)
				r.tick()
			}
		})
		wrote("ack", r.ack)
	}
	// A warm-up cycle, not counted.
	visit(0, true)
	visit(0, false)
	clear(bytesIn)

	b.ResetTimer()
	w0, l0 := procIO(b, "write_bytes"), logs.bytes()
	for k := 1; k <= n; k++ {
		visit(k, true)
		visit(k, false)
	}
	w1, l1 := procIO(b, "write_bytes"), logs.bytes()
	b.StopTimer()
	if got := r.count("picked_up"); got != n+1 {
		b.Fatalf("%d picked_up traces, want %d", got, n+1)
	}
	perCycle := float64(w1-w0) / float64(n)

	// What the cycles' grants cost later: their validity ends (a pickup
	// used up is still marked expired), and after PurgeAfter they are
	// purged and their pages given back; housekeeping every 10 minutes.
	a0 := procIO(b, "write_bytes")
	for until := day0.Add(7*24*time.Hour + 15*24*time.Hour); r.clock.Now().Before(until); {
		r.clock.Advance(10 * time.Minute)
		r.tick()
		r.ack()
	}
	after := float64(procIO(b, "write_bytes")-a0) / float64(n+1)

	base := rawCommitBytes(b, filepath.Join(dir, "raw.db"), 4096, n*wearCommits)
	baseCycle := float64(base) / float64(n)
	// The same commits with the store's page size: a smaller page makes
	// the minimum smaller too (a commit of a 2 KiB page may dirty one
	// 4 KiB block of the file system where a 4 KiB frame dirties two).
	basePage := float64(rawCommitBytes(b, filepath.Join(dir, "raw-page.db"), store.PageSize, n*wearCommits)) / float64(n)

	b.ReportMetric(perCycle, "cycle-B")
	b.ReportMetric(baseCycle, "raw-B")
	b.ReportMetric(perCycle/baseCycle, "ratio")
	b.ReportMetric(after, "after-B")
	b.ReportMetric((perCycle+after)/baseCycle, "life-ratio")
	b.ReportMetric(basePage, "rawpage-B")
	b.ReportMetric(perCycle/basePage, "pageratio")
	for _, p := range phases {
		b.ReportMetric(float64(bytesIn[p])/float64(n), p+"-B")
	}
	b.ReportMetric(float64(l1-l0)/float64(n), "log-B")
	b.ReportMetric(0, "ns/op")
}

// rawCommitBytes makes a one-row table in a new database at path (pages
// of pageSize bytes, WAL, synchronous=FULL, SQLite's default checkpoints)
// and returns the bytes the kernel counts as written by commits single-row
// updates, each its own transaction.
func rawCommitBytes(b *testing.B, path string, pageSize, commits int) int64 {
	b.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=synchronous(FULL)")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	// The page size before WAL mode: a database in WAL mode keeps its own.
	for _, q := range []string{fmt.Sprintf("PRAGMA page_size = %d", pageSize), "PRAGMA journal_mode = WAL",
		`CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)`,
		`INSERT INTO t VALUES (1, 0)`, `PRAGMA wal_checkpoint(TRUNCATE)`} {
		if _, err := db.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	up, err := db.Prepare(`UPDATE t SET v = v + 1 WHERE id = 1`)
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	w0 := procIO(b, "write_bytes")
	for range commits {
		if _, err := up.Exec(); err != nil {
			b.Fatal(err)
		}
	}
	return procIO(b, "write_bytes") - w0
}

// Each step of a parcel cycle writes only the pages it must: the
// compartment's and the outbox's, and at the deposit's close the grants'
// page (the deposit used up, its pickup brought into force on the same
// page) with the pickup code's and expiry's index pages; at the pickup's
// release the pickup's page. An occupancy reading at an open door and the
// acknowledgements write nothing of their own. Counted in write-ahead log
// frames (a frame is one page), which do not depend on the file system.
func TestParcelCycleWritesOnlyWhatItMust(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "locker.db")
	day0 := time.Date(2027, 3, 1, 6, 0, 0, 0, time.UTC)
	r := newSoakRig(t, path, "S M L", day0, nil)
	code := func(prefix, k int) string { return fmt.Sprintf("%d%07d", prefix, k) }
	var ops []wire.GrantOp
	for k := range 3 {
		ops = append(ops, wire.GrantOp{Op: "put", GrantID: fmt.Sprintf("w%d", k), Version: 1, Action: "deposit", Size: "S",
			ParcelID: fmt.Sprintf("JT%012d", k), Holder: "13488888888", CodeHash: wire.CodeHash(lockerID, code(1, k)),
			ValidUntil: ptr(day0.Add(7 * 24 * time.Hour)), Pickup: &wire.PickupSpec{GrantID: fmt.Sprintf("w%d-p", k),
				Holder: "13499996666", CodeHash: wire.CodeHash(lockerID, code(2, k)), ValidUntil: ptr(day0.Add(7 * 24 * time.Hour))}})
	}
	r.apply(&wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: day0, ExpiresAt: day0.Add(time.Hour), Ops: ops})
	r.ack()
	r.tick()
	frames := func() int64 { return r.st.WALBytes() / (store.PageSize + 24) }
	step := func(what string, most int64, f func()) {
		t.Helper()
		before := frames()
		f()
		if n := frames() - before; n > most {
			t.Errorf("%s wrote %d pages, want at most %d", what, n, most)
		}
	}
	for k := range 3 {
		for _, deposit := range []bool{true, false} {
			c, rel, closing := code(2, k), int64(3), int64(2)
			if deposit {
				c, rel, closing = code(1, k), 2, 5
			}
			var comp int
			step("the release", rel, func() { comp, _ = r.code(c) })
			if comp == 0 {
				t.Fatalf("cycle %d: the code opened nothing", k)
			}
			r.clock.Advance(4 * time.Second)
			step("the door opening", 2, func() { r.door(comp, true) })
			r.clock.Advance(12 * time.Second)
			step("the parcel at the open door", 0, func() { r.parcel(comp, deposit) })
			r.clock.Advance(5 * time.Second)
			step("the close", closing, func() { r.door(comp, false) })
			step("the acknowledgements", 0, r.ack)
		}
	}
}
