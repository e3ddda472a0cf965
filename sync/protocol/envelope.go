package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/openlocker/locker/controller/wire"
)

// The errors below are the reasons an envelope is dropped. Their text (and the
// text of errors wrapping them in this package) becomes the `reason` of an
// envelope_rejected trace, so it is short, fixed and never contains anything
// taken from the envelope itself: no key id, no body bytes, no JSON parser
// message (which may quote the input). Check them with errors.Is.
var (
	// ErrTooLarge: the raw envelope is longer than MaxEnvelope; it was not parsed.
	ErrTooLarge = errors.New("envelope too large")
	// ErrMalformed: the envelope or its body is not the JSON the protocol
	// describes (bad JSON, bad base64, a missing or mistyped field).
	ErrMalformed = errors.New("malformed envelope")
	// ErrUnknownKey: the envelope names a key_id the locker does not know, or
	// the configured key for it is unusable.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrBadSignature: the signature does not verify over the body bytes with
	// the named key.
	ErrBadSignature = errors.New("bad signature")
	// ErrWrongKind: the body's kind is not the one expected on this topic.
	ErrWrongKind = errors.New("wrong body kind")
	// ErrWrongLocker: the body's locker_id is not this locker's id.
	ErrWrongLocker = errors.New("envelope for another locker")
	// ErrExpired: the body's expires_at has passed.
	ErrExpired = errors.New("envelope expired")
	// ErrBadCommand: a command body has no command_id, an unknown action or
	// no valid compartment.
	ErrBadCommand = errors.New("invalid command")
)

// MaxEnvelope is the largest raw envelope the locker accepts (512 KiB,
// about 1,700 grants in one snapshot). It is checked before anything is
// parsed; the MQTT link also bounds the bytes waiting in its inbox.
const MaxEnvelope = 512 << 10

// Body kinds.
const (
	KindGrants  = "grants"
	KindCommand = "command"
)

// Command actions.
const (
	ActionOpen    = "open"
	ActionDisable = "disable"
	ActionEnable  = "enable"
)

// Keyring maps a central key_id to its Ed25519 public key. Several keys allow
// key rotation.
type Keyring map[string]ed25519.PublicKey

// envelope is the wire form of a signed envelope.
type envelope struct {
	KeyID string `json:"key_id"`
	Body  string `json:"body"`
	Sig   string `json:"sig"`
}

var b64 = base64.StdEncoding.Strict()

// Open checks a raw signed envelope and returns the exact body bytes that
// were signed and the id of the key that signed them. The signature is
// verified over the decoded body bytes before anything in the body is parsed;
// the body must then be decoded with DecodeGrants or DecodeCommand.
//
// Errors wrap ErrTooLarge, ErrMalformed, ErrUnknownKey or ErrBadSignature.
func Open(keys Keyring, raw []byte) (body []byte, keyID string, err error) {
	if len(raw) > MaxEnvelope {
		return nil, "", ErrTooLarge
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil || !isObject(raw) {
		return nil, "", fmt.Errorf("%w: not a JSON envelope", ErrMalformed)
	}
	if env.KeyID == "" {
		return nil, "", fmt.Errorf("%w: missing key_id", ErrMalformed)
	}
	if env.Sig == "" {
		return nil, "", fmt.Errorf("%w: missing sig", ErrMalformed)
	}
	body, err = b64.DecodeString(env.Body)
	if err != nil {
		return nil, "", fmt.Errorf("%w: body is not base64", ErrMalformed)
	}
	sig, err := b64.DecodeString(env.Sig)
	if err != nil {
		return nil, "", fmt.Errorf("%w: sig is not base64", ErrMalformed)
	}
	pub, ok := keys[env.KeyID]
	if !ok {
		return nil, "", ErrUnknownKey
	}
	// ed25519.Verify panics on a public key of the wrong length.
	if len(pub) != ed25519.PublicKeySize {
		return nil, "", fmt.Errorf("%w: configured key is invalid", ErrUnknownKey)
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, body, sig) {
		return nil, "", ErrBadSignature
	}
	return body, env.KeyID, nil
}

// Seal signs body with priv and returns the envelope as the central server
// sends it. The locker itself never seals; Seal serves the central's tools,
// the simulator and tests.
func Seal(keyID string, priv ed25519.PrivateKey, body []byte) ([]byte, error) {
	if keyID == "" {
		return nil, errors.New("protocol: empty key id")
	}
	if len(priv) != ed25519.PrivateKeySize {
		return nil, errors.New("protocol: private key must be 64 bytes")
	}
	return json.Marshal(envelope{
		KeyID: keyID,
		Body:  base64.StdEncoding.EncodeToString(body),
		Sig:   base64.StdEncoding.EncodeToString(ed25519.Sign(priv, body)),
	})
}

// isObject reports whether the JSON text starts with '{' (json.Unmarshal
// accepts `null` into a struct without complaint).
func isObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// header is what both body kinds share.
type header struct {
	Kind      string `json:"kind"`
	LockerID  string `json:"locker_id"`
	IssuedAt  string `json:"issued_at"`
	ExpiresAt string `json:"expires_at"`
}

// checkHeader checks kind, locker and times; it returns ErrMalformed,
// ErrWrongKind, ErrWrongLocker or ErrExpired.
func checkHeader(body []byte, kind, lockerID string, now time.Time) error {
	var h header
	if !isObject(body) || json.Unmarshal(body, &h) != nil {
		return fmt.Errorf("%w: body is not a JSON object of the expected form", ErrMalformed)
	}
	if h.Kind != kind {
		return ErrWrongKind
	}
	if h.LockerID != lockerID {
		return ErrWrongLocker
	}
	if h.IssuedAt == "" {
		return fmt.Errorf("%w: missing issued_at", ErrMalformed)
	}
	if _, err := time.Parse(time.RFC3339Nano, h.IssuedAt); err != nil {
		return fmt.Errorf("%w: bad issued_at", ErrMalformed)
	}
	if h.ExpiresAt == "" {
		return fmt.Errorf("%w: missing expires_at", ErrMalformed)
	}
	exp, err := time.Parse(time.RFC3339Nano, h.ExpiresAt)
	if err != nil {
		return fmt.Errorf("%w: bad expires_at", ErrMalformed)
	}
	// An issued_at in the future is not rejected: a locker whose clock is
	// behind (a board that booted without a network clock) would otherwise
	// refuse everything.
	if !now.Before(exp) {
		return ErrExpired
	}
	return nil
}

// DecodeGrants parses and checks a verified grants body: a JSON object of kind
// "grants" for lockerID, with issued_at, and an expires_at after now. The ops
// themselves are not validated here (the controller accepts or rejects each
// op on its own), but the body must decode with the protocol's types.
//
// Errors wrap ErrMalformed, ErrWrongKind, ErrWrongLocker or ErrExpired.
func DecodeGrants(body []byte, lockerID string, now time.Time) (*wire.GrantsBody, error) {
	if err := checkHeader(body, KindGrants, lockerID, now); err != nil {
		return nil, err
	}
	var g wire.GrantsBody
	if err := json.Unmarshal(body, &g); err != nil {
		return nil, fmt.Errorf("%w: grants body does not match the protocol", ErrMalformed)
	}
	return &g, nil
}

// DecodeCommand parses and checks a verified command body: a JSON object of
// kind "command" for lockerID, with issued_at, an expires_at after now, a
// command_id, an action among open, disable and enable, and a compartment ≥ 1.
//
// Errors wrap ErrMalformed, ErrWrongKind, ErrWrongLocker, ErrExpired or
// ErrBadCommand.
func DecodeCommand(body []byte, lockerID string, now time.Time) (*wire.Command, error) {
	if err := checkHeader(body, KindCommand, lockerID, now); err != nil {
		return nil, err
	}
	var c wire.Command
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("%w: command body does not match the protocol", ErrMalformed)
	}
	if c.CommandID == "" {
		return nil, fmt.Errorf("%w: missing command_id", ErrBadCommand)
	}
	switch c.Action {
	case ActionOpen, ActionDisable, ActionEnable:
	default:
		return nil, fmt.Errorf("%w: unknown action", ErrBadCommand)
	}
	if c.Compartment < 1 {
		return nil, fmt.Errorf("%w: compartment must be 1 or more", ErrBadCommand)
	}
	return &c, nil
}

// CommandID returns the command_id of a command body that failed DecodeCommand
// for a reason other than bad JSON, so that the link can still answer it with
// {ok:false}. It returns "" when the body is not a command for lockerID.
// Call it only on bodies that passed Open.
func CommandID(body []byte, lockerID string) string {
	var c struct {
		Kind      string `json:"kind"`
		LockerID  string `json:"locker_id"`
		CommandID string `json:"command_id"`
	}
	if !isObject(body) || json.Unmarshal(body, &c) != nil {
		return ""
	}
	if c.Kind != KindCommand || c.LockerID != lockerID {
		return ""
	}
	return c.CommandID
}
