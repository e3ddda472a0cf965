package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A deposit grant stored by schema 6 (its nested pickup's id and code only
// inside the pickup JSON) names them in columns after migration 7, so that
// the code stays taken; a row whose JSON is not valid migrates with none.
func TestMigration7FillsPendingPickupColumns(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "l.db")
	db, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	code := fmt.Sprintf("%064x", 7)
	stmts := append(append([]string{}, migrations[:6]...),
		`INSERT INTO grants(grant_id, version, action, code_hash, valid_until, pickup)
		 VALUES ('d1', 1, 'deposit', '`+fmt.Sprintf("%064x", 1)+`', '2026-11-23T10:00:00.000000000Z',
		 '{"grant_id":"d1-p","code_hash":"`+code+`","valid_until":"2026-11-25T10:00:00Z","uses":1}')`,
		`INSERT INTO grants(grant_id, version, action, pickup) VALUES ('bad', 1, 'deposit', '{not json')`,
		"PRAGMA user_version = 6")
	for i, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("statement %d: %v", i, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := open(t, path) // runs migration 7 and any later one
	err = s.View(ctx, func(tx *Tx) error {
		g, err := tx.Grant("d1")
		if err != nil {
			return err
		}
		if g.PickupID != "d1-p" || g.PickupCode != code {
			return fmt.Errorf("d1: pickup_id %q, pickup_code %q", g.PickupID, g.PickupCode)
		}
		byCode, err := tx.GrantsByPickupCode(code)
		if err != nil {
			return err
		}
		if len(byCode) != 1 || byCode[0].ID != "d1" {
			return fmt.Errorf("GrantsByPickupCode = %+v, want d1", byCode)
		}
		if bad, err := tx.Grant("bad"); err != nil || bad.PickupID != "" || bad.PickupCode != "" {
			return fmt.Errorf("bad: %+v, %v", bad, err)
		}
		meta, err := tx.AllGrantMeta()
		if err != nil {
			return err
		}
		if m := meta["d1"]; m.PickupID != "d1-p" || m.PickupCode != code {
			return fmt.Errorf("AllGrantMeta d1 = %+v", m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// PutGrant refuses a grant that nests a pickup without naming its id and
// code: that code would escape the uniqueness check.
func TestPutGrantNamesItsNestedPickup(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "l.db"))
	err := s.Update(context.Background(), func(tx *Tx) error {
		return tx.PutGrant(Grant{ID: "d1", Version: 1, Action: "deposit", Pickup: `{"grant_id":"d1-p"}`})
	})
	if !errors.Is(err, ErrPickupUnnamed) {
		t.Fatalf("PutGrant = %v, want ErrPickupUnnamed", err)
	}
}

// Migration 10 keeps every grant and tombstone, field for field, in a
// table without rowids (a grant's row is its grant_id's index entry), with
// the same indexes; the purge still deletes by grant_id.
func TestMigration10KeepsGrantsWithoutRowids(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "l.db")
	db, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	code := fmt.Sprintf("%064x", 7)
	stmts := append(append([]string{}, migrations[:9]...),
		`INSERT INTO grants(grant_id, version, revoked, action, compartment, size, parcel_id, actor, code_hash, valid_from,
			valid_until, uses_left, pickup, expired_sent, parcel_seq, issued_at, pickup_id, pickup_code, ended_at)
		 VALUES ('d1', 3, 0, 'deposit', 4, 'M', 'JT1', '134****8888', '`+fmt.Sprintf("%064x", 1)+`', '2027-01-01T00:00:00.000000000Z',
			'2027-01-08T00:00:00.000000000Z', 0, '{"grant_id":"d1-p"}', 1, 9, '2027-01-01T00:00:00.000000000Z', 'd1-p', '`+code+`',
			'2027-01-02T00:00:00.000000000Z')`,
		`INSERT INTO grants(grant_id, version, revoked, issued_at) VALUES ('r1', 2, 1, '2027-01-01T00:00:00.000000000Z')`,
		"PRAGMA user_version = 9")
	for i, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("statement %d: %v", i, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := open(t, path) // runs migration 10
	var ddl string
	if err := s.conn.QueryRowContext(context.Background(), "SELECT sql FROM sqlite_schema WHERE name = 'grants'").Scan(&ddl); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ddl, "WITHOUT ROWID") {
		t.Fatalf("grants after migration 10: %s", ddl)
	}
	var idx int
	if err := s.conn.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'grants' AND name IN
		('grants_code', 'grants_until', 'grants_reserving', 'grants_pickup_code')`).Scan(&idx); err != nil || idx != 4 {
		t.Fatalf("%d of the 4 indexes of grants (%v)", idx, err)
	}
	at := func(s string) time.Time { return parseTime(s) }
	want := Grant{ID: "d1", Version: 3, Action: "deposit", Compartment: 4, Size: "M", ParcelID: "JT1", Actor: "134****8888",
		CodeHash: fmt.Sprintf("%064x", 1), ValidFrom: at("2027-01-01T00:00:00Z"), ValidUntil: at("2027-01-08T00:00:00Z"),
		Pickup: `{"grant_id":"d1-p"}`, ExpiredSent: true, ParcelSeq: 9, IssuedAt: at("2027-01-01T00:00:00Z"), PickupID: "d1-p",
		PickupCode: code, EndedAt: at("2027-01-02T00:00:00Z")}
	err = s.View(ctx, func(tx *Tx) error {
		g, err := tx.Grant("d1")
		if err != nil {
			return err
		}
		if fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", want) {
			return fmt.Errorf("d1 = %+v, want %+v", g, want)
		}
		if r, err := tx.Grant("r1"); err != nil || !r.Revoked || r.Version != 2 {
			return fmt.Errorf("r1 = %+v, %v", r, err)
		}
		if byCode, err := tx.GrantsByPickupCode(code); err != nil || len(byCode) != 1 {
			return fmt.Errorf("GrantsByPickupCode = %+v, %v", byCode, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var purged int
	if err := s.Update(ctx, func(tx *Tx) error {
		purged, err = tx.Purge(at("2027-02-01T00:00:00Z"), "2027-02-01", 10)
		return err
	}); err != nil || purged != 2 {
		t.Fatalf("purged %d (%v), want both", purged, err)
	}
}
