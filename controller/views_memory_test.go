package controller

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
)

// A snapshot or a large envelope holds in memory the live grants only (not
// the rows of grants used up, nor tombstones, which wait for the purge),
// and it is as safe as when it held every row: a grant used up and not
// named by a newer snapshot stays used up (its version still makes a put
// of it again stale, on both paths), while a live grant the snapshot does
// not name is revoked.
func TestSnapshotHoldsLiveGrantsOnly(t *testing.T) {
	const x = "7777777"
	s := newSafetyRig(t)
	s.send(false, false, nextIssued(t0), deposit("d1", 1, "111111", 1, x), deposit("d2", 1, "222222", 2, "8888888"),
		depositOp("gone", 1, "333333", "M", 0))
	if n := s.depositParcel("111111"); n != 1 {
		t.Fatalf("d1's deposit opened %d", n)
	}
	s.keys(x + "#")
	s.door(1, true)
	s.parcel(1, false)
	s.door(1, false)
	if g, _ := s.grant("d1-p"); g.UsesLeft != 0 {
		t.Fatalf("d1-p after the pickup: %d uses left", g.UsesLeft)
	}
	s.send(false, false, nextIssued(t0), wire.GrantOp{Op: "revoke", GrantID: "r", Version: 1})

	var held []string
	err := s.st.View(s.ctx, func(tx *store.Tx) error {
		v, err := loadMemView(tx, s.clock.Now())
		held = slices.Sorted(maps.Keys(v.byID))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"d2", "gone"}; !slices.Equal(held, want) {
		t.Fatalf("the view holds %v, want the live grants %v (not d1, d1-p used up, nor the tombstone r)", held, want)
	}

	// The central's snapshot: d2 only.
	ack := s.send(false, true, nextIssued(t0.Add(time.Minute)), deposit("d2", 1, "222222", 2, "8888888"))
	if ack.Applied != 0 || ack.Stale != 1 || len(ack.Rejected) != 0 {
		t.Fatalf("snapshot ack %+v", ack)
	}
	if g, ok := s.grant("gone"); !ok || !g.Revoked {
		t.Errorf("the live grant the snapshot did not name: %+v, want a tombstone", g)
	}
	for _, id := range []string{"d1", "d1-p"} {
		if g, ok := s.grant(id); !ok || g.Revoked || g.UsesLeft != 0 || g.Version != 1 {
			t.Errorf("%s after the snapshot: %+v, want kept, used up, version 1", id, g)
		}
	}
	// Their puts again, newer than the snapshot: stale on both paths.
	for _, p := range viewPaths {
		ack := s.send(p.big, false, nextIssued(t0.Add(2*time.Minute)), deposit("d1", 1, "111111", 1, x),
			pickupOp("d1-p", 1, x, 1, "d1"))
		if ack.Stale != 2 || len(ack.Rejected) != 0 {
			t.Errorf("%s: the used-up grants put again: ack stale %d rejected %+v, want both stale", p.name, ack.Stale, ack.Rejected)
		}
	}
	before := len(s.cab.Releases())
	s.keys("111111#")
	s.keys(x + "#")
	if rel := s.cab.Releases(); len(rel) != before {
		t.Errorf("the used-up codes released %v", rel[before:])
	}
}
