package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/openlocker/locker/controller/wire"
)

// Central plays the central server for a technician at the web page: it
// signs grants and commands (with the development key, in locker-sim) and
// publishes them to the locker, as lockerctl does.
type Central interface {
	// SendGrants signs body as a `grants` envelope and publishes it on
	// P/grants. It returns once it is published; the locker's ack comes on
	// P/grants/ack.
	SendGrants(ctx context.Context, body wire.GrantsBody) error
	// SendCommand signs cmd as a `command` envelope and publishes it on
	// P/commands. The result comes on P/commands/result.
	SendCommand(ctx context.Context, cmd wire.Command) error
}

// Limits and defaults of the central forms (docs/simulator-api-extensions.md).
const (
	defaultValidHours = 24
	maxValidHours     = 24 * 366
	pickupExtra       = 48 * time.Hour // a nested pickup grant outlives its deposit grant by this
	grantsLifetime    = time.Hour      // expires_at of a grants envelope
	commandLifetime   = time.Minute    // expires_at of a command envelope
	maxHolder         = 32
	maxParcelID       = 64
	maxReason         = 200
)

// nextID returns an id for a grant (its version too) or a command:
// milliseconds since 1970, bumped to stay above the last one given.
func (s *Server) nextID(now time.Time) int64 {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	s.lastID = max(now.UnixMilli(), s.lastID+1)
	return s.lastID
}

// centralReady answers 503 unless a Central and a daemon (for the locker
// id) are there, and returns the locker id.
func (s *Server) centralReady(w http.ResponseWriter) (string, bool) {
	if s.central == nil {
		writeError(w, http.StatusServiceUnavailable, "no central key")
		return "", false
	}
	if s.daemon == nil {
		writeError(w, http.StatusServiceUnavailable, "no daemon is running")
		return "", false
	}
	return s.daemon.LockerID(), true
}

// handleCentral tells the page whether the central forms work.
func (s *Server) handleCentral(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"available": s.central != nil && s.daemon != nil})
}

// grantRequest is the body of POST /api/central/grants. Codes are typed in
// the clear here and hashed at once; they are never logged nor echoed.
type grantRequest struct {
	Action       string   `json:"action"`
	Size         string   `json:"size"`
	Compartment  int      `json:"compartment"`
	ParcelID     string   `json:"parcel_id"`
	Holder       string   `json:"holder"`
	Code         string   `json:"code"`
	PickupCode   string   `json:"pickup_code"`
	PickupHolder string   `json:"pickup_holder"`
	ValidHours   *float64 `json:"valid_hours"`
}

// grantAnswer is the answer of POST /api/central/grants.
type grantAnswer struct {
	GrantID       string    `json:"grant_id"`
	Version       int64     `json:"version"`
	ValidUntil    time.Time `json:"valid_until"`
	PickupGrantID string    `json:"pickup_grant_id,omitempty"`
	PickupUntil   time.Time `json:"pickup_valid_until,omitzero"`
}

// errForm: a central form field is wrong; the message names the field but
// never holds a code.
var errForm = errors.New("invalid form")

func formError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errForm}, args...)...)
}

// validCode checks a keypad code: 6 to 12 digits.
func validCode(field, code string) error {
	if len(code) < 6 || len(code) > 12 || strings.Trim(code, "0123456789") != "" {
		return formError("%q must be 6 to 12 digits", field)
	}
	return nil
}

// validText checks a short free-text field: printable, at most n characters.
func validText(field, v string, n int) error {
	if len([]rune(v)) > n {
		return formError("%q is longer than %d characters", field, n)
	}
	for _, r := range v {
		if !unicode.IsPrint(r) {
			return formError("%q holds a character that is not printable", field)
		}
	}
	return nil
}

// grantOp checks req and builds its `put` op, with the codes hashed for
// lockerID.
func (s *Server) grantOp(req grantRequest, lockerID string, now time.Time) (wire.GrantOp, error) {
	var op wire.GrantOp
	action := strings.TrimSpace(req.Action)
	size := strings.ToUpper(strings.TrimSpace(req.Size))
	parcel := strings.TrimSpace(req.ParcelID)
	holder := strings.TrimSpace(req.Holder)
	code := strings.TrimSpace(req.Code)
	pickupCode := strings.TrimSpace(req.PickupCode)
	pickupHolder := strings.TrimSpace(req.PickupHolder)

	switch action {
	case "deposit", "pickup", "reclaim", "service":
	default:
		return op, formError(`"action" must be deposit, pickup, reclaim or service`)
	}
	switch size {
	case "", "S", "M", "L", "XL":
	default:
		return op, formError(`"size" must be S, M, L or XL`)
	}
	if req.Compartment != 0 {
		if _, err := s.cab.Compartment(req.Compartment); err != nil {
			return op, formError("no compartment %d", req.Compartment)
		}
	}
	if err := validCode("code", code); err != nil {
		return op, err
	}
	for _, f := range []struct {
		name, v string
		n       int
	}{{"parcel_id", parcel, maxParcelID}, {"holder", holder, maxHolder}, {"pickup_holder", pickupHolder, maxHolder}} {
		if err := validText(f.name, f.v, f.n); err != nil {
			return op, err
		}
	}
	switch {
	case action == "deposit" && req.Compartment == 0 && size == "":
		return op, formError(`a deposit needs "compartment" or "size"`)
	case action == "pickup" && (req.Compartment == 0 || parcel == ""):
		return op, formError(`a pickup needs "compartment" and "parcel_id"`)
	case action == "reclaim" && req.Compartment == 0:
		return op, formError(`a reclaim needs "compartment"`)
	case action != "deposit" && (pickupCode != "" || pickupHolder != ""):
		return op, formError(`"pickup_code" and "pickup_holder" go with a deposit only`)
	case pickupHolder != "" && pickupCode == "":
		return op, formError(`"pickup_holder" needs a "pickup_code"`)
	}
	hours := float64(defaultValidHours)
	if req.ValidHours != nil {
		hours = *req.ValidHours
	}
	if !(hours > 0 && hours <= maxValidHours) {
		return op, formError(`"valid_hours" must be above 0 and at most %d`, maxValidHours)
	}

	id := s.nextID(now)
	from := now
	until := now.Add(time.Duration(hours * float64(time.Hour))).Truncate(time.Millisecond)
	op = wire.GrantOp{Op: "put", GrantID: fmt.Sprintf("g-%d", id), Version: id, Action: action,
		Compartment: req.Compartment, Size: size, ParcelID: parcel, Holder: holder,
		CodeHash: wire.CodeHash(lockerID, code), ValidFrom: &from, ValidUntil: &until}
	if pickupCode != "" {
		if err := validCode("pickup_code", pickupCode); err != nil {
			return op, err
		}
		if pickupCode == code {
			return op, formError(`"pickup_code" must differ from "code"`)
		}
		pu := until.Add(pickupExtra)
		op.Pickup = &wire.PickupSpec{GrantID: op.GrantID + "-p", Holder: pickupHolder,
			CodeHash: wire.CodeHash(lockerID, pickupCode), ValidUntil: &pu}
	}
	return op, nil
}

// handleGrants signs and sends one `put` grant built from the form.
func (s *Server) handleGrants(w http.ResponseWriter, r *http.Request) {
	lockerID, ok := s.centralReady(w)
	if !ok {
		return
	}
	var req grantRequest
	if !decode(w, r, &req) {
		return
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	op, err := s.grantOp(req, lockerID, now)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	body := wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: now,
		ExpiresAt: now.Add(grantsLifetime), Ops: []wire.GrantOp{op}}
	if err := s.central.SendGrants(r.Context(), body); err != nil {
		s.centralError(w, "grants", err)
		return
	}
	ans := grantAnswer{GrantID: op.GrantID, Version: op.Version, ValidUntil: *op.ValidUntil}
	if op.Pickup != nil {
		ans.PickupGrantID, ans.PickupUntil = op.Pickup.GrantID, *op.Pickup.ValidUntil
	}
	s.log.Info("api: central grant sent", "grant_id", op.GrantID, "action", op.Action,
		"compartment", op.Compartment, "size", op.Size, "holder", wire.MaskHolder(op.Holder),
		"pickup", op.Pickup != nil)
	writeJSON(w, http.StatusOK, ans)
}

// handleCommands signs and sends one command built from the form.
func (s *Server) handleCommands(w http.ResponseWriter, r *http.Request) {
	lockerID, ok := s.centralReady(w)
	if !ok {
		return
	}
	var req struct {
		Action      string `json:"action"`
		Compartment int    `json:"compartment"`
		Reason      string `json:"reason"`
	}
	if !decode(w, r, &req) {
		return
	}
	action := strings.TrimSpace(req.Action)
	reason := strings.TrimSpace(req.Reason)
	switch action {
	case "open", "disable", "enable":
	default:
		writeError(w, http.StatusBadRequest, `"action" must be open, disable or enable`)
		return
	}
	if _, err := s.cab.Compartment(req.Compartment); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("no compartment %d", req.Compartment))
		return
	}
	if reason == "" {
		reason = "technician"
	}
	if err := validText("reason", reason, maxReason); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	cmd := wire.Command{Kind: "command", LockerID: lockerID, CommandID: fmt.Sprintf("c-%d", s.nextID(now)),
		IssuedAt: now, ExpiresAt: now.Add(commandLifetime), Action: action, Compartment: req.Compartment, Reason: reason}
	if err := s.central.SendCommand(r.Context(), cmd); err != nil {
		s.centralError(w, "command", err)
		return
	}
	s.log.Info("api: central command sent", "command_id", cmd.CommandID, "action", cmd.Action, "compartment", cmd.Compartment)
	writeJSON(w, http.StatusOK, map[string]string{"command_id": cmd.CommandID})
}

func (s *Server) centralError(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client is gone
	}
	s.log.Warn("api: central: sending "+what, "err", err)
	writeError(w, http.StatusBadGateway, fmt.Sprintf("sending the %s: %v", what, err))
}
