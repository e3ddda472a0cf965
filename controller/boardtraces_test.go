package controller

import (
	"errors"
	"strings"
	"testing"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

// takeTraces returns the traces recorded since the last call (of it or of
// types).
func (r *rig) takeTraces() []wire.Trace {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.traces
	r.traces = nil
	return out
}

// TestCabinetSensorTracesNameTheirSource: a lock board (or an expander)
// that went down and came back gives a sensor_fault and a sensor_recovered
// whose reasons both begin with the source, so that each recovery pairs
// with its fault (two boards down, one back: the central can tell which).
func TestCabinetSensorTracesNameTheirSource(t *testing.T) {
	r := newRig(t, "M")
	r.types()
	r.event(hal.Event{Kind: hal.SensorFault, Source: "board BUS1/2", Err: errors.New("bus BUS1 board 2: rs485: no reply")})
	r.event(hal.Event{Kind: hal.SensorFault, Source: "board BUS1/3", Err: errors.New("bus BUS1 board 3: rs485: no reply")})
	r.event(hal.Event{Kind: hal.SensorRecovered, Source: "board BUS1/3"})
	r.event(hal.Event{Kind: hal.SensorRecovered, Source: "expander X1"})
	got := r.takeTraces()
	want := []struct{ typ, reason, content string }{
		{"sensor_fault", "board BUS1/2: bus BUS1 board 2: rs485: no reply", "Sensor fault: board BUS1/2: "},
		{"sensor_fault", "board BUS1/3: bus BUS1 board 3: rs485: no reply", "Sensor fault: board BUS1/3: "},
		{"sensor_recovered", "board BUS1/3", "Board BUS1/3 reads sanely again"},
		{"sensor_recovered", "expander X1", "Expander X1 reads sanely again"},
	}
	if len(got) != len(want) {
		t.Fatalf("traces %+v, want %d", got, len(want))
	}
	for i, w := range want {
		if g := got[i]; g.Type != w.typ || g.Compartment != 0 || g.Reason != w.reason || !strings.HasPrefix(g.Content, w.content) {
			t.Errorf("trace %d = %s %q %q, want %s %q %q…", i, g.Type, g.Reason, g.Content, w.typ, w.reason, w.content)
		}
	}
	// A fault of no named source (as before) keeps its reason as it is.
	r.event(hal.Event{Kind: hal.SensorFault, Err: errors.New("expander X1 (0x20 on bus 1): no answer")})
	if got := r.takeTraces(); len(got) != 1 || got[0].Reason != "expander X1 (0x20 on bus 1): no answer" {
		t.Errorf("unnamed source: %+v", got)
	}
}
