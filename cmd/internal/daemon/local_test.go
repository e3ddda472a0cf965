package daemon_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/protocol"
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
	kp, err := protocol.GenerateKeyPair("test")
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(context.Background(), daemon.Options{LockerID: "T01", DataDir: dir, Wiring: w, Pins: cab.ByName,
		Hal:  hal.Options{NoDisplayDelays: true, Buses: cab.Bus},
		Link: client.Options{Broker: "tcp://127.0.0.1:1", Keys: kp.Keyring()}})
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
