package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/openlocker/locker/controller/store"
)

var (
	codeHashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	grantIDRE  = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
)

// ApplyGrants applies every op of one verified grants body in one
// transaction: after a power cut either all or none are in force.
func (c *Controller) ApplyGrants(ctx context.Context, body *GrantsBody) (GrantsAck, error) {
	var ack GrantsAck
	var err error
	derr := c.do(ctx, func() { ack, err = c.applyGrants(ctx, body) })
	if derr != nil {
		return ack, derr
	}
	return ack, err
}

func (c *Controller) applyGrants(ctx context.Context, body *GrantsBody) (GrantsAck, error) {
	now := c.now()
	var ack GrantsAck
	err := c.update(ctx, func(tx *store.Tx) error {
		ack = GrantsAck{IssuedAt: body.IssuedAt, Rejected: []RejectedGrant{}}
		named := map[string]bool{}
		var view grantView = dbView{tx}
		if len(body.Ops) >= preloadOps || body.Snapshot {
			mv, err := loadMemView(tx, now)
			if err != nil {
				return err
			}
			view = mv
		}
		for _, op := range body.Ops {
			named[op.GrantID] = true
			if op.Pickup != nil {
				named[op.Pickup.GrantID] = true
			}
			stale, err := c.applyOp(tx, view, op, now)
			var bad *opError
			switch {
			case errors.As(err, &bad):
				ack.Rejected = append(ack.Rejected, RejectedGrant{GrantID: op.GrantID, Error: bad.msg})
			case err != nil:
				return err
			case stale:
				ack.Stale++
			default:
				ack.Applied++
			}
		}
		if body.Snapshot {
			for id, m := range view.(*memView).byID {
				if named[id] || m.Revoked {
					continue
				}
				if err := tx.Tombstone(id, m.Version, time.Time{}); err != nil {
					return err
				}
			}
		}
		return c.refreshReservations(tx)
	})
	if err != nil {
		return GrantsAck{}, err
	}
	c.log.Info("grants applied", "issued_at", body.IssuedAt, "snapshot", body.Snapshot,
		"applied", ack.Applied, "stale", ack.Stale, "rejected", len(ack.Rejected))
	return ack, nil
}

// opError is an op that is refused (reported in the ack), as opposed to a
// storage failure (which aborts the whole envelope).
type opError struct{ msg string }

func (e *opError) Error() string { return e.msg }

func reject(format string, args ...any) error { return &opError{fmt.Sprintf(format, args...)} }

// applyOp applies one op inside tx. stale is true when the op's version is
// not newer than what the locker holds.
func (c *Controller) applyOp(tx *store.Tx, view grantView, op GrantOp, now time.Time) (stale bool, err error) {
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
		view.stored(op.GrantID, store.GrantMeta{Version: op.Version, Revoked: true})
		return false, tx.Tombstone(op.GrantID, op.Version, time.Time{})
	case "put":
	default:
		return false, reject("op must be put or revoke")
	}
	g, err := c.grantFromOp(view, op, now)
	if err != nil {
		return false, err
	}
	view.stored(g.ID, store.GrantMeta{Version: g.Version, CodeHash: g.CodeHash, ValidUntil: g.ValidUntil, UsesLeft: g.UsesLeft})
	return false, tx.PutGrant(g)
}

// grantFromOp validates a put and builds the stored grant.
func (c *Controller) grantFromOp(view grantView, op GrantOp, now time.Time) (store.Grant, error) {
	g := store.Grant{ID: op.GrantID, Version: op.Version, Action: op.Action, Compartment: op.Compartment,
		Size: op.Size, ParcelID: op.ParcelID, Actor: MaskHolder(op.Holder), CodeHash: op.CodeHash, UsesLeft: 1}
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
	}
	if op.ValidUntil == nil {
		return g, reject("valid_until missing")
	}
	g.ValidUntil = *op.ValidUntil
	if !g.ValidUntil.After(g.ValidFrom) {
		return g, reject("valid_until must be after valid_from")
	}
	if err := codeFree(view, g.CodeHash, g.ID, now); err != nil {
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
		if err := codeFree(view, p.CodeHash, p.GrantID, now); err != nil {
			return g, err
		}
		spec := pickupSpec{GrantID: p.GrantID, Actor: MaskHolder(p.Holder), CodeHash: p.CodeHash, Uses: 1}
		if p.ValidFrom != nil {
			spec.ValidFrom = *p.ValidFrom
		}
		if p.ValidUntil == nil {
			return g, reject("pickup.valid_until missing")
		}
		spec.ValidUntil = *p.ValidUntil
		if p.Uses != nil {
			if *p.Uses < 1 {
				return g, reject("pickup.uses must be 1 or more")
			}
			spec.Uses = *p.Uses
		}
		b, err := json.Marshal(spec)
		if err != nil {
			return g, err
		}
		g.Pickup = string(b)
	}
	return g, nil
}

// codeFree checks that no other grant in force uses this code hash.
func codeFree(view grantView, hash, self string, now time.Time) error {
	used, err := view.codeInUse(hash, self, now)
	if err != nil {
		return err
	}
	if used {
		return reject("code_hash in use by another grant")
	}
	return nil
}

// preloadOps is the envelope size from which the grants' versions and
// codes are read once rather than looked up per op.
const preloadOps = 256

// grantView is what applying ops needs to know of the stored grants: each
// grant's version, and which codes are in force. dbView asks the database
// per op; memView reads everything once, for large envelopes and
// snapshots, and follows the ops as they are applied.
type grantView interface {
	version(id string) (v int64, found bool, err error)
	codeInUse(hash, self string, now time.Time) (bool, error)
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

func (d dbView) codeInUse(hash, self string, now time.Time) (bool, error) {
	others, err := d.tx.GrantsByCode(hash)
	if err != nil {
		return false, err
	}
	for _, o := range others {
		if o.ID != self && inForce(store.GrantMeta{Revoked: o.Revoked, ValidUntil: o.ValidUntil, UsesLeft: o.UsesLeft}, now) {
			return true, nil
		}
	}
	return false, nil
}

func (dbView) stored(string, store.GrantMeta) {}

// inForce says whether a grant still counts: not revoked, not ended, uses
// left (one not yet valid counts: its code is taken).
func inForce(m store.GrantMeta, now time.Time) bool {
	return !m.Revoked && (m.ValidUntil.IsZero() || now.Before(m.ValidUntil)) && m.UsesLeft != 0
}

type memView struct {
	byID   map[string]store.GrantMeta
	byCode map[string]map[string]bool // code hash → ids of grants that carry it
}

func loadMemView(tx *store.Tx, now time.Time) (*memView, error) {
	all, err := tx.AllGrantMeta()
	if err != nil {
		return nil, err
	}
	v := &memView{byID: all, byCode: map[string]map[string]bool{}}
	for id, m := range all {
		v.index(id, m)
	}
	return v, nil
}

func (v *memView) index(id string, m store.GrantMeta) {
	if m.CodeHash == "" || m.Revoked {
		return
	}
	if v.byCode[m.CodeHash] == nil {
		v.byCode[m.CodeHash] = map[string]bool{}
	}
	v.byCode[m.CodeHash][id] = true
}

func (v *memView) version(id string) (int64, bool, error) {
	m, ok := v.byID[id]
	return m.Version, ok, nil
}

func (v *memView) codeInUse(hash, self string, now time.Time) (bool, error) {
	for id := range v.byCode[hash] {
		if id != self && inForce(v.byID[id], now) {
			return true, nil
		}
	}
	return false, nil
}

func (v *memView) stored(id string, m store.GrantMeta) {
	if old, ok := v.byID[id]; ok && old.CodeHash != "" {
		delete(v.byCode[old.CodeHash], id)
	}
	v.byID[id] = m
	v.index(id, m)
}
