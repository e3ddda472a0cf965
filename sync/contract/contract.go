// Package contract loads the machine-readable protocol contract
// (docs/asyncapi.yaml, AsyncAPI 3.0) and validates messages against the JSON
// Schemas in it: given a topic and a payload, it finds the channel whose
// address matches and checks the payload against that channel's message
// schema (and, for a signed envelope, the decoded body against the schema
// named by the message's x-signed-body).
//
// It implements the subset of JSON Schema the contract uses — type,
// properties, required, additionalProperties, enum, const, pattern,
// minLength, maxLength, minimum, maximum, items, minItems, maxItems, oneOf,
// anyOf, allOf, local $ref and format date-time — and refuses a schema with
// any other keyword, so that the contract never relies on a check that is
// silently skipped. It is for tests and tools; the locker itself decodes
// with sync/protocol.
package contract

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ErrNoChannel: no channel of the contract has an address matching the topic.
var ErrNoChannel = errors.New("contract: no channel for this topic")

// Contract is a loaded AsyncAPI document.
type Contract struct {
	doc      map[string]any
	channels []channel
	res      map[string]*regexp.Regexp // compiled patterns
}

type channel struct {
	name     string
	address  *regexp.Regexp
	messages []message
}

type message struct {
	name       string
	payload    any // schema
	signedBody any // schema of the envelope's body, or nil
}

// Load reads and checks an AsyncAPI 3 YAML file.
func Load(path string) (*Contract, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// Parse checks an AsyncAPI 3 YAML document.
func Parse(data []byte) (*Contract, error) {
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	doc, ok := normalize(raw).(map[string]any)
	if !ok {
		return nil, errors.New("contract: the document is not a mapping")
	}
	if v, _ := doc["asyncapi"].(string); !strings.HasPrefix(v, "3.") {
		return nil, fmt.Errorf("contract: asyncapi version %q, want 3.x", v)
	}
	c := &Contract{doc: doc, res: map[string]*regexp.Regexp{}}
	chans, _ := doc["channels"].(map[string]any)
	if len(chans) == 0 {
		return nil, errors.New("contract: no channels")
	}
	names := make([]string, 0, len(chans))
	for n := range chans {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		ch, err := c.deref(chans[name])
		if err != nil {
			return nil, fmt.Errorf("contract: channel %s: %w", name, err)
		}
		chm, _ := ch.(map[string]any)
		addr, _ := chm["address"].(string)
		if addr == "" {
			return nil, fmt.Errorf("contract: channel %s has no address", name)
		}
		re, err := addressRE(addr)
		if err != nil {
			return nil, fmt.Errorf("contract: channel %s: %w", name, err)
		}
		cc := channel{name: name, address: re}
		msgs, _ := chm["messages"].(map[string]any)
		for mname, mv := range msgs {
			m, err := c.deref(mv)
			if err != nil {
				return nil, fmt.Errorf("contract: channel %s message %s: %w", name, mname, err)
			}
			mm, _ := m.(map[string]any)
			if mm["payload"] == nil {
				return nil, fmt.Errorf("contract: channel %s message %s has no payload", name, mname)
			}
			msg := message{name: mname, payload: mm["payload"], signedBody: mm["x-signed-body"]}
			for _, s := range []any{msg.payload, msg.signedBody} {
				if s == nil {
					continue
				}
				if err := c.checkSchema(s, "#", 0); err != nil {
					return nil, fmt.Errorf("contract: channel %s message %s: %w", name, mname, err)
				}
			}
			cc.messages = append(cc.messages, msg)
		}
		if len(cc.messages) == 0 {
			return nil, fmt.Errorf("contract: channel %s has no messages", name)
		}
		c.channels = append(c.channels, cc)
	}
	return c, nil
}

// normalize turns YAML's map[any]any (if any) into map[string]any and ints
// into float64, so that schemas and JSON values compare alike.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = normalize(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
		return x
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	}
	return v
}

// addressRE turns "lockers/v1/{locker_id}/traces" into a regular expression;
// a parameter matches one topic level.
func addressRE(addr string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for rest := addr; rest != ""; {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(regexp.QuoteMeta(rest))
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("address %q: unclosed parameter", addr)
		}
		b.WriteString(regexp.QuoteMeta(rest[:i]))
		b.WriteString("([^/+#]+)")
		rest = rest[i+j+1:]
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// deref follows a local $ref ("#/a/b/c") until it reaches a non-reference.
func (c *Contract) deref(v any) (any, error) {
	for range 32 {
		m, ok := v.(map[string]any)
		if !ok {
			return v, nil
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return v, nil
		}
		if !strings.HasPrefix(ref, "#/") {
			return nil, fmt.Errorf("$ref %q: only local references are supported", ref)
		}
		var cur any = c.doc
		for _, part := range strings.Split(ref[2:], "/") {
			part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
			mm, ok := cur.(map[string]any)
			if !ok || mm[part] == nil {
				return nil, fmt.Errorf("$ref %q does not resolve", ref)
			}
			cur = mm[part]
		}
		v = cur
	}
	return nil, errors.New("$ref cycle")
}

// keywords are the schema keywords this package checks; annotations are
// accepted and ignored.
var (
	keywords = map[string]bool{"type": true, "properties": true, "required": true, "additionalProperties": true,
		"enum": true, "const": true, "pattern": true, "minLength": true, "maxLength": true, "minimum": true,
		"maximum": true, "items": true, "minItems": true, "maxItems": true, "oneOf": true, "anyOf": true,
		"allOf": true, "$ref": true, "format": true}
	annotations = map[string]bool{"title": true, "description": true, "examples": true, "default": true,
		"contentEncoding": true, "contentMediaType": true, "deprecated": true, "readOnly": true, "writeOnly": true}
)

// checkSchema refuses keywords it would not check and compiles patterns.
func (c *Contract) checkSchema(s any, at string, depth int) error {
	if depth > 64 {
		return errors.New("schema nested too deep")
	}
	m, ok := s.(map[string]any)
	if !ok {
		if _, isBool := s.(bool); isBool {
			return nil
		}
		return fmt.Errorf("%s: a schema must be a mapping", at)
	}
	if ref, ok := m["$ref"]; ok {
		d, err := c.deref(m)
		if err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
		if depth > 16 { // references are checked where they are defined too
			return nil
		}
		return c.checkSchema(d, fmt.Sprint(ref), depth+1)
	}
	for k, v := range m {
		switch {
		case annotations[k] || strings.HasPrefix(k, "x-"):
		case !keywords[k]:
			return fmt.Errorf("%s: unsupported schema keyword %q", at, k)
		case k == "pattern":
			p, _ := v.(string)
			re, err := regexp.Compile(p)
			if err != nil {
				return fmt.Errorf("%s: pattern: %w", at, err)
			}
			c.res[p] = re
		case k == "format":
			if v != "date-time" {
				return fmt.Errorf("%s: unsupported format %v", at, v)
			}
		case k == "properties":
			props, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("%s: properties must be a mapping", at)
			}
			for name, p := range props {
				if err := c.checkSchema(p, at+"/"+name, depth+1); err != nil {
					return err
				}
			}
		case k == "items" || k == "additionalProperties":
			if err := c.checkSchema(v, at+"/"+k, depth+1); err != nil {
				return err
			}
		case k == "oneOf" || k == "anyOf" || k == "allOf":
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				return fmt.Errorf("%s: %s must be a non-empty list", at, k)
			}
			for i, e := range list {
				if err := c.checkSchema(e, fmt.Sprintf("%s/%s/%d", at, k, i), depth+1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Validate checks payload, published on topic, against the contract. It
// returns the name of the message it matched.
func (c *Contract) Validate(topic string, payload []byte) (string, error) {
	for _, ch := range c.channels {
		if !ch.address.MatchString(topic) {
			continue
		}
		v, err := decodeJSON(payload)
		if err != nil {
			return "", fmt.Errorf("%s: %w", topic, err)
		}
		var errs []string
		for _, m := range ch.messages {
			err := c.validate(m.payload, v, "$")
			if err == nil && m.signedBody != nil {
				err = c.validateBody(m.signedBody, v)
			}
			if err == nil {
				return m.name, nil
			}
			errs = append(errs, m.name+": "+err.Error())
		}
		return "", fmt.Errorf("%s (channel %s): %s", topic, ch.name, strings.Join(errs, "; "))
	}
	return "", fmt.Errorf("%w: %s", ErrNoChannel, topic)
}

// ValidateSchema checks a JSON value against components/schemas/NAME.
func (c *Contract) ValidateSchema(name string, payload []byte) error {
	v, err := decodeJSON(payload)
	if err != nil {
		return err
	}
	return c.validate(map[string]any{"$ref": "#/components/schemas/" + name}, v, "$")
}

func (c *Contract) validateBody(schema any, env any) error {
	m, _ := env.(map[string]any)
	s, _ := m["body"].(string)
	body, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return fmt.Errorf("$.body: not base64: %w", err)
	}
	v, err := decodeJSON(body)
	if err != nil {
		return fmt.Errorf("$.body: %w", err)
	}
	return c.validate(schema, v, "body")
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if d.More() {
		return nil, errors.New("not JSON: trailing data")
	}
	return v, nil
}

func typeOf(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		if f, err := x.Float64(); err == nil && f == math.Trunc(f) && !strings.ContainsAny(x.String(), ".eE") {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func num(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	}
	return 0, false
}

// equal compares a JSON value with a schema constant.
func equal(v, k any) bool {
	if a, ok := num(v); ok {
		b, ok := num(k)
		return ok && a == b
	}
	switch x := v.(type) {
	case string, bool, nil:
		return v == k
	case []any:
		y, ok := k.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equal(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := k.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for key, e := range x {
			if !equal(e, y[key]) {
				return false
			}
		}
		return true
	}
	return false
}

func (c *Contract) validate(schema, v any, at string) error {
	if b, ok := schema.(bool); ok {
		if !b {
			return fmt.Errorf("%s: not allowed", at)
		}
		return nil
	}
	s, err := c.deref(schema)
	if err != nil {
		return err
	}
	m, _ := s.(map[string]any)
	if t, ok := m["type"]; ok {
		got := typeOf(v)
		var want []string
		switch x := t.(type) {
		case string:
			want = []string{x}
		case []any:
			for _, e := range x {
				want = append(want, fmt.Sprint(e))
			}
		}
		if !slices.Contains(want, got) && !(got == "integer" && slices.Contains(want, "number")) {
			return fmt.Errorf("%s: %s, want %s", at, got, strings.Join(want, " or "))
		}
	}
	if k, ok := m["const"]; ok && !equal(v, k) {
		return fmt.Errorf("%s: %v, want %v", at, v, k)
	}
	if list, ok := m["enum"].([]any); ok && !slices.ContainsFunc(list, func(k any) bool { return equal(v, k) }) {
		return fmt.Errorf("%s: %v is not one of %v", at, v, list)
	}
	if str, ok := v.(string); ok {
		n := float64(len([]rune(str)))
		if min, ok := num(m["minLength"]); ok && n < min {
			return fmt.Errorf("%s: shorter than %v", at, min)
		}
		if max, ok := num(m["maxLength"]); ok && n > max {
			return fmt.Errorf("%s: longer than %v", at, max)
		}
		if p, ok := m["pattern"].(string); ok {
			re := c.res[p]
			if re == nil {
				if re, err = regexp.Compile(p); err != nil {
					return err
				}
			}
			if !re.MatchString(str) {
				return fmt.Errorf("%s: %q does not match %s", at, str, p)
			}
		}
		if m["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				return fmt.Errorf("%s: %q is not an RFC 3339 time", at, str)
			}
		}
	}
	if f, ok := num(v); ok {
		if min, ok := num(m["minimum"]); ok && f < min {
			return fmt.Errorf("%s: %v is less than %v", at, f, min)
		}
		if max, ok := num(m["maximum"]); ok && f > max {
			return fmt.Errorf("%s: %v is more than %v", at, f, max)
		}
	}
	if arr, ok := v.([]any); ok {
		if min, ok := num(m["minItems"]); ok && float64(len(arr)) < min {
			return fmt.Errorf("%s: fewer than %v items", at, min)
		}
		if max, ok := num(m["maxItems"]); ok && float64(len(arr)) > max {
			return fmt.Errorf("%s: more than %v items", at, max)
		}
		if items, ok := m["items"]; ok {
			for i, e := range arr {
				if err := c.validate(items, e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	}
	if obj, ok := v.(map[string]any); ok {
		props, _ := m["properties"].(map[string]any)
		if req, ok := m["required"].([]any); ok {
			for _, r := range req {
				if _, ok := obj[fmt.Sprint(r)]; !ok {
					return fmt.Errorf("%s: %v is missing", at, r)
				}
			}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if p, ok := props[k]; ok {
				if err := c.validate(p, obj[k], at+"."+k); err != nil {
					return err
				}
			} else if ap, ok := m["additionalProperties"]; ok {
				if b, isBool := ap.(bool); isBool && !b {
					return fmt.Errorf("%s: unknown field %q", at, k)
				}
				if err := c.validate(ap, obj[k], at+"."+k); err != nil {
					return err
				}
			}
		}
	}
	if list, ok := m["allOf"].([]any); ok {
		for _, e := range list {
			if err := c.validate(e, v, at); err != nil {
				return err
			}
		}
	}
	if list, ok := m["anyOf"].([]any); ok {
		var errs []string
		for _, e := range list {
			err := c.validate(e, v, at)
			if err == nil {
				errs = nil
				break
			}
			errs = append(errs, err.Error())
		}
		if errs != nil {
			return fmt.Errorf("%s: matches none of anyOf: %s", at, strings.Join(errs, " | "))
		}
	}
	if list, ok := m["oneOf"].([]any); ok {
		n := 0
		var errs []string
		for _, e := range list {
			if err := c.validate(e, v, at); err == nil {
				n++
			} else {
				errs = append(errs, err.Error())
			}
		}
		if n != 1 {
			if n == 0 {
				return fmt.Errorf("%s: matches none of oneOf: %s", at, strings.Join(errs, " | "))
			}
			return fmt.Errorf("%s: matches %d of oneOf", at, n)
		}
	}
	return nil
}
