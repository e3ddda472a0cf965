package controller

import (
	"database/sql"
	"encoding/json"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/protocol"
)

// Attacks over years of service (found by an attack; each failed on the code
// before its fix): purges, retention, clocks that jump or are
// not trusted for long. Each test shows a door opening that should not.

// yearsSeal signs body as the central would and returns a function that
// delivers the same signed bytes again, checked as the link checks them
// (signature, then expiry at the controller's time).
func yearsSeal(t *testing.T, body any) (open func() []byte) {
	t.Helper()
	kp, err := protocol.GenerateKeyPair("dev")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	env, err := protocol.Seal("dev", kp.Private, raw)
	if err != nil {
		t.Fatal(err)
	}
	return func() []byte {
		b, _, err := protocol.Open(kp.Keyring(), env)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// deliverGrants delivers a sealed grants envelope as the link does: its
// signature and expiry checked at the controller's time, then applied; a
// refused one gives an empty ack.
func deliverGrants(t *testing.T, r *rig, sealed func() []byte) wire.GrantsAck {
	t.Helper()
	dec, err := protocol.DecodeGrants(sealed(), lockerID, r.c.Now())
	if err != nil {
		return wire.GrantsAck{}
	}
	return r.apply(dec)
}

// putThenRevoke puts deposit grant g-1 (code 123456) at t0 in an envelope
// living 6 days, revokes it an hour later, lets the broker acknowledge
// every trace, and returns the put, sealed, to be delivered again.
func putThenRevoke(t *testing.T, r *rig) (sealedPut func() []byte) {
	t.Helper()
	put := &wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: t0, ExpiresAt: t0.Add(6 * 24 * time.Hour),
		Ops: []wire.GrantOp{depositOp("g-1", 1, "123456", "M", 0)}}
	sealedPut = yearsSeal(t, put)
	if ack := deliverGrants(t, r, sealedPut); ack.Applied != 1 {
		t.Fatalf("put: %+v", ack)
	}
	r.clock.Advance(time.Hour)
	revoke := &wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: r.c.Now(), ExpiresAt: r.c.Now().Add(time.Hour),
		Ops: []wire.GrantOp{{Op: "revoke", GrantID: "g-1", Version: 2}}}
	if ack := deliverGrants(t, r, yearsSeal(t, revoke)); ack.Applied != 1 {
		t.Fatalf("revoke: %+v", ack)
	}
	r.ackAll()
	return sealedPut
}

// openCommand returns a function that delivers, each time it is called,
// the same signed command opening compartment 1, issued at issued and
// living 6 days, as the link does (signature and expiry checked at the
// controller's time, then run).
func openCommand(t *testing.T, r *rig, issued time.Time) (deliver func() wire.CommandResult) {
	cmd := wire.Command{Kind: "command", LockerID: lockerID, CommandID: "c-open-1", IssuedAt: issued,
		ExpiresAt: issued.Add(6 * 24 * time.Hour), Action: "open", Compartment: 1, Reason: "customer service"}
	sealed := yearsSeal(t, cmd)
	return func() wire.CommandResult {
		t.Helper()
		dec, err := protocol.DecodeCommand(sealed(), lockerID, r.c.Now())
		if err != nil {
			return wire.CommandResult{CommandID: cmd.CommandID, Error: err.Error()}
		}
		res, err := r.c.Execute(r.ctx, dec)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
}

// bootUntrusted restarts r on a clock that is not trusted (a board without
// a real-time clock boots in 1970). fresh: as a new locker whose database
// never saw a trusted time (no last trusted time, no purge horizon).
func bootUntrusted(t *testing.T, r *rig, fresh bool) {
	t.Helper()
	r.stop()
	if fresh {
		db, err := sql.Open("sqlite", store.DSN(r.path))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec("DELETE FROM settings WHERE key IN (?, ?, ?)", highWaterKey, estimateKey, horizonKey); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	r.clock.Set(time.Unix(0, 0).UTC())
	r.start()
}

// The estimate of an untrusted clock starts again from the last trusted
// time at every start: a board that ran for days without a network clock
// and then restarted (a watchdog, an upgrade, a power blip) judges codes
// days in the past, and a code that had ended works again (I4, I12: "it
// never goes backwards").
func TestEstimateDoesNotGoBackAtRestart(t *testing.T) {
	r := newRig(t, "M M")
	op := depositOp("g-1", 1, "123456", "M", 0) // valid until t0+24h
	r.apply(body(op))

	// The board boots without a network clock (1970): the estimate is t0.
	r.stop()
	r.clock.Set(time.Unix(0, 0).UTC())
	r.start()
	// Two days pass on the monotonic clock: the grant has ended.
	r.clock.Advance(48 * time.Hour)
	before := r.c.Now()
	r.keys("123456#")
	if n := len(r.cab.Releases()); n != 0 {
		t.Fatalf("an ended deposit code opened a door before the restart: %v", r.cab.Releases())
	}
	// The daemon restarts, still without a network clock.
	r.restart()
	after := r.c.Now()
	r.keys("123456#")
	if after.Before(before) || len(r.cab.Releases()) != 0 {
		t.Fatalf("after a restart on an untrusted clock the estimate went back from %s to %s, and the deposit code "+
			"that ended at %s opened doors %v", wire.FormatTime(before), wire.FormatTime(after),
			wire.FormatTime(*op.ValidUntil), r.cab.Releases())
	}
}

// A command executed on the estimated clock is remembered with the
// estimate's time. A board that was off for three weeks and boots without a
// network clock lags real time by those weeks: when the network clock comes,
// the first purge finds the command id "older than 14 days" and forgets it
// at once, while the very envelope that carried it (issued three weeks
// after the estimate, living 6 days: within the locker's bound) has not
// expired. Delivered again, it opens the door a second time (I1: a signed
// command with a command id never seen before; "a command_id is executed at
// most once").
func TestCommandIDOutlivesItsEnvelope(t *testing.T) {
	for _, fresh := range []bool{false, true} {
		t.Run(map[bool]string{false: "after a trusted time", true: "new locker"}[fresh], func(t *testing.T) {
			commandReplayAfterPurgeOnEstimatedTime(t, fresh)
		})
	}
}

func commandReplayAfterPurgeOnEstimatedTime(t *testing.T, fresh bool) {
	r := newRig(t, "M M")
	r.ackAll()
	bootUntrusted(t, r, fresh) // off for three weeks; boots in 1970

	real := t0.Add(21 * 24 * time.Hour) // the central's (true) time
	deliver := openCommand(t, r, real)
	if res := deliver(); !res.OK {
		t.Fatalf("the command: %+v", res)
	}
	r.door(1, true)
	r.door(1, false)
	r.ackAll() // the link is up: the broker acknowledges every trace

	// NTP answers at last: the clock is true, an hour after the command.
	r.clock.Set(real.Add(time.Hour))
	r.tick()
	r.ackAll()
	r.clock.Advance(PurgeEvery)
	r.tick()

	// The broker (or anyone who recorded it) delivers the command again.
	res := deliver()
	if res.OK || len(r.cab.Releases()) != 1 {
		t.Fatalf("the same signed command, delivered again %s after it ran, gave %+v: doors released %v",
			time.Duration(PurgeEvery+time.Hour).String(), res, r.cab.Releases())
	}
}

// The same for a grant: a deposit grant used up on the estimated clock is
// purged at the first purge on the true clock, and its put envelope — not
// expired — puts it again: its code, used up, opens a second door (I4, I10).
func TestUsedUpGrantOutlivesItsEnvelope(t *testing.T) {
	for _, fresh := range []bool{false, true} {
		t.Run(map[bool]string{false: "after a trusted time", true: "new locker"}[fresh], func(t *testing.T) {
			usedUpGrantBackAfterPurgeOnEstimatedTime(t, fresh)
		})
	}
}

func usedUpGrantBackAfterPurgeOnEstimatedTime(t *testing.T, fresh bool) {
	r := newRig(t, "M M")
	r.ackAll()
	bootUntrusted(t, r, fresh)

	real := t0.Add(21 * 24 * time.Hour)
	op := depositOp("g-1", 1, "123456", "M", 0)
	op.ValidUntil = ptr(real.Add(5 * 24 * time.Hour))
	op.Pickup.ValidUntil = ptr(real.Add(6 * 24 * time.Hour))
	env := &wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: real, ExpiresAt: real.Add(6 * 24 * time.Hour),
		Ops: []wire.GrantOp{op}}
	sealed := yearsSeal(t, env)
	deliver := func() wire.GrantsAck { t.Helper(); return deliverGrants(t, r, sealed) }
	if ack := deliver(); ack.Applied != 1 {
		t.Fatalf("ack = %+v", ack)
	}
	r.deposit("123456", 1) // the grant is used up
	if len(r.cab.Releases()) != 1 {
		t.Fatalf("releases: %v", r.cab.Releases())
	}
	r.ackAll()

	r.clock.Set(real.Add(time.Hour)) // NTP
	r.tick()
	r.ackAll()
	r.clock.Advance(PurgeEvery)
	r.tick()

	ack := deliver()
	r.keys("123456#")
	if len(r.cab.Releases()) != 1 {
		t.Fatalf("the put envelope delivered again after the purge: ack %+v; the used-up deposit code released doors %v",
			ack, r.cab.Releases())
	}
}

// A trusted clock that jumps into the future (a wrong NTP or GPS answer)
// runs the purge with a cutoff in the future: every tombstone goes. Set
// right again, the clock finds the envelope that put a revoked grant still
// fresh, and it puts the grant again: the revoked code opens a door (I4,
// I10; I12: "a clock that jumped into the future and was set right again
// leaves no future behind").
func TestFutureClockPurgesNoTombstone(t *testing.T) {
	r := newRig(t, "M M")
	sealedPut := putThenRevoke(t, r)
	deliver := func(sealed func() []byte) wire.GrantsAck { t.Helper(); return deliverGrants(t, r, sealed) }

	// The clock jumps a year ahead for a while; the traces of that while
	// are acknowledged as usual.
	r.clock.Set(r.clock.Now().Add(365 * 24 * time.Hour))
	r.tick()
	r.ackAll()
	r.clock.Advance(PurgeEvery)
	r.tick()
	r.ackAll()
	// NTP sets it right: two hours after the revoke.
	r.clock.Set(t0.Add(3 * time.Hour))
	r.tick()

	ack := deliver(sealedPut)
	r.keys("123456#")
	if ack.Applied != 0 || len(r.cab.Releases()) != 0 {
		t.Fatalf("the put of a revoked grant delivered again after the clock came back: ack %+v; the revoked code released %v",
			ack, r.cab.Releases())
	}
}

// A lockout is at most LockoutMax (1 h) long. One taken while a trusted
// clock stood a year ahead is kept as an absolute time: set right again,
// the clock leaves the keypad locked for that year, and a valid deposit
// code opens nothing ("up to 1 hour"; I12: a jump into the future and back
// leaves no future behind).
func TestLockoutEndsAfterAClockSetBack(t *testing.T) {
	r := newRig(t, "M M")
	r.apply(body(depositOp("g-1", 1, "123456", "M", 0)))
	r.clock.Advance(365 * 24 * time.Hour) // a wrong NTP answer
	r.keys("000000#000000#000000#000000#000000#")
	r.clock.Set(t0.Add(time.Minute))         // set right again
	r.tick()                                 // the housekeeping tick (every second) that sees it
	r.clock.Advance(time.Hour + time.Minute) // the default LockoutMax, and more
	r.keys("123456#")
	var till time.Time
	if err := r.c.do(r.ctx, func() { till = r.c.lockedTill }); err != nil {
		t.Fatal(err)
	}
	if len(r.cab.Releases()) != 1 {
		t.Fatalf("61m after the clock was set right, the keypad is still locked (until %s): a valid code opened nothing",
			wire.FormatTime(till))
	}
}
