package controller

import (
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
)

// fixesCountCommands counts the executed command ids kept, r stopped.
func fixesCountCommands(t *testing.T, r *rig) int {
	t.Helper()
	db, err := sql.Open("sqlite", store.DSN(r.path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM commands").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDailyRestartsKeepThePurgeGoing (found by an attack on the first fix): the purge's horizon moves on
// only by the monotonic time that passed between two purges of one run, and
// a run purges at its start and then every PurgeEvery (24 h). A locker that
// restarts once a day (a nightly reboot, a watchdog, a shop that switches it
// off for an hour at night) purges at each start with nothing elapsed, and
// never lives to its second purge: the horizon never moves, and nothing is
// ever purged again. Two months of daily restarts, one command a day:
// every command id of them is still there, where PurgeAfter (14 days) keeps
// about 15 (before the fix, the cutoff was now - PurgeAfter at each start).
// The database grows without bound.
func TestDailyRestartsKeepThePurgeGoing(t *testing.T) {
	r := newRig(t, "M M")
	const days = 60
	for d := 0; d < days; d++ {
		r.tick() // the first housekeeping tick of the run: its purge
		action := []string{"disable", "enable"}[d%2]
		if res, err := r.c.Execute(r.ctx, &wire.Command{CommandID: fmt.Sprintf("c-%d", d), Action: action, Compartment: 2}); err != nil || !res.OK {
			t.Fatalf("day %d: %s: %+v %v", d, action, res, err)
		}
		r.ackAll()
		r.clock.Advance(23 * time.Hour)
		r.tick()
		r.ackAll()
		r.stop()
		r.clock.Advance(time.Hour) // off for an hour
		r.start()
	}
	r.tick()
	r.stop()
	kept := fixesCountCommands(t, r)
	// A purge that lags somewhat is fine; twice PurgeAfter is not.
	want := int(2 * r.c.opts.PurgeAfter / (24 * time.Hour))
	if kept > want {
		var h string
		db, _ := sql.Open("sqlite", store.DSN(r.path))
		_ = db.QueryRow("SELECT value FROM settings WHERE key = ?", horizonKey).Scan(&h)
		db.Close()
		t.Errorf("after %d days of daily restarts, %d command ids kept (PurgeAfter %s: want at most %d, twice that); "+
			"the purge horizon is %s, the clock %s", days, kept, r.c.opts.PurgeAfter, want, h, wire.FormatTime(r.clock.Now()))
	}
}

// TestFirstHorizonFromAFutureClockGoesBack (found by an attack on the first fix): the horizon moves at most as
// fast as the monotonic clock and never back, but its first value has no
// bound. A new locker (no last trusted time, no horizon: it booted without
// a network clock) whose first trusted time is a wrong NTP answer a year
// ahead takes now - PurgeAfter, a year ahead, as its horizon, and keeps it
// ("never backwards") after NTP is set right. From then on, for a year,
// every command id, tombstone and used-up grant is purged at the first
// purge after it ended (after a restart: the run's next purge was moved a
// year ahead too). A signed open command, delivered again within its
// lifetime after such a purge, opens the door a second time (I1: "a
// command_id is executed at most once"). Before the fix the cutoff followed
// the clock back to now - PurgeAfter.
func TestFirstHorizonFromAFutureClockGoesBack(t *testing.T) {
	r := newRig(t, "M M")
	r.ackAll()
	bootUntrusted(t, r, true) // a new locker, booted in 1970

	// A wrong NTP answer, a year ahead: trusted (after MinSaneTime).
	r.clock.Set(t0.Add(365 * 24 * time.Hour))
	r.tick()
	r.ackAll()
	// NTP is set right.
	real := t0.Add(24 * time.Hour)
	r.clock.Set(real)
	r.tick()
	r.ackAll()

	deliver := openCommand(t, r, real)
	if res := deliver(); !res.OK {
		t.Fatalf("the command: %+v", res)
	}
	r.door(1, true)
	r.door(1, false)
	r.ackAll()

	// An hour later the daemon restarts (an upgrade): its first tick purges.
	r.clock.Advance(time.Hour)
	r.restart()
	r.ackAll() // the link is up: the start's traces are acknowledged
	r.tick()

	res := deliver()
	if res.OK || len(r.cab.Releases()) != 1 {
		t.Fatalf("the same signed command, delivered again 1h after it ran (it lives 6 days), gave %+v: doors released %v",
			res, r.cab.Releases())
	}
}

// A start on a clock a year ahead: the horizon catches up on the time the
// locker seems to have been off by at most PurgeAfter - MaxEnvelopeLifetime,
// so the tombstone of a grant whose put is still alive stays, and once the
// clock is set right the put, delivered again, changes nothing.
func TestStartOnAFutureClockPurgesNoTombstone(t *testing.T) {
	r := newRig(t, "M M")
	sealedPut := putThenRevoke(t, r)
	r.tick()
	r.stop()
	r.clock.Set(t0.Add(365 * 24 * time.Hour)) // the board starts on a wrong network time
	r.start()
	r.tick()
	r.ackAll()
	r.tick()
	r.stop()
	r.clock.Set(t0.Add(3 * time.Hour)) // set right
	r.start()
	r.tick()
	ack := deliverGrants(t, r, sealedPut)
	r.keys("123456#")
	if ack.Applied != 0 || len(r.cab.Releases()) != 0 {
		t.Fatalf("after a start a year ahead, the put of the revoked grant delivered again: ack %+v; the revoked code released %v",
			ack, r.cab.Releases())
	}
}
