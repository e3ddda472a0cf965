package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"

	"github.com/openlocker/locker/controller/wire"
)

// PublishTrace sends a trace the controller recorded (its JSON) to every
// event stream as an `event: trace`, redacted (see redact). It never
// blocks: a stream too slow to take it misses it.
func (s *Server) PublishTrace(payload []byte) {
	s.publish(frame("trace", redact(payload)))
}

// PublishMQTT sends an MQTT message to every event stream as an `event:
// mqtt` with {"topic", "payload", "time"}; payload is embedded as JSON when
// it is JSON, else as a string, and redacted (see redact).
func (s *Server) PublishMQTT(topic string, payload []byte) {
	msg := struct {
		Topic   string          `json:"topic"`
		Payload json.RawMessage `json:"payload"`
		Time    string          `json:"time"`
	}{topic, redact(payload), time.Now().UTC().Format("2006-01-02T15:04:05.000Z")}
	data, err := json.Marshal(msg)
	if err != nil {
		s.log.Error("api: encoding an mqtt message", "err", err)
		return
	}
	s.publish(frame("mqtt", data))
}

func (s *Server) publish(f []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.recent) == maxRecent {
		s.recent = append(s.recent[:0], s.recent[1:]...)
	}
	s.recent = append(s.recent, f)
	for c := range s.clients {
		select {
		case c.frames <- f:
		default:
			c.dropped++
		}
	}
}

// redact returns payload as the page may show it: compacted JSON, with a
// signed envelope's body decoded in place of its base64 (so that the page
// shows what was signed), every "holder" masked as in traces and every
// "code" or "pickup_code" removed, at any depth. A payload that is not JSON
// is returned as a JSON string. Full phone numbers and codes never reach
// an event stream.
func redact(payload []byte) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if !json.Valid(payload) || dec.Decode(&v) != nil {
		return jsonOrString(payload)
	}
	v, changed := redactValue(v)
	if !changed {
		return jsonOrString(payload)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return jsonOrString(nil)
	}
	return data
}

// redactValue redacts v in place and reports whether it changed.
func redactValue(v any) (any, bool) {
	switch x := v.(type) {
	case map[string]any:
		changed := false
		if body, ok := envelopeBody(x); ok {
			x["body"] = body
			changed = true
		}
		for k, e := range x {
			switch k {
			case "code", "pickup_code":
				delete(x, k)
				changed = true
			case "holder", "pickup_holder":
				if h, ok := e.(string); ok && wire.MaskHolder(h) != h {
					x[k] = wire.MaskHolder(h)
					changed = true
				}
			default:
				if n, c := redactValue(e); c {
					x[k] = n
					changed = true
				}
			}
		}
		return x, changed
	case []any:
		changed := false
		for i, e := range x {
			if n, c := redactValue(e); c {
				x[i] = n
				changed = true
			}
		}
		return x, changed
	}
	return v, false
}

// envelopeBody returns the body of a signed envelope {key_id, body, sig},
// decoded and redacted, when m is one and its body is JSON.
func envelopeBody(m map[string]any) (any, bool) {
	if len(m) != 3 {
		return nil, false
	}
	for _, k := range []string{"key_id", "body", "sig"} {
		if _, ok := m[k].(string); !ok {
			return nil, false
		}
	}
	raw, err := base64.StdEncoding.DecodeString(m["body"].(string))
	if err != nil || !json.Valid(raw) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var body any
	if dec.Decode(&body) != nil {
		return nil, false
	}
	body, _ = redactValue(body)
	return body, true
}

// jsonOrString returns payload compacted when it is JSON, else payload as a
// JSON string.
func jsonOrString(payload []byte) json.RawMessage {
	var buf bytes.Buffer
	if json.Valid(payload) && json.Compact(&buf, payload) == nil {
		return buf.Bytes()
	}
	data, _ := json.Marshal(string(payload))
	return data
}

// frame renders one Server-Sent Event; data holds no newline.
func frame(event string, data []byte) []byte {
	out := make([]byte, 0, len(event)+len(data)+16)
	out = append(out, "event: "...)
	out = append(out, event...)
	out = append(out, "\ndata: "...)
	out = append(out, data...)
	return append(out, "\n\n"...)
}

// handleEvents streams Server-Sent Events: `event: cabinet` with the whole
// cabinet on connect and after every change (bursts coalesced, and
// re-checked every s.refresh for changes on the daemon's side), `event:
// trace` and `event: mqtt` as published, recent ones replayed on connect,
// and a comment every s.heartbeat. It ends when the client goes away.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	s.streams.Add(1)
	defer s.streams.Add(-1)
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives a server's WriteTimeout
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	changes, unsubscribe := s.cab.Subscribe()
	defer unsubscribe()
	c := &client{frames: make(chan []byte, clientBuffer)}
	s.mu.Lock()
	s.clients[c] = struct{}{}
	replay := append([][]byte(nil), s.recent...)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		dropped := c.dropped
		s.mu.Unlock()
		if dropped > 0 {
			s.log.Warn("api: an event stream was too slow", "dropped", dropped)
		}
	}()

	var last []byte // the cabinet JSON last sent
	sendCabinet := func() error {
		data, err := json.Marshal(s.cabinet())
		if err != nil || bytes.Equal(data, last) {
			return err
		}
		last = data
		if _, err := w.Write(frame("cabinet", data)); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := sendCabinet(); err != nil {
		return
	}
	for _, f := range replay {
		if _, err := w.Write(f); err != nil {
			return
		}
	}
	if err := rc.Flush(); err != nil {
		return
	}

	heartbeat := time.NewTicker(s.heartbeat)
	defer heartbeat.Stop()
	refresh := time.NewTicker(s.refresh)
	defer refresh.Stop()
	coalesce := time.NewTimer(s.coalesce)
	coalesce.Stop()
	defer coalesce.Stop()
	pending := false
	schedule := func() {
		if !pending {
			pending = true
			coalesce.Reset(s.coalesce)
		}
	}
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case <-changes:
			schedule()
		case f := <-c.frames:
			if _, err = w.Write(f); err == nil {
				err = rc.Flush()
			}
			schedule() // a trace usually follows a change of the daemon's view
		case <-coalesce.C:
			pending = false
			err = sendCabinet()
		case <-refresh.C:
			if !pending {
				err = sendCabinet()
			}
		case <-heartbeat.C:
			if _, err = w.Write([]byte(": heartbeat\n\n")); err == nil {
				err = rc.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}
