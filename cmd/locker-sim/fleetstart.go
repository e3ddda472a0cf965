package main

// Fleet start-up. Opening a new locker's database creates its schema: ten
// migrations whose SQL SQLite parses, about a third of a fleet locker's
// start-up (the CPU profile of 300 lockers starting). Every fleet locker
// starts from the same empty schema, so the fleet migrates one database
// once and copies its file into each new locker's folder; store.Open then
// finds the schema up to date (and still checks the file). A locker whose
// database exists keeps it.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/controller/store"
)

// fleetTemplate creates (again) the migrated, empty database every new
// fleet locker starts from, in DataDir, and returns its path. Each fleet
// process has its own (by its first locker's number).
func (f *fleet) fleetTemplate(ctx context.Context) (string, error) {
	dir := filepath.Join(f.o.DataDir, fmt.Sprintf("template-%d", f.o.First))
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	path := filepath.Join(dir, daemon.DBFile)
	st, err := store.Open(ctx, path)
	if err != nil {
		return "", fmt.Errorf("template database: %w", err)
	}
	if err := st.Close(); err != nil {
		return "", fmt.Errorf("template database: %w", err)
	}
	// Closed, the database is whole in its file: SQLite removed the log.
	for _, ext := range []string{"-wal", "-shm", "-journal"} {
		if fi, err := os.Stat(path + ext); err == nil && fi.Size() > 0 {
			return "", fmt.Errorf("template database: %s left behind after close", path+ext)
		}
	}
	return path, nil
}

// copyNew copies the file from to the new file to (written whole under a
// temporary name, synced, then renamed); it does nothing when to exists.
func copyNew(from, to string) error {
	if _, err := os.Stat(to); err == nil {
		return nil
	} else if !os.IsNotExist(err) {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := to + ".new"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, to)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
