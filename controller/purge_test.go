package controller

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/protocol"
)

// ackAll acknowledges every event in the outbox, as the broker would.
func (r *rig) ackAll() {
	r.t.Helper()
	evs, err := r.c.PendingEvents(r.ctx, 0, 1<<20)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range evs {
		if err := r.c.AckEvent(r.ctx, e.Seq); err != nil {
			r.t.Fatal(err)
		}
	}
}

// counts returns the rows of grants (tombstones included) and commands.
func (r *rig) counts() (grants, commands int) {
	r.t.Helper()
	err := r.st.View(r.ctx, func(tx *store.Tx) error {
		all, err := tx.AllGrantMeta()
		grants = len(all)
		if err != nil {
			return err
		}
		for _, id := range []string{"c-1", "c-2"} {
			if _, ran, err := tx.Command(id); err != nil {
				return err
			} else if ran {
				commands++
			}
		}
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return grants, commands
}

// A parcel's grants, a revoked grant's tombstone and an executed command id
// are deleted PurgeAfter after they ended — not before, and not while the
// traces of that time are still in the outbox — and nothing they could be
// replayed by can still be applied: an envelope that named them expired
// long before (its lifetime is at most half the horizon), and one that
// claims to live longer is refused whole.
func TestPurgeAfterTheReplayHorizon(t *testing.T) {
	r := newRig(t, "M M")
	deposit := body(depositOp("g-1", 1, "123456", "M", 0), depositOp("g-2", 1, "222222", "M", 0))
	r.apply(deposit)
	r.deposit("123456", 1)
	r.keys("1234569#")
	r.door(1, true)
	r.parcel(1, false)
	r.door(1, false)
	r.apply(body(wire.GrantOp{Op: "revoke", GrantID: "g-2", Version: 2}))
	if res, _ := r.c.Execute(r.ctx, &wire.Command{CommandID: "c-1", Action: "disable", Compartment: 2}); !res.OK {
		t.Fatalf("disable: %+v", res)
	}
	grants, commands := r.counts()
	if grants != 3 || commands != 1 { // g-1, its pickup g-1-p, g-2's tombstone
		t.Fatalf("before the purge: %d grants, %d commands", grants, commands)
	}

	// Not before the horizon.
	r.clock.Advance(13 * 24 * time.Hour)
	r.tick()
	if g, c := r.counts(); g != 3 || c != 1 {
		t.Fatalf("purged before the horizon: %d grants, %d commands left", g, c)
	}
	// Not while the traces of that time wait for the broker: the central
	// may not know yet that the grants were used up.
	r.clock.Advance(2 * 24 * time.Hour)
	r.tick()
	if g, c := r.counts(); g != 3 || c != 1 {
		t.Fatalf("purged while the traces that ended them were pending: %d grants, %d commands left", g, c)
	}
	r.ackAll()
	r.clock.Advance(PurgeEvery)
	r.tick()
	if g, c := r.counts(); g != 0 || c != 0 {
		t.Fatalf("past the horizon with the outbox acknowledged: %d grants, %d commands left", g, c)
	}

	// The replay: the envelope that put g-1, delivered again now, was
	// sealed with a lifetime of an hour; it expired 15 days ago.
	kp, err := protocol.GenerateKeyPair("dev")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(deposit)
	env, err := protocol.Seal("dev", kp.Private, raw)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := protocol.Open(kp.Keyring(), env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.DecodeGrants(b, lockerID, r.c.Now()); err == nil || !strings.Contains(err.Error(), "expire") {
		t.Fatalf("the old envelope decoded after the purge: %v", err)
	}
	// One that claims to live past half the horizon is refused whole, so
	// that none can live to see its grants purged.
	long := body(depositOp("g-1", 1, "123456", "M", 0))
	long.IssuedAt = r.c.Now()
	long.ExpiresAt = long.IssuedAt.Add(8 * 24 * time.Hour)
	ack := r.apply(long)
	if ack.Applied != 0 || len(ack.Rejected) != 1 || !strings.Contains(ack.Rejected[0].Error, "longer than") {
		t.Fatalf("an envelope living 8 days: %+v", ack)
	}
	res, _ := r.c.Execute(r.ctx, &wire.Command{CommandID: "c-1", Action: "open", Compartment: 1,
		IssuedAt: r.c.Now(), ExpiresAt: r.c.Now().Add(30 * 24 * time.Hour)})
	if res.OK {
		t.Fatal("a command living 30 days was run")
	}
	if len(r.cab.Releases()) != 2 {
		t.Fatalf("releases: %v", r.cab.Releases())
	}
}

// The tick's transaction is skipped while nothing is due, and runs again
// for what falls due: the idle cost of a locker at rest is no write.
func TestIdleHousekeepingSkipsWork(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.deposit("123456", 1)
	r.tick() // computes the next due time: the pickup's end in 72 h
	before := r.dataVersion()
	for i := 0; i < 100; i++ {
		r.clock.Advance(time.Second)
		r.tick()
	}
	if r.dataVersion() != before {
		t.Fatal("idle ticks wrote to the database")
	}
	r.clock.Advance(73 * time.Hour)
	r.tick()
	if got := r.types(); !slices.Contains(got, "pickup_expired") {
		t.Fatalf("the due expiry did not run: %v", got)
	}
}

// dataVersion is how many write transactions the store has begun.
func (r *rig) dataVersion() uint64 { return r.st.Updates() }

// Housekeeping checkpoints once the write-ahead log passes CheckpointWAL,
// and the log starts again from nothing: a checkpoint that left the log's
// file at its size made every later tick checkpoint again (and rewrite the
// database's pages for every parcel).
func TestCheckpointEmptiesTheLog(t *testing.T) {
	r := newRig(t, "M M")
	big := make([]wire.GrantOp, 0, 600)
	for i := 0; i < 600; i++ {
		big = append(big, wire.GrantOp{Op: "put", GrantID: "s-" + strconv.Itoa(i), Version: 1, Action: "service",
			Holder: "13700001111", CodeHash: hash(strconv.Itoa(10000000 + i)), ValidUntil: ptr(t0.Add(time.Hour))})
	}
	for r.st.WALBytes() < CheckpointWAL {
		r.apply(body(big...)) // (stale after the first: each still commits a little)
		for i := range big {
			big[i].Version++
		}
	}
	r.tick()
	if n := r.st.WALBytes(); n >= CheckpointWAL {
		t.Fatalf("after the checkpoint the log holds %d bytes", n)
	}
}
