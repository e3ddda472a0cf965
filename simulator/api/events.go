package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"
)

// PublishTrace sends a trace the controller recorded (its JSON) to every
// event stream as an `event: trace`. It never blocks: a stream too slow to
// take it misses it.
func (s *Server) PublishTrace(payload []byte) {
	s.publish(frame("trace", jsonOrString(payload)))
}

// PublishMQTT sends an MQTT message to every event stream as an `event:
// mqtt` with {"topic", "payload", "time"}; payload is embedded as JSON when
// it is JSON, else as a string.
func (s *Server) PublishMQTT(topic string, payload []byte) {
	msg := struct {
		Topic   string          `json:"topic"`
		Payload json.RawMessage `json:"payload"`
		Time    string          `json:"time"`
	}{topic, jsonOrString(payload), time.Now().UTC().Format("2006-01-02T15:04:05.000Z")}
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
