// Package contract loads the machine-readable protocol contract
// (docs/asyncapi.yaml, AsyncAPI 3.0) and validates messages against the JSON
// Schemas in it: given a topic and a payload, it finds the channel whose
// address matches and checks the payload against that channel's message
// schema (and, for a signed envelope, the decoded body against the schema
// named by the message's x-signed-body).
//
// The schemas are checked by github.com/santhosh-tekuri/jsonschema/v6 as
// JSON Schema draft 7 (AsyncAPI 3's default schema format is a superset of
// it), with format asserted: date-time must be RFC 3339. Every schema of
// components/schemas and of every message is compiled when the contract is
// loaded, so that a broken schema fails Load rather than a later check. It
// is for tests and tools; the locker itself decodes with sync/protocol.
package contract

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// ErrNoChannel: no channel of the contract has an address matching the topic.
var ErrNoChannel = errors.New("contract: no channel for this topic")

// docURL names the contract for the schema compiler; the contract's own
// references ("#/components/schemas/Time") resolve inside it.
const docURL = "urn:openlocker:asyncapi"

// Contract is a loaded AsyncAPI document.
type Contract struct {
	doc      map[string]any
	channels []channel
	schemas  map[string]*jsonschema.Schema // components/schemas by name
}

type channel struct {
	name     string
	address  *regexp.Regexp
	messages []message
}

type message struct {
	name       string
	payload    *jsonschema.Schema
	signedBody *jsonschema.Schema // the schema of the envelope's body, or nil
}

// Load reads and checks an AsyncAPI 3 YAML file.
func Load(path string) (*Contract, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// Parse checks an AsyncAPI 3 YAML document and compiles its schemas.
func Parse(data []byte) (*Contract, error) {
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	// The schema compiler wants JSON values: go through JSON.
	js, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("contract: not a JSON document: %w", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	doc, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("contract: the document is not a mapping")
	}
	if v, _ := doc["asyncapi"].(string); !strings.HasPrefix(v, "3.") {
		return nil, fmt.Errorf("contract: asyncapi version %q, want 3.x", v)
	}
	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft7)
	comp.AssertFormat()
	if err := comp.AddResource(docURL, doc); err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	compile := func(ptr string) (*jsonschema.Schema, error) {
		s, err := comp.Compile(docURL + "#" + ptr)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", ptr, err)
		}
		return s, nil
	}

	c := &Contract{doc: doc, schemas: map[string]*jsonschema.Schema{}}
	components, _ := doc["components"].(map[string]any)
	schemas, _ := components["schemas"].(map[string]any)
	for name := range schemas {
		if c.schemas[name], err = compile("/components/schemas/" + escape(name)); err != nil {
			return nil, fmt.Errorf("contract: %w", err)
		}
	}
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
		ch, _, err := c.deref(chans[name], "/channels/"+escape(name))
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
			m, at, err := c.deref(mv, "/channels/"+escape(name)+"/messages/"+escape(mname))
			if err != nil {
				return nil, fmt.Errorf("contract: channel %s message %s: %w", name, mname, err)
			}
			mm, _ := m.(map[string]any)
			if mm["payload"] == nil {
				return nil, fmt.Errorf("contract: channel %s message %s has no payload", name, mname)
			}
			msg := message{name: mname}
			if msg.payload, err = compile(at + "/payload"); err == nil && mm["x-signed-body"] != nil {
				msg.signedBody, err = compile(at + "/x-signed-body")
			}
			if err != nil {
				return nil, fmt.Errorf("contract: channel %s message %s: %w", name, mname, err)
			}
			cc.messages = append(cc.messages, msg)
		}
		if len(cc.messages) == 0 {
			return nil, fmt.Errorf("contract: channel %s has no messages", name)
		}
		slices.SortFunc(cc.messages, func(a, b message) int { return strings.Compare(a.name, b.name) })
		c.channels = append(c.channels, cc)
	}
	return c, nil
}

// escape escapes a name for a JSON pointer (RFC 6901).
func escape(name string) string {
	return strings.ReplaceAll(strings.ReplaceAll(name, "~", "~0"), "/", "~1")
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

// deref follows a local $ref ("#/a/b/c") from v, found at the JSON pointer
// at, until it reaches a non-reference; it returns that value and its
// pointer.
func (c *Contract) deref(v any, at string) (any, string, error) {
	for range 32 {
		m, ok := v.(map[string]any)
		if !ok {
			return v, at, nil
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return v, at, nil
		}
		if !strings.HasPrefix(ref, "#/") {
			return nil, "", fmt.Errorf("$ref %q: only local references are supported", ref)
		}
		var cur any = c.doc
		for _, part := range strings.Split(ref[2:], "/") {
			part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
			mm, ok := cur.(map[string]any)
			if !ok || mm[part] == nil {
				return nil, "", fmt.Errorf("$ref %q does not resolve", ref)
			}
			cur = mm[part]
		}
		v, at = cur, ref[1:]
	}
	return nil, "", errors.New("$ref cycle")
}

// Validate checks payload, published on topic, against the contract. It
// returns the name of the message it matched. A schema's verdict is a
// *jsonschema.ValidationError in the error's chain.
func (c *Contract) Validate(topic string, payload []byte) (string, error) {
	for _, ch := range c.channels {
		if !ch.address.MatchString(topic) {
			continue
		}
		v, err := decodeJSON(payload)
		if err != nil {
			return "", fmt.Errorf("%s: %w", topic, err)
		}
		var errs []error
		for _, m := range ch.messages {
			err := m.payload.Validate(v)
			if err == nil && m.signedBody != nil {
				err = validateBody(m.signedBody, v)
			}
			if err == nil {
				return m.name, nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
		}
		return "", fmt.Errorf("%s (channel %s): %w", topic, ch.name, errors.Join(errs...))
	}
	return "", fmt.Errorf("%w: %s", ErrNoChannel, topic)
}

// ValidateSchema checks a JSON value against components/schemas/NAME.
func (c *Contract) ValidateSchema(name string, payload []byte) error {
	s := c.schemas[name]
	if s == nil {
		return fmt.Errorf("contract: no schema %q", name)
	}
	v, err := decodeJSON(payload)
	if err != nil {
		return err
	}
	return s.Validate(v)
}

// validateBody checks the body that a signed envelope carries in base64.
func validateBody(schema *jsonschema.Schema, env any) error {
	m, _ := env.(map[string]any)
	s, _ := m["body"].(string)
	body, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return fmt.Errorf("body: not base64: %w", err)
	}
	v, err := decodeJSON(body)
	if err != nil {
		return fmt.Errorf("body: %w", err)
	}
	if err := schema.Validate(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	return nil
}

func decodeJSON(b []byte) (any, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	return v, nil
}
