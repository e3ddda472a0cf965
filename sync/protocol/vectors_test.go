package protocol

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"time"
)

// Shared byte-level test vectors, used by the table tests and as fuzz seeds.

const testLocker = "610091A01"

// testNow is the clock of every vector: between issued_at and expires_at of
// the valid bodies.
var testNow = time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)

func seedKey(b byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = b + byte(i)
	}
	return ed25519.NewKeyFromSeed(seed)
}

var (
	centralKey = seedKey(1)  // known as "central-2026"
	rogueKey   = seedKey(77) // known to nobody
	testKeys   = Keyring{
		"central-2026": centralKey.Public().(ed25519.PublicKey),
		"broken":       ed25519.PublicKey([]byte{1, 2, 3}), // a misconfigured key
	}
)

const grantsBody = `{
  "kind": "grants",
  "locker_id": "610091A01",
  "issued_at": "2026-11-22T10:00:00Z",
  "expires_at": "2026-11-22T11:00:00Z",
  "snapshot": false,
  "ops": [
    {"op": "put", "grant_id": "g-1001", "version": 1, "action": "deposit",
     "size": "M", "parcel_id": "JT3084743373888", "holder": "13488888888",
     "code_hash": "0e1f", "valid_from": "2026-11-22T10:00:00Z",
     "valid_until": "2026-11-23T10:00:00Z", "uses": 1,
     "pickup": {"grant_id": "g-1002", "holder": "13499996666",
                "code_hash": "9a8b", "valid_until": "2026-11-25T10:00:00Z"}},
    {"op": "revoke", "grant_id": "g-0999", "version": 7}
  ]
}`

const commandBody = `{"kind": "command", "locker_id": "610091A01", "command_id": "c-77",
 "issued_at": "2026-11-22T10:00:00Z", "expires_at": "2026-11-22T11:00:00Z",
 "action": "open", "compartment": 7, "reason": "customer service"}`

func mustSeal(keyID string, priv ed25519.PrivateKey, body string) []byte {
	b, err := Seal(keyID, priv, []byte(body))
	if err != nil {
		panic(err)
	}
	return b
}

func b64s(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// openVector is one raw envelope and the error Open must give (nil: accepted).
type openVector struct {
	name string
	raw  []byte
	want error
}

func openVectors() []openVector {
	good := mustSeal("central-2026", centralKey, grantsBody)
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(centralKey, []byte(grantsBody)))
	tampered := []byte(strings.Replace(string(good), `"body":"`, `"body":"A`, 1))
	return []openVector{
		{"grants", good, nil},
		{"command", mustSeal("central-2026", centralKey, commandBody), nil},
		{"empty body signed", mustSeal("central-2026", centralKey, ""), nil},
		{"forged", mustSeal("central-2026", rogueKey, grantsBody), ErrBadSignature},
		{"unknown key", mustSeal("rogue", rogueKey, grantsBody), ErrUnknownKey},
		{"misconfigured key", mustSeal("broken", rogueKey, grantsBody), ErrUnknownKey},
		{"body changed", []byte(`{"key_id":"central-2026","body":"` + b64s(grantsBody+" ") + `","sig":"` + sig + `"}`), ErrBadSignature},
		{"body tampered", tampered, ErrMalformed},
		{"short sig", []byte(`{"key_id":"central-2026","body":"` + b64s(grantsBody) + `","sig":"AAAA"}`), ErrBadSignature},
		{"body not base64", []byte(`{"key_id":"central-2026","body":"%%%","sig":"` + sig + `"}`), ErrMalformed},
		{"body url base64", []byte(`{"key_id":"central-2026","body":"-_-_","sig":"` + sig + `"}`), ErrMalformed},
		{"sig not base64", []byte(`{"key_id":"central-2026","body":"` + b64s(grantsBody) + `","sig":"!!"}`), ErrMalformed},
		{"missing key_id", []byte(`{"body":"` + b64s(grantsBody) + `","sig":"` + sig + `"}`), ErrMalformed},
		{"missing sig", []byte(`{"key_id":"central-2026","body":"` + b64s(grantsBody) + `"}`), ErrMalformed},
		{"sig a number", []byte(`{"key_id":"central-2026","body":"` + b64s(grantsBody) + `","sig":5}`), ErrMalformed},
		{"not JSON", []byte(`hello`), ErrMalformed},
		{"null", []byte(`null`), ErrMalformed},
		{"array", []byte(`[1,2]`), ErrMalformed},
		{"empty", []byte{}, ErrMalformed},
		{"trailing garbage", append(append([]byte{}, good...), '}'), ErrMalformed},
		{"too large", []byte(`{"key_id":"central-2026","body":"` + strings.Repeat("A", MaxEnvelope) + `","sig":""}`), ErrTooLarge},
	}
}

// bodyVector is one (already verified) body and the error a decoder must give.
type bodyVector struct {
	name string
	body string
	want error
}

// withField returns body with the JSON member `key` replaced by `key: value`,
// or removed when value is "".
func withField(body, key, value string) string {
	i := strings.Index(body, `"`+key+`"`)
	if i < 0 {
		panic("no field " + key)
	}
	j := i + len(key) + 2
	for body[j] == ' ' || body[j] == ':' {
		j++
	}
	// the value ends at the next comma or closing brace at depth 0
	depth, k := 0, j
	for ; k < len(body); k++ {
		c := body[k]
		if c == '{' || c == '[' {
			depth++
		} else if c == '}' || c == ']' {
			if depth == 0 {
				break
			}
			depth--
		} else if c == ',' && depth == 0 {
			break
		}
	}
	if value == "" {
		if body[k] == ',' {
			return body[:i] + body[k+1:]
		}
		// the last member: drop the comma before it
		h := strings.LastIndex(body[:i], ",")
		return body[:h] + body[k:]
	}
	return body[:j] + value + body[k:]
}

func grantsVectors() []bodyVector {
	b := grantsBody
	return []bodyVector{
		{"valid", b, nil},
		{"snapshot without ops", `{"kind":"grants","locker_id":"610091A01","issued_at":"2026-11-22T10:00:00Z","expires_at":"2026-11-22T11:00:00Z","snapshot":true}`, nil},
		{"ops null", withField(b, "ops", "null"), nil},
		{"future issued_at", withField(b, "issued_at", `"2027-01-01T00:00:00Z"`), nil},
		{"unknown fields kept out", withField(b, "snapshot", `false, "extension": {"x": 1}`), nil},
		{"bad op is the controller's business", withField(b, "ops", `[{"op":"explode","grant_id":""}]`), nil},
		{"kind command", withField(b, "kind", `"command"`), ErrWrongKind},
		{"kind missing", withField(b, "kind", ""), ErrWrongKind},
		{"other locker", withField(b, "locker_id", `"610091A02"`), ErrWrongLocker},
		{"locker missing", withField(b, "locker_id", ""), ErrWrongLocker},
		{"expired", withField(b, "expires_at", `"2026-11-22T10:29:59Z"`), ErrExpired},
		{"expires now", withField(b, "expires_at", `"2026-11-22T10:30:00Z"`), ErrExpired},
		{"expires_at missing", withField(b, "expires_at", ""), ErrMalformed},
		{"expires_at garbage", withField(b, "expires_at", `"soon"`), ErrMalformed},
		{"expires_at number", withField(b, "expires_at", `1790000000`), ErrMalformed},
		{"issued_at missing", withField(b, "issued_at", ""), ErrMalformed},
		{"issued_at garbage", withField(b, "issued_at", `"yesterday"`), ErrMalformed},
		{"version a string", strings.Replace(b, `"version": 7`, `"version": "7"`, 1), ErrMalformed},
		{"ops an object", withField(b, "ops", `{}`), ErrMalformed},
		{"not JSON", `{"kind":`, ErrMalformed},
		{"null", `null`, ErrMalformed},
		{"array", `[]`, ErrMalformed},
		{"empty", ``, ErrMalformed},
	}
}

func commandVectors() []bodyVector {
	c := commandBody
	return []bodyVector{
		{"valid open", c, nil},
		{"valid disable", withField(c, "action", `"disable"`), nil},
		{"valid enable", withField(c, "action", `"enable"`), nil},
		{"no reason", withField(c, "reason", ""), nil},
		{"kind grants", withField(c, "kind", `"grants"`), ErrWrongKind},
		{"other locker", withField(c, "locker_id", `"x"`), ErrWrongLocker},
		{"expired", withField(c, "expires_at", `"2026-11-22T10:01:00Z"`), ErrExpired},
		{"expires_at missing", withField(c, "expires_at", ""), ErrMalformed},
		{"issued_at missing", withField(c, "issued_at", ""), ErrMalformed},
		{"command_id missing", withField(c, "command_id", ""), ErrBadCommand},
		{"command_id empty", withField(c, "command_id", `""`), ErrBadCommand},
		{"action unknown", withField(c, "action", `"explode"`), ErrBadCommand},
		{"action missing", withField(c, "action", ""), ErrBadCommand},
		{"compartment 0", withField(c, "compartment", `0`), ErrBadCommand},
		{"compartment negative", withField(c, "compartment", `-3`), ErrBadCommand},
		{"compartment missing", withField(c, "compartment", ""), ErrBadCommand},
		{"compartment a string", withField(c, "compartment", `"07"`), ErrMalformed},
		{"not JSON", `nope`, ErrMalformed},
	}
}
