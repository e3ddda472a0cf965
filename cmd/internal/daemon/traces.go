package daemon

import (
	"sync"
)

// traceHub keeps the last traces and fans new ones out to followers
// (lockerctl traces --follow). A follower that does not keep up misses
// traces rather than slowing the controller; the outbox is the record.
type traceHub struct {
	mu     sync.Mutex
	recent [][]byte // the last hubKeep traces, oldest first
	subs   map[chan []byte]struct{}
}

const hubKeep = 100

func newTraceHub() *traceHub { return &traceHub{subs: map[chan []byte]struct{}{}} }

// publish is called by the controller after each commit; it never blocks.
func (h *traceHub) publish(payload []byte) {
	p := append([]byte(nil), payload...)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recent = append(h.recent, p)
	if len(h.recent) > hubKeep {
		h.recent = h.recent[len(h.recent)-hubKeep:]
	}
	for ch := range h.subs {
		select {
		case ch <- p:
		default:
		}
	}
}

// follow returns the recent traces and a channel of the ones to come.
func (h *traceHub) follow() ([][]byte, chan []byte, func()) {
	ch := make(chan []byte, 256)
	h.mu.Lock()
	recent := append([][]byte(nil), h.recent...)
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return recent, ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}
