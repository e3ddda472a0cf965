package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
)

var (
	codeHashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	grantIDRE  = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
)

// ApplyGrants applies every op of one verified grants body in one
// transaction: after a power cut either all or none are in force.
func (c *Controller) ApplyGrants(ctx context.Context, body *wire.GrantsBody) (wire.GrantsAck, error) {
	var ack wire.GrantsAck
	var err error
	derr := c.do(ctx, func() { ack, err = c.applyGrants(ctx, body) })
	if derr != nil {
		// The closure may still run (and write ack) after do gave up.
		return wire.GrantsAck{}, derr
	}
	return ack, err
}

func (c *Controller) applyGrants(ctx context.Context, body *wire.GrantsBody) (wire.GrantsAck, error) {
	now := c.now()
	if err := c.envelopeLifetime(body.IssuedAt, body.ExpiresAt); err != nil {
		// No op of an envelope that could outlive the replay horizon is
		// applied: it could name a grant the purge forgot.
		ack := wire.GrantsAck{IssuedAt: body.IssuedAt, Rejected: []wire.RejectedGrant{}}
		for _, op := range body.Ops {
			ack.Rejected = append(ack.Rejected, wire.RejectedGrant{GrantID: op.GrantID, Error: err.Error()})
		}
		c.log.Warn("grants refused", "issued_at", body.IssuedAt, "err", err)
		return ack, nil
	}
	var ack wire.GrantsAck
	var revoked int
	var superseded bool
	err := c.update(ctx, func(tx *store.Tx) error {
		ack = wire.GrantsAck{IssuedAt: body.IssuedAt, Rejected: []wire.RejectedGrant{}}
		revoked, superseded = 0, false
		lastSnap, err := newestSnapshot(tx)
		if err != nil {
			return err
		}
		if body.IssuedAt.Before(lastSnap) {
			// Superseded: the newest snapshot applied was the central's
			// whole state at a later time than this envelope.
			ack.Stale, superseded = len(body.Ops), true
			return nil
		}
		named := map[string]bool{}
		var view grantView = dbView{tx}
		if len(body.Ops) >= preloadOps || body.Snapshot {
			mv, err := loadMemView(tx, now)
			if err != nil {
				return err
			}
			if err := mv.lookUp(body.Ops); err != nil {
				return err
			}
			view = mv
		}
		for _, op := range body.Ops {
			named[op.GrantID] = true
			if op.Pickup != nil {
				named[op.Pickup.GrantID] = true
			}
			stale, err := c.applyOp(tx, view, op, now, body.IssuedAt)
			var bad *opError
			switch {
			case errors.As(err, &bad):
				ack.Rejected = append(ack.Rejected, wire.RejectedGrant{GrantID: op.GrantID, Error: bad.msg})
			case err != nil:
				return err
			case stale:
				ack.Stale++
			default:
				ack.Applied++
			}
		}
		// A snapshot revokes what it does not name, but only what an older
		// envelope put, and only when it is newer than every snapshot
		// applied before: delivered again, or late, it revokes nothing.
		if body.Snapshot && body.IssuedAt.After(lastSnap) {
			for id, m := range view.(*memView).byID {
				if named[id] || m.Revoked || !m.IssuedAt.Before(body.IssuedAt) {
					continue
				}
				if err := tx.Tombstone(id, m.Version, body.IssuedAt); err != nil {
					return err
				}
				revoked++
			}
			if err := tx.SetSetting(snapshotKey, body.IssuedAt.UTC().Format(time.RFC3339Nano)); err != nil {
				return err
			}
		}
		return c.refreshReservations(tx)
	})
	if err != nil {
		return wire.GrantsAck{}, err
	}
	c.log.Info("grants applied", "issued_at", body.IssuedAt, "snapshot", body.Snapshot,
		"applied", ack.Applied, "stale", ack.Stale, "rejected", len(ack.Rejected), "revoked_by_snapshot", revoked,
		"superseded_by_snapshot", superseded)
	return ack, nil
}

// snapshotKey is the setting that keeps the issued_at of the newest
// snapshot applied.
const snapshotKey = "grants.snapshot_issued_at"

// newestSnapshot is the issued_at of the newest snapshot applied; the zero
// time when none was.
func newestSnapshot(tx *store.Tx) (time.Time, error) {
	v, ok, err := tx.Setting(snapshotKey)
	if err != nil || !ok {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("setting %s: %w", snapshotKey, err)
	}
	return t, nil
}

// opError is an op that is refused (reported in the ack), as opposed to a
// storage failure (which aborts the whole envelope).
type opError struct{ msg string }

func (e *opError) Error() string { return e.msg }

func reject(format string, args ...any) error { return &opError{fmt.Sprintf(format, args...)} }

// applyOp applies one op of an envelope issued at issued inside tx. stale is
// true when the op's version is not newer than what the locker holds.
func (c *Controller) applyOp(tx *store.Tx, view grantView, op wire.GrantOp, now, issued time.Time) (stale bool, err error) {
	if !grantIDRE.MatchString(op.GrantID) {
		return false, reject("grant_id missing or malformed")
	}
	if op.Version < 1 {
		return false, reject("version must be 1 or more")
	}
	old, found, err := view.version(op.GrantID)
	switch {
	case err != nil:
		return false, err
	case found && op.Version <= old:
		return true, nil
	}
	switch op.Op {
	case "revoke":
		view.stored(op.GrantID, store.GrantMeta{Version: op.Version, Revoked: true, IssuedAt: issued})
		return false, tx.Tombstone(op.GrantID, op.Version, issued)
	case "put":
	default:
		return false, reject("op must be put or revoke")
	}
	g, err := c.grantFromOp(view, op, now)
	if err != nil {
		return false, err
	}
	g.IssuedAt = issued
	if g.Action == "reclaim" && g.ParcelID == "" {
		// A reclaim that names no parcel is for the parcel in its
		// compartment now, or else for the next one deposited there
		// (bound then: BindReclaims): never for whatever parcel comes
		// later (one for parcel A, picked up, opened parcel B's door).
		// Put again (a higher version), it keeps the binding it has:
		// re-bound on an empty compartment, it went to the next parcel.
		if old, err := tx.Grant(g.ID); err == nil && !old.Revoked && old.Action == "reclaim" && old.Compartment == g.Compartment {
			g.ParcelSeq = old.ParcelSeq
		} else if sc, err := tx.Compartment(g.Compartment); err == nil && sc.State.HoldsParcel() {
			g.ParcelSeq = sc.ParcelSeq
		}
	}
	view.stored(g.ID, store.GrantMeta{Version: g.Version, CodeHash: g.CodeHash, ValidUntil: g.ValidUntil, UsesLeft: g.UsesLeft,
		PickupID: g.PickupID, PickupCode: g.PickupCode, IssuedAt: issued})
	return false, tx.PutGrant(g)
}

// earliest is the earliest time a grant may name. The zero time is stored
// as "no end" (and as "no start"), and a time before it is a default or a
// board's clock (1970), never one the central meant: such ops are refused
// rather than stored as valid for ever.
var earliest = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// checkTime refuses a time before earliest; name is the field.
func checkTime(name string, t time.Time) error {
	if t.Before(earliest) {
		return reject("%s must be 2000-01-01 or later", name)
	}
	return nil
}

// grantFromOp validates a put and builds the stored grant.
func (c *Controller) grantFromOp(view grantView, op wire.GrantOp, now time.Time) (store.Grant, error) {
	g := store.Grant{ID: op.GrantID, Version: op.Version, Action: op.Action, Compartment: op.Compartment,
		Size: op.Size, ParcelID: op.ParcelID, Actor: wire.MaskHolder(op.Holder), CodeHash: op.CodeHash, UsesLeft: 1}
	switch op.Action {
	case "deposit":
		if op.Compartment == 0 && op.Size == "" {
			return g, reject("deposit needs compartment or size")
		}
	case "pickup":
		if op.Compartment == 0 || op.ParcelID == "" {
			return g, reject("pickup needs compartment and parcel_id")
		}
	case "reclaim":
		if op.Compartment == 0 {
			return g, reject("reclaim needs compartment")
		}
	case "service":
		g.UsesLeft = -1
	default:
		return g, reject("unknown action %q", op.Action)
	}
	if op.Size != "" && sizeRank[op.Size] == 0 {
		return g, reject("unknown size %q", op.Size)
	}
	if op.Compartment != 0 {
		if _, wired := c.hw[op.Compartment]; !wired {
			return g, reject("no compartment %d in this locker", op.Compartment)
		}
	}
	if !codeHashRE.MatchString(op.CodeHash) {
		return g, reject("code_hash must be 64 lowercase hex digits")
	}
	if op.Uses != nil {
		if *op.Uses < 1 {
			return g, reject("uses must be 1 or more")
		}
		g.UsesLeft = *op.Uses
	}
	g.ValidFrom = now
	if op.ValidFrom != nil {
		g.ValidFrom = *op.ValidFrom
		if err := checkTime("valid_from", g.ValidFrom); err != nil {
			return g, err
		}
	}
	if op.ValidUntil == nil {
		return g, reject("valid_until missing")
	}
	g.ValidUntil = *op.ValidUntil
	if err := checkTime("valid_until", g.ValidUntil); err != nil {
		return g, err
	}
	if !g.ValidUntil.After(g.ValidFrom) {
		return g, reject("valid_until must be after valid_from")
	}
	if err := codeFree(view, "code_hash", g.CodeHash, g.ID, g.ID, now); err != nil {
		return g, err
	}
	if op.Pickup != nil {
		if op.Action != "deposit" {
			return g, reject("only a deposit grant may nest a pickup grant")
		}
		p := op.Pickup
		if !grantIDRE.MatchString(p.GrantID) || p.GrantID == op.GrantID {
			return g, reject("pickup.grant_id missing or malformed")
		}
		if !codeHashRE.MatchString(p.CodeHash) {
			return g, reject("pickup.code_hash must be 64 lowercase hex digits")
		}
		if p.CodeHash == op.CodeHash {
			return g, reject("pickup.code_hash equals the deposit code")
		}
		// Stored packed: the pickup_id and pickup_code columns keep its
		// grant_id and code hash (store.PutGrant).
		spec := pickupSpec{Actor: wire.MaskHolder(p.Holder), Uses: 1}
		if p.ValidFrom != nil {
			spec.ValidFrom = *p.ValidFrom
			if err := checkTime("pickup.valid_from", spec.ValidFrom); err != nil {
				return g, err
			}
		}
		if p.ValidUntil == nil {
			return g, reject("pickup.valid_until missing")
		}
		spec.ValidUntil = *p.ValidUntil
		if err := checkTime("pickup.valid_until", spec.ValidUntil); err != nil {
			return g, err
		}
		if p.ValidFrom != nil && !spec.ValidUntil.After(spec.ValidFrom) {
			return g, reject("pickup.valid_until must be after pickup.valid_from")
		}
		if p.Uses != nil {
			if *p.Uses < 1 {
				return g, reject("pickup.uses must be 1 or more")
			}
			spec.Uses = *p.Uses
		}
		if err := codeFree(view, "pickup.code_hash", p.CodeHash, g.ID, p.GrantID, now); err != nil {
			return g, err
		}
		b, err := json.Marshal(spec)
		if err != nil {
			return g, err
		}
		g.Pickup, g.PickupID, g.PickupCode = string(b), p.GrantID, p.CodeHash
	}
	return g, nil
}

// A code is carried by a grant in force (its own code), and by the pickup
// grant nested in a deposit grant in force (the pickup's code: it comes
// into force when the parcel is deposited). A codeRef is one such carrier:
// the grant row it is stored in, and the grant that would open with it
// (the row itself, or its nested pickup grant).
type codeRef struct {
	row   string // grant_id of the stored row
	owner string // grant_id of the grant the code opens: row, or row's nested pickup
}

// taken says whether ref makes the code unavailable to the op putting row
// (its own code, or nesting owner's): a carrier stored in the row the op
// replaces, or carried for the same grant_id, does not; any other does
// while the row holding it is in force.
func (ref codeRef) taken(m store.GrantMeta, row, owner string, now time.Time) bool {
	return ref.row != row && ref.owner != owner && inForce(m, now)
}

// codeFree checks that no grant in force, nor any pickup nested in one,
// carries this code hash, other than the row being replaced and the grant
// the code is for. field names the op's field for the ack's error.
func codeFree(view grantView, field, hash, row, owner string, now time.Time) error {
	used, err := view.codeInUse(hash, row, owner, now)
	if err != nil {
		return err
	}
	if used {
		return reject("%s in use by another grant", field)
	}
	return nil
}

// preloadOps is the envelope size from which the grants' versions and
// codes are read once rather than looked up per op.
const preloadOps = 256

// grantView is what applying ops needs to know of the stored grants: each
// grant's version, and which codes are taken (codeRef). dbView asks the
// database per op; memView reads everything once, for large envelopes and
// snapshots, and follows the ops as they are applied.
type grantView interface {
	version(id string) (v int64, found bool, err error)
	// codeInUse says whether a carrier of hash other than row (the grant
	// being put) and owner (the grant the code is for) is in force.
	codeInUse(hash, row, owner string, now time.Time) (bool, error)
	stored(id string, m store.GrantMeta)
}

type dbView struct{ tx *store.Tx }

func (d dbView) version(id string) (int64, bool, error) {
	g, err := d.tx.Grant(id)
	if errors.Is(err, store.ErrNotFound) {
		return 0, false, nil
	}
	return g.Version, err == nil, err
}

func (d dbView) codeInUse(hash, row, owner string, now time.Time) (bool, error) {
	own, err := d.tx.GrantsByCode(hash)
	if err != nil {
		return false, err
	}
	for _, o := range own {
		if (codeRef{o.ID, o.ID}).taken(metaOf(o), row, owner, now) {
			return true, nil
		}
	}
	nesting, err := d.tx.GrantsByPickupCode(hash)
	if err != nil {
		return false, err
	}
	for _, o := range nesting {
		if (codeRef{o.ID, o.PickupID}).taken(metaOf(o), row, owner, now) {
			return true, nil
		}
	}
	return false, nil
}

func metaOf(g store.Grant) store.GrantMeta {
	return store.GrantMeta{Version: g.Version, Revoked: g.Revoked, CodeHash: g.CodeHash, ValidUntil: g.ValidUntil,
		UsesLeft: g.UsesLeft, PickupID: g.PickupID, PickupCode: g.PickupCode, IssuedAt: g.IssuedAt}
}

func (dbView) stored(string, store.GrantMeta) {}

// inForce says whether a grant still counts: not revoked, not ended, uses
// left (one not yet valid counts: its code is taken). A grant stored with
// no valid_until (the zero time; none can be put now, but a row of an
// earlier version might have one) counts as never ending: its code stays
// taken rather than being given to a second grant.
func inForce(m store.GrantMeta, now time.Time) bool {
	return !m.Revoked && (m.ValidUntil.IsZero() || now.Before(m.ValidUntil)) && m.UsesLeft != 0
}

// memView holds the live grants (store.LiveGrantMeta: memory as the grants
// in force, not as the rows the purge has yet to delete) and asks tx for
// the version of any other. The grants it leaves out are tombstones and
// grants used up: they carry no code in force, and a snapshot has nothing
// to revoke in them (an older put finds their version all the same).
type memView struct {
	byID   map[string]store.GrantMeta
	byCode map[string][]codeRef // code hash → its carriers
	tx     *store.Tx
	// ended holds the version of each grant that the ops name and byID
	// does not hold (a tombstone or a grant used up), read by lookUp in a
	// few queries; an op's grant in neither is not stored at all. nil
	// until lookUp: then version asks the database.
	ended map[string]int64
}

// lookUp reads the versions of the grants that ops name and the live set
// does not hold, so that version asks no query per op.
func (v *memView) lookUp(ops []wire.GrantOp) error {
	var ids []string
	for _, op := range ops {
		if _, live := v.byID[op.GrantID]; !live {
			ids = append(ids, op.GrantID)
		}
	}
	ended, err := v.tx.GrantVersions(ids)
	if err != nil {
		return err
	}
	v.ended = ended
	return nil
}

func loadMemView(tx *store.Tx, now time.Time) (*memView, error) {
	all, err := tx.LiveGrantMeta()
	if err != nil {
		return nil, err
	}
	v := &memView{byID: all, byCode: make(map[string][]codeRef, 2*len(all)), tx: tx}
	for id, m := range all {
		v.index(id, m)
	}
	return v, nil
}

// index adds the carriers of grant id's codes.
func (v *memView) index(id string, m store.GrantMeta) {
	if m.Revoked {
		return
	}
	if m.CodeHash != "" {
		v.byCode[m.CodeHash] = append(v.byCode[m.CodeHash], codeRef{id, id})
	}
	if m.PickupCode != "" {
		v.byCode[m.PickupCode] = append(v.byCode[m.PickupCode], codeRef{id, m.PickupID})
	}
}

// unindex removes the carriers stored in grant id's row under hash.
func (v *memView) unindex(id, hash string) {
	refs := v.byCode[hash]
	kept := refs[:0]
	for _, r := range refs {
		if r.row != id {
			kept = append(kept, r)
		}
	}
	if len(kept) == 0 {
		delete(v.byCode, hash)
		return
	}
	v.byCode[hash] = kept
}

func (v *memView) version(id string) (int64, bool, error) {
	if m, ok := v.byID[id]; ok {
		return m.Version, true, nil
	}
	if v.ended != nil {
		ver, ok := v.ended[id]
		return ver, ok, nil
	}
	return dbView{v.tx}.version(id)
}

func (v *memView) codeInUse(hash, row, owner string, now time.Time) (bool, error) {
	for _, ref := range v.byCode[hash] {
		if ref.taken(v.byID[ref.row], row, owner, now) {
			return true, nil
		}
	}
	return false, nil
}

func (v *memView) stored(id string, m store.GrantMeta) {
	if old, ok := v.byID[id]; ok {
		if old.CodeHash != "" {
			v.unindex(id, old.CodeHash)
		}
		if old.PickupCode != "" {
			v.unindex(id, old.PickupCode)
		}
	}
	v.byID[id] = m
	v.index(id, m)
}

// envelopeLifetime refuses an envelope that may live longer than
// MaxEnvelopeLifetime: after PurgeAfter the locker forgets the grants and
// command ids that ended, so an envelope still valid by then could bring
// one back.
func (c *Controller) envelopeLifetime(issued, expires time.Time) error {
	if max := MaxEnvelopeLifetime(c.opts.PurgeAfter); expires.Sub(issued) > max {
		return fmt.Errorf("envelope lives %s (expires_at - issued_at), longer than the %s the locker allows",
			expires.Sub(issued).Round(time.Second), max)
	}
	return nil
}
