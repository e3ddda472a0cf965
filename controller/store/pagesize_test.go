package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// pragma reads one PRAGMA's value from s's connection.
func pragma[T any](t *testing.T, s *Store, name string) T {
	t.Helper()
	var v T
	if err := s.conn.QueryRowContext(context.Background(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// A database of an older version (4 KiB pages, no auto_vacuum, the
// last commits still in its write-ahead log, as a power cut leaves it) is
// given PageSize pages at its first open by this version, with every row,
// in WAL mode and incremental auto_vacuum, and sound.
func TestOlderDatabaseGetsTheStoresPageSize(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	live := filepath.Join(dir, "live.db")
	db, err := sql.Open("sqlite", "file:"+live+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	stmts := append(append([]string{"PRAGMA wal_autocheckpoint = 0"}, migrations...),
		fmt.Sprintf("PRAGMA user_version = %d", len(migrations)))
	for i, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("statement %d: %v", i, err)
		}
	}
	const grants = 3000
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range grants {
		if _, err := tx.Exec(`INSERT INTO grants(grant_id, version, action, code_hash, valid_until, pickup, pickup_id, pickup_code)
			VALUES (?, 1, 'deposit', ?, '2027-01-08T00:00:00.000000000Z', ?, ?, ?)`,
			fmt.Sprintf("g-%05d", i), fmt.Sprintf("%064x", i), fmt.Sprintf(`{"grant_id":"g-%05d-p","code_hash":"%064x","uses":1}`, i, grants+i),
			fmt.Sprintf("g-%05d-p", i), fmt.Sprintf("%064x", grants+i)); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO outbox(seq, payload, type) VALUES (?, ?, 'deposited')`, i+1, fmt.Appendf(nil, `{"seq":%d}`, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Exec(`UPDATE counters SET value = ? WHERE name = 'seq'`, grants); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// The files as a kill -9 leaves them: the commits in the log only.
	path := filepath.Join(dir, "l.db")
	for _, ext := range []string{"", "-wal"} {
		copyFile(t, live+ext, path+ext)
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("no write-ahead log to recover (%v)", err)
	}

	s := open(t, path)
	if got := pragma[int](t, s, "page_size"); got != PageSize {
		t.Fatalf("page_size %d, want %d", got, PageSize)
	}
	if got := pragma[string](t, s, "journal_mode"); got != "wal" {
		t.Fatalf("journal_mode %s, want wal", got)
	}
	if got := pragma[int](t, s, "auto_vacuum"); got != 2 {
		t.Fatalf("auto_vacuum %d, want 2 (incremental)", got)
	}
	if res, err := s.IntegrityCheck(ctx); err != nil || res != "ok" {
		t.Fatalf("integrity_check: %s, %v", res, err)
	}
	var n, events int
	if err := s.conn.QueryRowContext(context.Background(), "SELECT (SELECT COUNT(*) FROM grants), (SELECT COUNT(*) FROM outbox)").Scan(&n, &events); err != nil {
		t.Fatal(err)
	}
	if n != grants || events != grants {
		t.Fatalf("%d grants and %d events after the conversion, want %d of each", n, events, grants)
	}
	err = s.View(ctx, func(tx *Tx) error {
		g, err := tx.Grant("g-01234")
		if err != nil {
			return err
		}
		if g.PickupID != "g-01234-p" || g.PickupCode != fmt.Sprintf("%064x", grants+1234) || !strings.Contains(g.Pickup, g.PickupCode) {
			return fmt.Errorf("g-01234 = %+v", g)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The next seq follows the stored ones.
	var seq int64
	if err := s.Update(ctx, func(tx *Tx) error {
		seq, _, err = tx.AppendEvent("deposited", func(seq int64) ([]byte, error) { return fmt.Appendf(nil, `{"seq":%d}`, seq), nil })
		return err
	}); err != nil || seq != grants+1 {
		t.Fatalf("next seq %d (%v), want %d", seq, err, grants+1)
	}
	// Converted once: a second open finds it done.
	s.Close()
	s2 := open(t, path)
	if got := pragma[int](t, s2, "page_size"); got != PageSize {
		t.Fatalf("page_size %d after a reopen", got)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// A deposit grant with ids of 36 characters (UUIDs), a long parcel id and
// every time set fits its page whole: no overflow page, which each change
// of the row would write again. Its nested pickup reads back with every
// member it was stored with, though the row keeps the pickup's id and
// code hash in their columns only.
func TestGrantRowsFitTheirPage(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "l.db"))
	at := time.Date(2027, 3, 1, 6, 0, 0, 123456789, time.UTC)
	id := "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
	pickup := map[string]any{"grant_id": id + "-p", "actor": "134****6666", "code_hash": strings.Repeat("b", 64),
		"valid_from": "0001-01-01T00:00:00Z", "valid_until": "2027-03-08T06:00:00.123Z", "uses": 1}
	js, err := json.Marshal(pickup)
	if err != nil {
		t.Fatal(err)
	}
	g := Grant{ID: id, Version: 1234567, Action: "deposit", Compartment: 124, Size: "XL", ParcelID: "JT0012345678901234",
		Actor: "134****8888", CodeHash: strings.Repeat("a", 64), ValidFrom: at, ValidUntil: at.Add(7 * 24 * time.Hour),
		UsesLeft: 1, Pickup: string(js), PickupID: id + "-p", PickupCode: strings.Repeat("b", 64), ParcelSeq: 123456789,
		IssuedAt: at, EndedAt: at.Add(time.Hour)}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.PutGrant(g) }); err != nil {
		t.Fatal(err)
	}
	var overflow, payload int
	if err := s.conn.QueryRowContext(context.Background(), `SELECT COUNT(*) FILTER (WHERE pagetype = 'overflow'), MAX(payload) FILTER (WHERE pagetype = 'leaf')
		FROM dbstat WHERE name = 'grants'`).Scan(&overflow, &payload); err != nil {
		t.Fatal(err)
	}
	if overflow != 0 {
		t.Fatalf("the grant spilled onto %d overflow pages (%d bytes on its page)", overflow, payload)
	}
	t.Logf("the grant's row: %d bytes on its page", payload)
	if err := s.View(ctx, func(tx *Tx) error {
		got, err := tx.Grant(id)
		if err != nil {
			return err
		}
		var back map[string]any
		if err := json.Unmarshal([]byte(got.Pickup), &back); err != nil {
			return err
		}
		var want map[string]any
		json.Unmarshal(js, &want)
		if !reflect.DeepEqual(back, want) {
			return fmt.Errorf("pickup read back %s, want %s", got.Pickup, js)
		}
		got.Pickup = g.Pickup
		if got != g {
			return fmt.Errorf("read back %+v, want %+v", got, g)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
