package contract_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/openlocker/locker/sync/contract"
)

// fails reports whether err holds a schema violation of the kind of want
// at the instance location at ("/ops/0/code_hash"; "" for the value itself).
func fails(err error, at string, want jsonschema.ErrorKind) bool {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return false
	}
	var found func(*jsonschema.ValidationError) bool
	found = func(e *jsonschema.ValidationError) bool {
		loc := ""
		if len(e.InstanceLocation) > 0 {
			loc = "/" + strings.Join(e.InstanceLocation, "/")
		}
		if loc == at && reflect.TypeOf(e.ErrorKind) == reflect.TypeOf(want) {
			return true
		}
		return slices.ContainsFunc(e.Causes, found)
	}
	// errors.Join (one error per message of a channel) hides all but the
	// first from errors.As: look in each.
	if j, ok := errors.Unwrap(err).(interface{ Unwrap() []error }); ok {
		return slices.ContainsFunc(j.Unwrap(), func(e error) bool { return fails(e, at, want) })
	}
	return found(ve)
}

// mutate returns the JSON object s with field set to v (deleted when v is
// nil).
func mutate(t *testing.T, s, field string, v any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	if v == nil {
		delete(m, field)
	} else {
		m[field] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTheValidatorCatches: each kind of violation the contract's schemas
// can express is caught, at the right place: a missing required field, a
// wrong type, an enum or const violation, an undocumented field where the
// schema is closed, a pattern, a date-time that is not one, a minimum, a
// minLength, and an array item matching none of oneOf.
func TestTheValidatorCatches(t *testing.T) {
	c := load(t)
	if err := c.ValidateSchema("CommandBody", []byte(commandBody)); err != nil {
		t.Fatalf("the valid command: %v", err)
	}
	for _, tc := range []struct {
		name, schema, payload, at string
		want                      jsonschema.ErrorKind
	}{
		{"required", "CommandBody", mutate(t, commandBody, "action", nil), "", &kind.Required{}},
		{"type", "CommandBody", mutate(t, commandBody, "compartment", "7"), "/compartment", &kind.Type{}},
		{"integer", "CommandBody", mutate(t, commandBody, "compartment", 7.5), "/compartment", &kind.Type{}},
		{"enum", "CommandBody", mutate(t, commandBody, "action", "explode"), "/action", &kind.Enum{}},
		{"const", "CommandBody", mutate(t, commandBody, "kind", "grants"), "/kind", &kind.Const{}},
		{"additionalProperties", "CommandBody", mutate(t, commandBody, "extra", 1), "", &kind.AdditionalProperties{}},
		{"pattern", "CommandBody", mutate(t, commandBody, "locker_id", "no spaces"), "/locker_id", &kind.Pattern{}},
		{"pattern (UTC)", "CommandBody", mutate(t, commandBody, "issued_at", "2026-11-22T10:00:00+08:00"), "/issued_at", &kind.Pattern{}},
		{"format date-time", "CommandBody", mutate(t, commandBody, "issued_at", "2026-13-45T10:00:00Z"), "/issued_at", &kind.Format{}},
		{"minimum", "CommandBody", mutate(t, commandBody, "compartment", 0), "/compartment", &kind.Minimum{}},
		{"minLength", "CommandBody", mutate(t, commandBody, "command_id", ""), "/command_id", &kind.MinLength{}},
		{"oneOf in items", "GrantsBody", strings.Replace(grantsBody, `"op":"revoke"`, `"op":"cancel"`, 1), "/ops/1", &kind.OneOf{}},
		{"oneOf", "Status", `{"state":"online","locker_id":"610091A01"}`, "", &kind.OneOf{}},
		{"items", "GrantsAck", `{"issued_at":"2026-11-22T10:00:00Z","applied":0,"stale":0,"rejected":[{"grant_id":"g"}]}`, "/rejected/0", &kind.Required{}},
	} {
		err := c.ValidateSchema(tc.schema, []byte(tc.payload))
		if !fails(err, tc.at, tc.want) {
			t.Errorf("%s: %s %s: err = %v, want a %T at %q", tc.name, tc.schema, tc.payload, err, tc.want, tc.at)
		}
	}
	if err := c.ValidateSchema("NoSuchSchema", []byte(`{}`)); err == nil {
		t.Error("validated against a schema the contract does not have")
	}
	if err := c.ValidateSchema("Trace", []byte(`{} {}`)); err == nil {
		t.Error("validated two JSON values as one")
	}
}

// TestValidateFindsTheViolation: Validate's error, through the channel and
// the signed envelope's body, says what the schema refused.
func TestValidateFindsTheViolation(t *testing.T) {
	c := load(t)
	p := "lockers/v1/610091A01/"
	for _, tc := range []struct {
		topic, payload, at string
		want               jsonschema.ErrorKind
	}{
		{p + "commands", sealed(t, mutate(t, commandBody, "action", "explode")), "/action", &kind.Enum{}},
		{p + "grants", sealed(t, strings.Replace(grantsBody, hash64, "ABC", 1)), "/ops/0", &kind.OneOf{}},
		{p + "traces", strings.Replace(trace, `"seq":42`, `"seq":4.2`, 1), "/seq", &kind.Type{}},
		{p + "traces", strings.Replace(trace, `"content"`, `"undocumented"`, 1), "", &kind.AdditionalProperties{}},
		{p + "traces", strings.Replace(trace, `"134****8888"`, `"13488888888"`, 1), "/actor", &kind.Pattern{}},
		{p + "grants", `{"key_id":"k","body":"not base64!","sig":"x"}`, "/body", &kind.Pattern{}},
		{p + "compartments", strings.Replace(comps, `"occupied"`, `"haunted"`, 1), "/compartments/0/state", &kind.Enum{}},
		{p + "grants/ack", `{"issued_at":"2026-11-22T10:00:00Z","applied":-1,"stale":0,"rejected":[]}`, "/applied", &kind.Minimum{}},
	} {
		_, err := c.Validate(tc.topic, []byte(tc.payload))
		if !fails(err, tc.at, tc.want) {
			t.Errorf("%s %.60s…: err = %v, want a %T at %q", tc.topic, tc.payload, err, tc.want, tc.at)
		}
	}
}

// TestParseRefusesABrokenSchema: every schema is compiled when the
// contract is loaded, so a broken one fails Parse and not a later check.
func TestParseRefusesABrokenSchema(t *testing.T) {
	const doc = `asyncapi: 3.0.0
channels:
  traces:
    address: lockers/v1/{locker_id}/traces
    messages:
      trace:
        payload: %s
components:
  schemas:
    Time: %s
`
	good := `{type: object, properties: {time: {$ref: '#/components/schemas/Time'}}}`
	if c, err := contract.Parse(fmt.Appendf(nil, doc, good, `{type: string, format: date-time}`)); err != nil {
		t.Fatalf("the good contract: %v", err)
	} else if _, err := c.Validate("lockers/v1/L1/traces", []byte(`{"time":"yesterday"}`)); err == nil {
		t.Fatal("a bad time validated")
	}
	for name, d := range map[string][]byte{
		"bad regexp":       fmt.Appendf(nil, doc, good, `{type: string, pattern: '(['}`),
		"bad type":         fmt.Appendf(nil, doc, good, `{type: 5}`),
		"dangling $ref":    fmt.Appendf(nil, doc, `{$ref: '#/components/schemas/Nope'}`, `{type: string}`),
		"remote $ref":      fmt.Appendf(nil, doc, `{$ref: 'https://example.net/s.json'}`, `{type: string}`),
		"not asyncapi 3":   []byte("asyncapi: 2.6.0\nchannels: {}\n"),
		"no payload":       []byte("asyncapi: 3.0.0\nchannels:\n  a:\n    address: a\n    messages:\n      m: {name: m}\n"),
		"unclosed address": fmt.Appendf(nil, strings.Replace(doc, "{locker_id}", "{locker_id", 1), good, `{type: string}`),
	} {
		if _, err := contract.Parse(d); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}
