package central

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/protocol"
)

// Recorder keeps every message it is given, in order of arrival; its
// Record is an Options.OnMessage.
type Recorder struct {
	mu      sync.Mutex
	msgs    []Message     // guarded by mu
	changed chan struct{} // guarded by mu; closed and replaced by each message
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{changed: make(chan struct{})} }

// Record keeps m and wakes the waiters; it never blocks for long.
func (r *Recorder) Record(m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	close(r.changed)
	r.changed = make(chan struct{})
}

// All returns the messages received so far.
func (r *Recorder) All() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

// Wait returns the first message received that match accepts, waiting up
// to timeout for it. match sees every message again after each new one
// (it may depend on more than the message).
func (r *Recorder) Wait(timeout time.Duration, match func(Message) bool) (Message, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		msgs, changed := r.msgs, r.changed
		r.mu.Unlock()
		for _, m := range msgs {
			if match(m) {
				return m, true
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			return Message{}, false
		}
	}
}

// IsTrace says whether m came on a locker's traces topic.
func (m Message) IsTrace() bool { return strings.HasSuffix(m.Topic, "/"+protocol.SuffixTraces) }

// Traces returns every trace received, in order of arrival, duplicates
// included; a trace that is not JSON is an error.
func (r *Recorder) Traces() ([]wire.Trace, error) {
	var out []wire.Trace
	for _, m := range r.All() {
		if !m.IsTrace() {
			continue
		}
		var tr wire.Trace
		if err := json.Unmarshal(m.Payload, &tr); err != nil {
			return out, fmt.Errorf("trace on %s is not JSON: %s", m.Topic, m.Payload)
		}
		out = append(out, tr)
	}
	return out, nil
}

// Distinct returns the first occurrence of each event_id, in order.
func Distinct(trs []wire.Trace) []wire.Trace {
	seen := map[string]bool{}
	var out []wire.Trace
	for _, tr := range trs {
		if !seen[tr.EventID] {
			seen[tr.EventID] = true
			out = append(out, tr)
		}
	}
	return out
}
