package controller

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
)

// The grants' safety promises (issue 11), each held on both ways of applying
// an envelope: dbView (a small envelope, one lookup per op) and memView (an
// envelope of preloadOps ops or more, and every snapshot).

// issuedSeq makes the tests' envelopes' issued_at strictly increasing, as
// the central's are: a snapshot revokes only what older envelopes put.
var issuedSeq atomic.Int64

// nextIssued is base plus a few nanoseconds more than the last call's.
func nextIssued(base time.Time) time.Time { return base.Add(time.Duration(issuedSeq.Add(1))) }

// viewPaths are the two ways ops are checked against the stored grants.
var viewPaths = []struct {
	name string
	big  bool // padded to preloadOps ops: memView
}{{"dbView", false}, {"memView", true}}

// safetyRig sends envelopes with a chosen issued_at, padded with filler
// deposit grants (codes of their own) when big.
type safetyRig struct {
	*rig
	fill int
}

func newSafetyRig(t *testing.T) *safetyRig {
	r := newRig(t, "M M")
	r.types()
	return &safetyRig{rig: r}
}

func (s *safetyRig) send(big, snapshot bool, issued time.Time, ops ...wire.GrantOp) wire.GrantsAck {
	s.t.Helper()
	b := body(ops...)
	b.IssuedAt, b.Snapshot = issued, snapshot
	for big && len(b.Ops) < preloadOps {
		s.fill++
		op := depositOp(fmt.Sprintf("fill-%d", s.fill), 1, fmt.Sprintf("3%07d", s.fill), "M", 0)
		now := s.clock.Now()
		op.ValidUntil, op.Pickup.ValidUntil = ptr(now.Add(24*time.Hour)), ptr(now.Add(72*time.Hour))
		b.Ops = append(b.Ops, op)
	}
	return s.apply(b)
}

// grant reads a stored grant; ok is false when the locker holds nothing of it.
func (s *safetyRig) grant(id string) (g store.Grant, ok bool) {
	s.t.Helper()
	err := s.st.View(s.ctx, func(tx *store.Tx) error {
		var err error
		g, err = tx.Grant(id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return g, false
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return g, true
}

// live returns the ids of the live grants that carry code (what the keypad
// finds when it is typed).
func (s *safetyRig) live(code string) []string {
	s.t.Helper()
	var ids []string
	err := s.st.View(s.ctx, func(tx *store.Tx) error {
		gs, err := tx.GrantsByCode(hash(code))
		for _, g := range gs {
			ids = append(ids, g.ID)
		}
		return err
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return ids
}

// rejection is the ack's error for grant id, "" when it was not rejected.
func rejection(ack wire.GrantsAck, id string) string {
	for _, rj := range ack.Rejected {
		if rj.GrantID == id {
			return rj.Error
		}
	}
	return ""
}

// deposit is a deposit grant for compartment n whose nested pickup grant
// (id+"-p") has code pcode.
func deposit(id string, version int64, code string, n int, pcode string) wire.GrantOp {
	op := depositOp(id, version, code, "", n)
	op.Pickup.CodeHash = hash(pcode)
	return op
}

// pickupOp is a pickup grant for the parcel of deposit grant dep in compartment n.
func pickupOp(id string, version int64, code string, n int, dep string) wire.GrantOp {
	return wire.GrantOp{Op: "put", GrantID: id, Version: version, Action: "pickup", Compartment: n, ParcelID: "JT" + dep,
		Holder: "13499996666", CodeHash: hash(code), ValidUntil: ptr(t0.Add(72 * time.Hour))}
}

// depositParcel types a deposit code and puts a parcel into the door it opens.
func (s *safetyRig) depositParcel(code string) (n int) {
	s.t.Helper()
	before := len(s.cab.Releases())
	s.keys(code + "#")
	rel := s.cab.Releases()
	if len(rel) == before {
		return 0
	}
	n = rel[len(rel)-1]
	s.door(n, true)
	s.parcel(n, true)
	s.door(n, false)
	return n
}

// Hole 1: a code is unique across every grant that is or can come into
// force, the pickup grants nested in deposit grants not yet deposited
// included.
func TestNestedPickupCodeCollisions(t *testing.T) {
	const x = "7777777" // the contested code
	cases := []struct {
		name  string
		setup []wire.GrantOp
		ended bool // the clock passes the setup's deposit grant's valid_until before the op
		op    wire.GrantOp
		want  string // the ack's error; "" when applied
	}{
		{"a deposit nesting a pending pickup's code",
			[]wire.GrantOp{deposit("d1", 1, "111111", 1, x)}, false,
			deposit("d2", 1, "222222", 2, x), "pickup.code_hash in use by another grant"},
		{"a deposit whose code is a pending pickup's",
			[]wire.GrantOp{deposit("d1", 1, "111111", 1, x)}, false,
			deposit("d2", 1, x, 2, "2222229"), "code_hash in use by another grant"},
		{"a pickup whose code is a pending pickup's",
			[]wire.GrantOp{deposit("d1", 1, "111111", 1, x)}, false,
			pickupOp("p2", 1, x, 2, "d2"), "code_hash in use by another grant"},
		{"a deposit nesting a grant's code",
			[]wire.GrantOp{pickupOp("p2", 1, x, 2, "d2")}, false,
			deposit("d1", 1, "111111", 1, x), "pickup.code_hash in use by another grant"},
		{"the deposit grant again, newer, the same nested code",
			[]wire.GrantOp{deposit("d1", 1, "111111", 1, x)}, false,
			deposit("d1", 2, "111112", 1, x), ""},
		{"the nested pickup grant itself, with its code",
			[]wire.GrantOp{deposit("d1", 1, "111111", 1, x)}, false,
			pickupOp("d1-p", 2, x, 1, "d1"), ""},
		{"the code of a pending pickup whose deposit grant was revoked",
			[]wire.GrantOp{deposit("d1", 1, "111111", 1, x), {Op: "revoke", GrantID: "d1", Version: 2}}, false,
			deposit("d2", 1, "222222", 2, x), ""},
		{"the code of a pending pickup whose deposit grant ended",
			[]wire.GrantOp{deposit("d1", 1, "111111", 1, x)}, true,
			func() wire.GrantOp {
				op := deposit("d2", 1, "222222", 2, x)
				op.ValidUntil = ptr(t0.Add(48 * time.Hour))
				return op
			}(), ""},
	}
	for _, p := range viewPaths {
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				s := newSafetyRig(t)
				if ack := s.send(false, false, t0, tc.setup...); len(ack.Rejected) != 0 {
					t.Fatalf("setup ack = %+v", ack)
				}
				if tc.ended {
					s.clock.Advance(25 * time.Hour)
				}
				ack := s.send(p.big, false, t0.Add(time.Minute), tc.op)
				if got := rejection(ack, tc.op.GrantID); got != tc.want {
					t.Fatalf("%s: ack error %q, want %q", tc.op.GrantID, got, tc.want)
				}
				if len(ack.Rejected) > 1 {
					t.Fatalf("%d other ops rejected, the first: %+v", len(ack.Rejected)-1, ack.Rejected[:2])
				}
			})
		}
	}
}

// Two ops of one envelope that carry one code: the second is rejected, on
// every path (small envelope, large envelope, snapshot).
func TestNestedPickupCodeCollisionsInOneEnvelope(t *testing.T) {
	const x = "7777777"
	cases := []struct {
		name     string
		ops      []wire.GrantOp
		rejected string
		err      string
	}{
		{"two deposits nesting one code",
			[]wire.GrantOp{deposit("d1", 1, "111111", 1, x), deposit("d2", 1, "222222", 2, x)},
			"d2", "pickup.code_hash in use by another grant"},
		{"a put carrying the nested code of an earlier op",
			[]wire.GrantOp{deposit("d1", 1, "111111", 1, x), deposit("d2", 1, x, 2, "2222229")},
			"d2", "code_hash in use by another grant"},
		{"a deposit nesting the code of an earlier op",
			[]wire.GrantOp{deposit("d2", 1, x, 2, "2222229"), deposit("d1", 1, "111111", 1, x)},
			"d1", "pickup.code_hash in use by another grant"},
	}
	paths := []struct {
		name          string
		big, snapshot bool
	}{{"dbView", false, false}, {"memView", true, false}, {"snapshot", false, true}}
	for _, p := range paths {
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				s := newSafetyRig(t)
				ack := s.send(p.big, p.snapshot, t0, tc.ops...)
				if len(ack.Rejected) != 1 || rejection(ack, tc.rejected) != tc.err {
					t.Fatalf("ack rejected %+v, want only %s: %q", ack.Rejected, tc.rejected, tc.err)
				}
			})
		}
	}
}

// The consequence of hole 1 end to end: two deposits whose recipients
// were given one code. The second grant is rejected, so after both
// deposits were tried one grant only carries the code, and it opens the
// first recipient's compartment for the first recipient only.
func TestCollidingNestedPickupOpensNoOtherCompartment(t *testing.T) {
	const x = "7777777"
	for _, p := range viewPaths {
		t.Run(p.name, func(t *testing.T) {
			s := newSafetyRig(t)
			s.send(false, false, t0, deposit("d1", 1, "111111", 1, x))
			ack := s.send(p.big, false, t0.Add(time.Minute), deposit("d2", 1, "222222", 2, x))
			if got := rejection(ack, "d2"); got != "pickup.code_hash in use by another grant" {
				t.Errorf("d2 with d1's nested pickup code: ack error %q", got)
			}
			if n := s.depositParcel("111111"); n != 1 {
				t.Fatalf("d1's deposit opened %d", n)
			}
			s.depositParcel("222222") // rejected: opens nothing
			if ids := s.live(x); len(ids) != 1 || ids[0] != "d1-p" {
				t.Errorf("grants in force with the recipients' code: %v, want [d1-p]", ids)
			}
			if s.state(2) == "occupied" {
				t.Errorf("the rejected deposit grant took a parcel into compartment 2")
			}
			before := len(s.cab.Releases())
			s.keys(x + "#")
			if rel := s.cab.Releases(); len(rel) != before+1 || rel[before] != 1 {
				t.Fatalf("the recipients' code released %v, want compartment 1", rel[before:])
			}
			s.types()
			s.door(1, true)
			s.parcel(1, false)
			s.door(1, false)
			s.expectTypes("door_opened", "door_closed", "picked_up")
		})
	}
}

// The other consequence of hole 1: a put whose code equals a pending nested
// pickup's code would send the recipient, after the deposit, into that
// put's deposit flow. It is rejected; the recipient's code picks up.
func TestPutWithAPendingPickupCodeIsRejected(t *testing.T) {
	const x = "7777777"
	for _, p := range viewPaths {
		t.Run(p.name, func(t *testing.T) {
			s := newSafetyRig(t)
			s.send(false, false, t0, deposit("d1", 1, "111111", 1, x))
			ack := s.send(p.big, false, t0.Add(time.Minute), deposit("g", 1, x, 2, "2222229"))
			if got := rejection(ack, "g"); got != "code_hash in use by another grant" {
				t.Errorf("a deposit grant with d1's nested pickup code: ack error %q", got)
			}
			if n := s.depositParcel("111111"); n != 1 {
				t.Fatalf("d1's deposit opened %d", n)
			}
			s.types()
			before := len(s.cab.Releases())
			s.keys(x + "#")
			if rel := s.cab.Releases(); len(rel) != before+1 || rel[before] != 1 {
				t.Fatalf("the recipient's code released %v, want compartment 1", rel[before:])
			}
			s.door(1, true)
			s.parcel(1, false)
			s.door(1, false)
			s.mu.Lock()
			last := s.traces[len(s.traces)-1]
			s.mu.Unlock()
			if last.Type != "picked_up" || last.GrantID != "d1-p" {
				t.Fatalf("the recipient's code ended in %s of %s, want picked_up of d1-p", last.Type, last.GrantID)
			}
		})
	}
}

// Hole 2: the same snapshot delivered again (the central's resend) revokes
// nothing that a newer envelope put.
func TestSnapshotDeliveredAgainRevokesNothingNewer(t *testing.T) {
	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	for _, p := range viewPaths {
		t.Run(p.name, func(t *testing.T) {
			s := newSafetyRig(t)
			snap := []wire.GrantOp{depositOp("g-1", 1, "111111", "M", 0)}
			if ack := s.send(false, true, t1, snap...); ack.Applied != 1 {
				t.Fatalf("snapshot ack = %+v", ack)
			}
			if ack := s.send(p.big, false, t2, depositOp("g-2", 1, "222222", "M", 0)); rejection(ack, "g-2") != "" {
				t.Fatalf("put ack = %+v", ack)
			}
			if g, _ := s.grant("g-2"); !g.IssuedAt.Equal(t2) {
				t.Fatalf("g-2 stored with issued_at %v, want the envelope's %v", g.IssuedAt, t2)
			}
			if ack := s.send(false, true, t1, snap...); ack.Applied != 0 || ack.Stale != 1 {
				t.Fatalf("snapshot again: ack = %+v, want all stale", ack)
			}
			if g, ok := s.grant("g-2"); !ok || g.Revoked {
				t.Fatalf("the snapshot delivered again revoked g-2 (put after it): %+v", g)
			}
			if g, _ := s.grant("g-1"); g.Revoked || !g.IssuedAt.Equal(t1) {
				t.Fatalf("g-1 = %+v", g)
			}
			s.keys("222222#")
			if len(s.cab.Releases()) != 1 {
				t.Fatal("g-2's code opens nothing")
			}
		})
	}
}

// Hole 2, reordered: a snapshot delivered after a newer put revokes the
// grants put before it only, and a newer snapshot still revokes.
func TestOlderSnapshotAfterNewerPut(t *testing.T) {
	t1, t2, t3 := t0.Add(time.Minute), t0.Add(2*time.Minute), t0.Add(3*time.Minute)
	for _, p := range viewPaths {
		t.Run(p.name, func(t *testing.T) {
			s := newSafetyRig(t)
			s.send(false, false, t0, depositOp("g-0", 1, "100000", "M", 0))
			s.send(p.big, false, t2, depositOp("g-2", 1, "222222", "M", 0))
			old := []wire.GrantOp{depositOp("g-1", 1, "111111", "M", 0)}
			if ack := s.send(false, true, t1, old...); ack.Applied != 1 {
				t.Fatalf("late snapshot ack = %+v", ack)
			}
			if g, _ := s.grant("g-2"); g.Revoked {
				t.Fatal("a snapshot issued before g-2's put revoked it")
			}
			if g, _ := s.grant("g-0"); !g.Revoked || !g.IssuedAt.Equal(t1) {
				t.Fatalf("g-0, put before the snapshot and not named in it: %+v, want revoked at %v", g, t1)
			}
			// A newer snapshot that leaves g-2 out revokes it.
			s.send(false, true, t3, old...)
			if g, _ := s.grant("g-2"); !g.Revoked || !g.IssuedAt.Equal(t3) {
				t.Fatalf("g-2 left out of a newer snapshot: %+v", g)
			}
			// The older snapshot once more: stale, nothing comes back or goes.
			if ack := s.send(false, true, t1, old...); ack.Applied != 0 || ack.Stale != 1 {
				t.Fatalf("older snapshot again: ack = %+v", ack)
			}
			if g, _ := s.grant("g-1"); g.Revoked {
				t.Fatal("an older snapshot revoked a grant named in the newest one")
			}
			s.keys("222222#")
			s.keys("100000#")
			if len(s.cab.Releases()) != 0 {
				t.Fatal("a revoked grant opened a door")
			}
		})
	}
}

// Hole 2, the other way round: an envelope issued before the newest
// snapshot applied is superseded by it (the snapshot was the central's
// whole state at its issued_at): its ops are stale.
func TestEnvelopeOlderThanNewestSnapshotIsStale(t *testing.T) {
	t1, t2, t3 := t0.Add(time.Minute), t0.Add(2*time.Minute), t0.Add(3*time.Minute)
	for _, p := range viewPaths {
		t.Run(p.name, func(t *testing.T) {
			s := newSafetyRig(t)
			s.send(false, false, t0, depositOp("g-0", 1, "100000", "M", 0))
			s.send(false, true, t2, depositOp("g-1", 1, "111111", "M", 0)) // revokes g-0
			late := []wire.GrantOp{
				depositOp("g-3", 1, "333333", "M", 0),      // left out of the snapshot
				depositOp("g-0", 2, "100000", "M", 0),      // revoked by it
				{Op: "revoke", GrantID: "g-1", Version: 2}, // named in it
			}
			ack := s.send(p.big, false, t1, late...)
			if ack.Applied != 0 || len(ack.Rejected) != 0 || ack.Stale < len(late) {
				t.Fatalf("an envelope older than the snapshot: ack applied %d stale %d rejected %v",
					ack.Applied, ack.Stale, ack.Rejected)
			}
			if _, ok := s.grant("g-3"); ok {
				t.Fatal("g-3 stored from an envelope the snapshot superseded")
			}
			if g, _ := s.grant("g-0"); !g.Revoked {
				t.Fatal("g-0 came back from an envelope the snapshot superseded")
			}
			if g, _ := s.grant("g-1"); g.Revoked {
				t.Fatal("g-1 revoked by an envelope the snapshot superseded")
			}
			// Newer than the snapshot: applied, issued_at recorded on puts and revokes.
			ack = s.send(false, false, t3, depositOp("g-3", 1, "333333", "M", 0),
				wire.GrantOp{Op: "revoke", GrantID: "g-1", Version: 2})
			if ack.Applied != 2 {
				t.Fatalf("newer envelope: ack = %+v", ack)
			}
			if g, _ := s.grant("g-1"); !g.Revoked || !g.IssuedAt.Equal(t3) || g.Version != 2 {
				t.Fatalf("g-1 tombstone = %+v", g)
			}
			s.keys("333333#")
			if len(s.cab.Releases()) != 1 {
				t.Fatal("g-3 does not open")
			}
		})
	}
}

// Hole 3: no op (nor nested pickup) with a time before 2000 is stored: the
// zero time would read back as "no end".
func TestZeroAndEarlyTimesAreRejected(t *testing.T) {
	zero, y1999, y1998 := time.Time{}, time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC), time.Date(1998, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		set  func(op *wire.GrantOp)
		want string
	}{
		{"valid_until zero after a valid_from in year 0", func(op *wire.GrantOp) {
			op.ValidFrom, op.ValidUntil = ptr(zero.Add(-time.Hour)), ptr(zero)
		}, "valid_from"},
		{"valid_until in 1999", func(op *wire.GrantOp) { op.ValidFrom, op.ValidUntil = ptr(y1998), ptr(y1999) }, "valid_from"},
		{"valid_from zero", func(op *wire.GrantOp) { op.ValidFrom = ptr(zero) }, "valid_from"},
		{"valid_from 1970", func(op *wire.GrantOp) { op.ValidFrom = ptr(time.Unix(0, 0).UTC()) }, "valid_from"},
		{"pickup.valid_until zero", func(op *wire.GrantOp) { op.Pickup.ValidUntil = ptr(zero) }, "pickup.valid_until"},
		{"pickup.valid_until in 1999", func(op *wire.GrantOp) { op.Pickup.ValidUntil = ptr(y1999) }, "pickup.valid_until"},
		{"pickup.valid_from zero", func(op *wire.GrantOp) { op.Pickup.ValidFrom = ptr(zero) }, "pickup.valid_from"},
		{"pickup.valid_until before pickup.valid_from", func(op *wire.GrantOp) {
			op.Pickup.ValidFrom = ptr(t0.Add(100 * time.Hour))
		}, "pickup.valid_until"},
	}
	for _, p := range viewPaths {
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				s := newSafetyRig(t)
				op := depositOp("d1", 1, "111111", "", 1)
				tc.set(&op)
				ack := s.send(p.big, false, t0, op)
				if got := rejection(ack, "d1"); !strings.HasPrefix(got, tc.want+" ") {
					t.Fatalf("ack error %q, want one about %s", got, tc.want)
				}
				if _, ok := s.grant("d1"); ok {
					t.Fatal("the grant was stored")
				}
			})
		}
	}
}

// The consequence of hole 3 end to end: a nested pickup sent with the zero
// valid_until would come into force at deposit with no end.
func TestNestedPickupWithoutAnEndNeverComesIntoForce(t *testing.T) {
	s := newSafetyRig(t)
	op := deposit("d1", 1, "111111", 1, "7777777")
	op.Pickup.ValidUntil = ptr(time.Time{})
	if got := rejection(s.send(false, false, t0, op), "d1"); got == "" {
		t.Error("a nested pickup with the zero valid_until was accepted")
	}
	s.depositParcel("111111")
	if g, ok := s.grant("d1-p"); ok {
		t.Fatalf("a pickup grant came into force with valid_until %v", g.ValidUntil)
	}
}

// A pickup brought into force by a deposit carries its deposit grant's
// issued_at: a snapshot older than that deposit grant, delivered late,
// leaves the recipient's code working.
func TestLateSnapshotKeepsThePickupOfANewerDeposit(t *testing.T) {
	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	s := newSafetyRig(t)
	s.send(false, false, t2, deposit("d1", 1, "111111", 1, "7777777"))
	if n := s.depositParcel("111111"); n != 1 {
		t.Fatalf("deposit opened %d", n)
	}
	if g, ok := s.grant("d1-p"); !ok || !g.IssuedAt.Equal(t2) {
		t.Fatalf("the pickup brought into force: %+v, want issued_at %v", g, t2)
	}
	s.send(false, true, t1, depositOp("g-1", 1, "222222", "M", 0))
	if g, _ := s.grant("d1-p"); g.Revoked {
		t.Fatal("a snapshot older than the deposit grant revoked its pickup")
	}
	before := len(s.cab.Releases())
	s.keys("7777777#")
	if rel := s.cab.Releases(); len(rel) != before+1 || rel[before] != 1 {
		t.Fatalf("the recipient's code released %v", rel[before:])
	}
}
