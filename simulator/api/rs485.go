package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openlocker/locker/simulator/rs485"
)

// The RS485 bus view and its fault injection (docs/simulator-api-extensions.md):
//
//	GET  /api/rs485                                  buses, boards, recent frames
//	POST /api/rs485/{bus}/boards/{addr}/fault        {"fault": "no_answer"}
//	POST /api/rs485/{bus}/boards/{addr}/power-cycle  {"off_ms": 2000} (body optional)
//
// and `event: rs485` on the event stream: one frame each, status polls
// whose reply did not change left out (a bus polls its boards tens of
// times a second).

// RS485 is the JSON of GET /api/rs485.
type RS485 struct {
	Buses []RS485Bus `json:"buses"`
	// Real are the wiring's buses on a device that exists: the daemon
	// drives the real boards and the compartments on them show the
	// daemon's readings ("external": true).
	Real []RealBus `json:"real"`
}

// RS485Bus is a simulated bus.
type RS485Bus struct {
	Name     string             `json:"name"`
	Protocol string             `json:"protocol"`
	Baud     int                `json:"baud"`
	Device   string             `json:"device"` // the wiring's device path
	PTY      string             `json:"pty"`    // the pseudo-terminal the daemon opened instead
	Boards   []rs485.BoardState `json:"boards"`
	Frames   []rs485.Frame      `json:"frames"` // oldest first
}

// RealBus is a bus on a real device.
type RealBus struct {
	Name   string `json:"name"`
	Device string `json:"device"`
	// Frames are the last frames the daemon's bus worker wrote and read,
	// oldest first, as for a simulated bus ("err" also says a time-out).
	Frames []rs485.Frame `json:"frames"`
}

func (s *Server) rs485View() RS485 {
	out := RS485{Buses: []RS485Bus{}, Real: []RealBus{}}
	w := s.cab.Wiring()
	for _, b := range s.cab.RS485() {
		v := RS485Bus{Name: b.Name(), Protocol: b.Protocol().String(), Baud: b.Baud(), PTY: b.Path(),
			Boards: b.Boards(), Frames: b.Frames()}
		if wb, ok := w.Bus(b.Name()); ok {
			v.Device = wb.Device
		}
		out.Buses = append(out.Buses, v)
	}
	for _, name := range s.cab.RealBuses() {
		rb := RealBus{Name: name, Frames: []rs485.Frame{}}
		if wb, ok := w.Bus(name); ok {
			rb.Device = wb.Device
		}
		if m := s.cab.RealMonitor(name); m != nil {
			rb.Frames = m.Frames()
		}
		out.Real = append(out.Real, rb)
	}
	return out
}

func (s *Server) handleRS485(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.rs485View())
}

// boardOf returns the bus and board address of the path, or answers 404.
func (s *Server) boardOf(w http.ResponseWriter, r *http.Request) (*rs485.Bus, int, bool) {
	name := r.PathValue("bus")
	bus := s.cab.RS485Bus(name)
	if bus == nil {
		msg := fmt.Sprintf("no simulated RS485 bus %q", name)
		for _, real := range s.cab.RealBuses() {
			if real == name {
				msg = fmt.Sprintf("bus %q drives a real device: its boards cannot be told to fail", name)
			}
		}
		writeError(w, http.StatusNotFound, msg)
		return nil, 0, false
	}
	addr, err := strconv.Atoi(r.PathValue("addr"))
	if err == nil {
		err = errors.New("no such board")
		for _, b := range bus.Boards() {
			if b.Address == addr {
				err = nil
			}
		}
	}
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("bus %s has no board %q", name, r.PathValue("addr")))
		return nil, 0, false
	}
	return bus, addr, true
}

func (s *Server) boardState(bus *rs485.Bus, addr int) rs485.BoardState {
	for _, b := range bus.Boards() {
		if b.Address == addr {
			return b
		}
	}
	return rs485.BoardState{}
}

func (s *Server) handleBoardFault(w http.ResponseWriter, r *http.Request) {
	bus, addr, ok := s.boardOf(w, r)
	if !ok {
		return
	}
	var body struct {
		Fault string `json:"fault"`
	}
	if !decode(w, r, &body) {
		return
	}
	f, err := rs485.ParseFault(body.Fault)
	if err != nil {
		names := make([]string, 0, 4)
		for _, f := range rs485.Faults() {
			names = append(names, string(f))
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid fault %q: want one of %s", body.Fault, strings.Join(names, ", ")))
		return
	}
	if err := bus.SetFault(addr, f); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("api: rs485 board fault", "bus", bus.Name(), "board", addr, "fault", f)
	writeJSON(w, http.StatusOK, s.boardState(bus, addr))
}

// maxPowerOff bounds a power cycle.
const maxPowerOff = time.Minute

func (s *Server) handlePowerCycle(w http.ResponseWriter, r *http.Request) {
	bus, addr, ok := s.boardOf(w, r)
	if !ok {
		return
	}
	var body struct {
		OffMS *int64 `json:"off_ms"`
	}
	if r.ContentLength != 0 && !decode(w, r, &body) {
		return
	}
	var off time.Duration
	if body.OffMS != nil {
		off = time.Duration(*body.OffMS) * time.Millisecond
		if off <= 0 || off > maxPowerOff {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("off_ms %d: want 1 to %d", *body.OffMS, maxPowerOff.Milliseconds()))
			return
		}
	}
	if err := bus.PowerCycle(addr, off); err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("api: rs485 board power-cycled", "bus", bus.Name(), "board", addr)
	writeJSON(w, http.StatusOK, s.boardState(bus, addr))
}

// watchBuses forwards the frames of the simulated buses, and of the real
// ones as the daemon saw them, to the event streams until stop is closed,
// leaving out the status polls whose reply did not change.
func (s *Server) watchBuses(stop <-chan struct{}) {
	type frameSource interface {
		Subscribe() (<-chan rs485.Frame, func())
	}
	var sources []frameSource
	for _, b := range s.cab.RS485() {
		sources = append(sources, b)
	}
	for _, name := range s.cab.RealBuses() {
		if m := s.cab.RealMonitor(name); m != nil {
			sources = append(sources, m)
		}
	}
	for _, b := range sources {
		ch, cancel := b.Subscribe()
		go func() {
			defer cancel()
			var lastCmd string
			lastReply := map[string]string{} // by command: the reply last shown
			var held *rs485.Frame            // a status command, shown with its reply if that changed
			for {
				select {
				case <-stop:
					return
				case f := <-ch:
					switch {
					case f.Dir == rs485.ToBoard && f.Err == "" && (strings.Contains(f.Text, "status") || strings.Contains(f.Text, "query")):
						held, lastCmd = &f, f.Hex
					case f.Dir == rs485.FromBoard && f.Err == "" && held != nil && lastReply[lastCmd] == f.Hex:
						held = nil // nothing new
					default:
						if held != nil {
							s.publishLive("rs485", *held)
							held = nil
						}
						if f.Dir == rs485.FromBoard {
							lastReply[lastCmd] = f.Hex
						}
						if f.Dir == rs485.ToBoard {
							lastCmd = f.Hex
						}
						s.publishLive("rs485", f)
					}
				}
			}
		}()
	}
}

// publishLive sends an event to the streams without keeping it for the
// replay (the page reads the bus's history from GET /api/rs485).
func (s *Server) publishLive(event string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	f := frame(event, data)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.clients {
		select {
		case c.frames <- f:
		default:
			c.dropped++
		}
	}
}
