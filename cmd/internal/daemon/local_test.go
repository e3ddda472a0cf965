package daemon_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/simulator"
)

// The database holds every grant's code_hash, SHA-256("{locker_id}:{code}"):
// with the locker id public and codes of 6 digits, 10^6 hashes give every
// code back in about a second. The daemon creates locker.db, -wal and
// -shm with SQLite's default mode 0644, so in a data folder that others
// may enter (made by hand with mkdir, 0755, rather than by the package)
// every local user reads every code. The files must be the daemon's own.
func TestDatabaseFilesAreOwnerOnly(t *testing.T) {
	w := loadWiring(t, "gpio-24.yaml")
	cab, err := simulator.New(w, simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cab.Halt()
	dir := filepath.Join(t.TempDir(), "lockerd")
	if err := os.Mkdir(dir, 0o755); err != nil { // `sudo mkdir /var/lib/lockerd`
		t.Fatal(err)
	}
	d, err := newDaemon(t, w, cab, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Hardware.Halt()
	defer d.Store.Close()
	for _, name := range []string{daemon.DBFile, daemon.DBFile + "-wal", daemon.DBFile + "-shm"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %s: every local user reads the code hashes (and so the codes)", name, fi.Mode())
		}
	}
}
