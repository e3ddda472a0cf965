package controller_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

// benchCabinet is a cabinet that nothing happens in.
type benchCabinet struct {
	comps  []hal.Compartment
	events chan hal.Event
}

func (b *benchCabinet) Compartments() []hal.Compartment                 { return b.comps }
func (b *benchCabinet) Release(int) error                               { return nil }
func (b *benchCabinet) DoorOpen(int) (bool, error)                      { return false, nil }
func (b *benchCabinet) ParcelPresent(int) (present, ok bool, err error) { return false, false, nil }
func (b *benchCabinet) Show(...string) error                            { return nil }
func (b *benchCabinet) Events() <-chan hal.Event                        { return b.events }

const benchLocker = "610091A01"

// snapshotOps is a snapshot of n deposit grants with nested pickups, as the
// central server would send it for a busy site.
func snapshotOps(n int, now time.Time) []wire.GrantOp {
	until, puntil := now.Add(24*time.Hour), now.Add(72*time.Hour)
	ops := make([]wire.GrantOp, n)
	for i := range ops {
		ops[i] = wire.GrantOp{Op: "put", GrantID: fmt.Sprintf("g-%d", i), Version: 1, Action: "deposit", Size: "M",
			ParcelID: fmt.Sprintf("JT%013d", i), Holder: "13488888888",
			CodeHash: wire.CodeHash(benchLocker, fmt.Sprintf("%08d", 2*i)), ValidFrom: &now, ValidUntil: &until,
			Pickup: &wire.PickupSpec{GrantID: fmt.Sprintf("g-%d-p", i), Holder: "13499996666",
				CodeHash: wire.CodeHash(benchLocker, fmt.Sprintf("%08d", 2*i+1)), ValidUntil: &puntil}}
	}
	return ops
}

// BenchmarkSnapshot100k applies a snapshot of 100,000 grants through
// controller.ApplyGrants and, as the baseline in the same run, writes the
// rows the locker stored into the same table (the store's schema) with the
// store's statement, prepared once, in one transaction, on a database
// opened with the same DSN (store.DSN: WAL, synchronous=FULL). It reports
// both rates and their ratio.
func BenchmarkSnapshot100k(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	ops := snapshotOps(n, now)
	var applyTime, rawTime time.Duration
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		st, err := store.Open(ctx, filepath.Join(dir, "locker.db"))
		if err != nil {
			b.Fatal(err)
		}
		cab := &benchCabinet{events: make(chan hal.Event)}
		for k := 1; k <= 24; k++ {
			cab.comps = append(cab.comps, hal.Compartment{Number: k, Size: "M"})
		}
		c, err := controller.New(controller.Options{LockerID: benchLocker, Store: st, Cabinet: cab, Tick: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		<-c.Ready()
		start := time.Now()
		ack, err := c.ApplyGrants(ctx, &wire.GrantsBody{Kind: "grants", LockerID: benchLocker, IssuedAt: now,
			ExpiresAt: now.Add(time.Hour), Snapshot: true, Ops: ops})
		applyTime += time.Since(start)
		if err != nil || ack.Applied != n {
			b.Fatalf("apply: %v, applied %d, rejected %d", err, ack.Applied, len(ack.Rejected))
		}
		cancel()
		<-done
		st.Close()

		// Baseline: the same rows, raw. The rows are read back as the
		// locker stored them (the nested pickup's JSON included) before
		// the clock starts, and written into the store's own schema (its
		// migrations make raw.db: the same table, the same indexes) with
		// the store's own INSERT OR REPLACE, prepared once, in one
		// transaction.
		cols, rows := storedGrants(b, filepath.Join(dir, "locker.db"))
		if len(rows) != n {
			b.Fatalf("%d grants stored, want %d", len(rows), n)
		}
		rawPath := filepath.Join(dir, "raw.db")
		rawSt, err := store.Open(ctx, rawPath)
		if err != nil {
			b.Fatal(err)
		}
		rawSt.Close()
		db, err := sql.Open("sqlite", store.DSN(rawPath))
		if err != nil {
			b.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		start = time.Now()
		tx, err := db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		// The statement the store's PutGrant uses, over the columns read.
		ins, err := tx.Prepare(`INSERT OR REPLACE INTO grants(` + strings.Join(cols, ", ") + `) VALUES (` +
			strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + `)`)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range rows {
			if _, err := ins.Exec(r...); err != nil {
				b.Fatal(err)
			}
		}
		ins.Close()
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		rawTime += time.Since(start)
		db.Close()
	}
	applyRate := float64(n*b.N) / applyTime.Seconds()
	rawRate := float64(n*b.N) / rawTime.Seconds()
	b.ReportMetric(applyRate, "applygrants-grants/s")
	b.ReportMetric(rawRate, "raw-upserts/s")
	b.ReportMetric(applyRate/rawRate, "ratio")
	b.ReportMetric(0, "ns/op")
}

// storedGrants reads every row of the grants table of the database at path,
// and its column names.
func storedGrants(b *testing.B, path string) (cols []string, rows [][]any) {
	b.Helper()
	db, err := sql.Open("sqlite", store.DSN(path))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	rs, err := db.Query(`SELECT * FROM grants`)
	if err != nil {
		b.Fatal(err)
	}
	defer rs.Close()
	if cols, err = rs.Columns(); err != nil {
		b.Fatal(err)
	}
	for rs.Next() {
		row := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range row {
			ptrs[i] = &row[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			b.Fatal(err)
		}
		rows = append(rows, row)
	}
	if err := rs.Err(); err != nil {
		b.Fatal(err)
	}
	return cols, rows
}
