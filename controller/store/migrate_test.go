package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
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
