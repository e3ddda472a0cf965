package store

import (
	"context"
	"fmt"
)

// PageSize is the database's page size. A commit in WAL mode writes each
// page it changed whole, as a frame of the write-ahead log: a parcel
// cycle's commits change a few rows each (a compartment, an outbox event,
// a grant), and with 2 KiB pages they write about 30 % fewer bytes than
// with SQLite's default 4 KiB (BenchmarkWear). Every grant row still fits
// on its page (a WITHOUT ROWID row overflows above about 480 bytes at
// 2 KiB: TestGrantRowsFitTheirPage).
const PageSize = 2048

// usePageSize gives the database PageSize pages. The page size of a
// database in WAL mode cannot change, and a new database is put in WAL
// mode as soon as it is opened (DSN), so this takes one VACUUM out of WAL
// mode: at the first start of a new database (it is empty: quick), and
// once for a database of an older version. VACUUM in rollback mode with
// synchronous=FULL is atomic: a power cut during it leaves the database
// whole, in its old or its new page size, and the next start tries again.
//
// A database that cannot be converted (VACUUM needs room for a copy of
// it) keeps its pages: the conversion is an economy, not a condition of
// service. Only a failure to go back to WAL mode is an error.
func (s *Store) usePageSize(ctx context.Context) error {
	var size int
	if err := s.conn.QueryRowContext(ctx, "PRAGMA page_size").Scan(&size); err != nil {
		return err
	}
	if size == PageSize {
		return nil
	}
	// One connection (Open): these pragmas and the VACUUM are on it.
	var mode string
	if err := s.conn.QueryRowContext(ctx, "PRAGMA journal_mode = DELETE").Scan(&mode); err != nil {
		return err
	}
	// A step that fails (VACUUM needs room for a copy) ends the
	// conversion and leaves the old page size: the next start tries again.
	for _, q := range []string{
		fmt.Sprintf("PRAGMA page_size = %d", PageSize),
		// auto_vacuum too, in the same VACUUM, if an older database has
		// not got it yet (incrementalVacuumMode).
		"PRAGMA auto_vacuum = INCREMENTAL",
		"VACUUM",
	} {
		if _, err := s.conn.ExecContext(ctx, q); err != nil {
			break
		}
	}
	if err := s.conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fmt.Errorf("back to WAL mode: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("back to WAL mode: the journal mode is %s", mode)
	}
	return nil
}

// PageSize reports the database's page size.
func (s *Store) PageSize(ctx context.Context) (int, error) {
	var size int
	defer s.exclusive()()
	err := s.conn.QueryRowContext(ctx, "PRAGMA page_size").Scan(&size)
	return size, err
}
