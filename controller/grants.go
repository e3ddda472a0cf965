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
		for _, op := range body.Ops {
			named[op.GrantID] = true
			if op.Pickup != nil {
				named[op.Pickup.GrantID] = true
			}
			stale, err := c.applyOp(tx, op, now)
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
			ids, err := tx.LiveGrantIDs()
			if err != nil {
				return err
			}
			for _, id := range ids {
				if named[id] {
					continue
				}
				g, err := tx.Grant(id)
				if err != nil {
					return err
				}
				if err := tx.Tombstone(id, g.Version); err != nil {
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
func (c *Controller) applyOp(tx *store.Tx, op GrantOp, now time.Time) (stale bool, err error) {
	if !grantIDRE.MatchString(op.GrantID) {
		return false, reject("grant_id missing or malformed")
	}
	if op.Version < 1 {
		return false, reject("version must be 1 or more")
	}
	old, err := tx.Grant(op.GrantID)
	switch {
	case err == nil && op.Version <= old.Version:
		return true, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return false, err
	}
	switch op.Op {
	case "revoke":
		return false, tx.Tombstone(op.GrantID, op.Version)
	case "put":
	default:
		return false, reject("op must be put or revoke")
	}
	g, err := c.grantFromOp(tx, op, now)
	if err != nil {
		return false, err
	}
	return false, tx.PutGrant(g)
}

// grantFromOp validates a put and builds the stored grant.
func (c *Controller) grantFromOp(tx *store.Tx, op GrantOp, now time.Time) (store.Grant, error) {
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
	if err := codeFree(tx, g.CodeHash, g.ID, now); err != nil {
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
		if err := codeFree(tx, p.CodeHash, p.GrantID, now); err != nil {
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
func codeFree(tx *store.Tx, hash, self string, now time.Time) error {
	others, err := tx.GrantsByCode(hash)
	if err != nil {
		return err
	}
	for _, o := range others {
		if o.ID != self && usable(o, now) != errEnded && o.UsesLeft != 0 {
			return reject("code_hash in use by another grant")
		}
	}
	return nil
}
