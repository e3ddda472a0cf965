package controller

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/hal"
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

// A sensor fault hal reports during a storage outage is recorded when the
// storage is back, as is a recovery; one that came and went is recorded as
// both, and the compartments end as the sensors left them.
func TestStorageOutageKeepsSensorFaults(t *testing.T) {
	r := newRig(t, "M M M M")
	r.types()
	chatter := errors.New("hal: door sensor chatters")
	r.event(hal.Event{Kind: hal.SensorFault, Compartment: 4, Err: chatter})
	r.expectTypes("sensor_fault")

	r.readOnly(true)
	r.event(hal.Event{Kind: hal.SensorFault, Compartment: 2, Err: chatter}) // faulty, stays so
	r.event(hal.Event{Kind: hal.SensorFault, Compartment: 3, Err: chatter}) // came and went
	r.event(hal.Event{Kind: hal.SensorRecovered, Compartment: 3})
	r.event(hal.Event{Kind: hal.SensorFault, Compartment: 3, Err: chatter})
	r.event(hal.Event{Kind: hal.SensorRecovered, Compartment: 3})
	r.event(hal.Event{Kind: hal.SensorRecovered, Compartment: 4}) // faulty before, well now
	r.tick()
	r.expectTypes()

	r.readOnly(false)
	r.tick()
	var got []string
	r.mu.Lock()
	for _, tr := range r.traces {
		got = append(got, fmt.Sprintf("%s %d", tr.Type, tr.Compartment))
	}
	r.traces = nil
	r.mu.Unlock()
	want := "storage_fault 0, sensor_fault 2, sensor_fault 3, sensor_recovered 3, sensor_recovered 4"
	if strings.Join(got, ", ") != want {
		t.Fatalf("traces after the outage: %s\nwant %s", strings.Join(got, ", "), want)
	}
	for n, want := range map[int]string{1: "free", 2: "fault", 3: "free", 4: "free"} {
		if s := r.state(n); s != want {
			t.Errorf("compartment %d is %s, want %s", n, s, want)
		}
	}
	// Nothing is kept for the next outage.
	r.readOnly(true)
	r.event(hal.Event{Kind: hal.SensorFault, Compartment: 1, Err: chatter})
	r.readOnly(false)
	r.tick()
	r.expectTypes("storage_fault", "sensor_fault")
}
