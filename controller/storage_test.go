package controller

import (
	"strings"
	"testing"

	"github.com/openlocker/locker/controller/store"
)

// readOnly makes the database refuse every write with SQLite's own
// SQLITE_READONLY, as a file system gone read-only does (the torture suite
// does it with a real full and read-only file system).
func (r *rig) readOnly(on bool) {
	r.t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	if err := r.c.do(r.ctx, func() {
		// A read transaction: with query_only on, a write one cannot begin.
		if err := r.st.View(r.ctx, func(tx *store.Tx) error { return tx.Exec("PRAGMA query_only = " + v) }); err != nil {
			r.t.Error(err)
		}
	}); err != nil {
		r.t.Fatal(err)
	}
}

// During a storage outage the locker opens nothing, says so on the display
// and in its status without being asked, and swallows no sensor change:
// when the storage is back it records the outage and replays what the
// sensors saw meanwhile, so a deposit finished during the outage is not lost.
func TestStorageOutageRefusesDoorsAndResyncs(t *testing.T) {
	r := newRig(t, "M M M")
	r.apply(body(depositOp("g-1", 1, "111111", "M", 0), depositOp("g-2", 2, "222222", "M", 0)))
	r.keys("111111#")
	r.door(1, true)
	r.parcel(1, true)
	r.types()

	r.readOnly(true)
	r.door(1, false) // the deposit ends while nothing can be recorded
	if d := r.cab.Display(); d[0] != "Out of service" {
		t.Fatalf("idle display during the outage = %q", d)
	}
	st, err := r.c.Status(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.StorageFault, "readonly") {
		t.Fatalf("status storage_fault = %q", st.StorageFault)
	}
	r.keys("222222#")
	if n := len(r.cab.Releases()); n != 1 {
		t.Fatalf("a door opened during the outage: releases %v", r.cab.Releases())
	}
	if d := r.cab.Display(); d[0] != "Out of service" {
		t.Fatalf("display after a code during the outage = %q", d)
	}
	r.door(3, true) // forced during the outage
	r.tick()        // still failing: nothing recorded, still out of service
	r.expectTypes()
	if s := r.state(1); s != "reserved" && s != "free" {
		t.Fatalf("compartment 1 changed during the outage: %s", s)
	}

	r.readOnly(false)
	r.tick()
	r.expectTypes("storage_fault", "door_closed", "deposited", "door_opened", "door_forced")
	if s := r.state(1); s != "occupied" {
		t.Fatalf("compartment 1 after the resync = %s, want occupied", s)
	}
	if st, _ := r.c.Status(r.ctx); st.StorageFault != "" {
		t.Fatalf("status still says storage_fault %q", st.StorageFault)
	}
	r.door(3, false)
	r.keys("*")
	if d := r.cab.Display(); d[0] != "Enter code" {
		t.Fatalf("display after recovery = %q", d)
	}
	r.types()
	r.keys("222222#")
	if got := r.cab.Releases(); len(got) != 2 || got[1] != 2 {
		t.Fatalf("the courier's code does not work after the outage: releases %v", got)
	}
}
