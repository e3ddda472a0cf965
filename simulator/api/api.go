// Package api is the HTTP API of the simulated cabinet (SIMULATOR-API.md):
// the cabinet's state, the keypad, door, parcel and fault actions, a stream
// of Server-Sent Events, and the web page that technicians use. Its
// extensions — the central forms that sign and send grants and commands —
// are in docs/simulator-api-extensions.md.
package api

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openlocker/locker/simulator"
)

// Daemon is what the API needs from the locker daemon running against the
// simulated cabinet.
type Daemon interface {
	// LockerID is the locker's id.
	LockerID() string
	// KeysHandled counts the keys the controller has finished handling. A
	// release the key causes must already show in Busy when it goes up.
	KeysHandled() uint64
	// Busy reports whether a lock release is queued or pulsing, or has
	// ended and the controller has not yet handled its end (which may start
	// another release).
	Busy() bool
	// CompartmentState is the daemon's view of compartment n: free,
	// reserved, occupied, expired, disabled or fault.
	CompartmentState(n int) string
}

// Options configure a Server.
type Options struct {
	// Cabinet is the simulated cabinet (required).
	Cabinet *simulator.Cabinet
	// Daemon may be nil: the states read "unknown" and the keypad answers
	// 503.
	Daemon Daemon
	// Central may be nil: the central forms (POST /api/central/grants and
	// /api/central/commands) then answer 503.
	Central Central
	Logger  *slog.Logger
}

// Server serves the API and the web page.
type Server struct {
	cab     *simulator.Cabinet
	daemon  Daemon
	central Central
	log     *slog.Logger
	mux     *http.ServeMux

	keypadSem chan struct{} // one keypad request at a time

	// Timings; tests shorten them.
	keyTimeout  time.Duration // for the daemon to handle a key, and the scanner to see it released
	busyTimeout time.Duration // for the daemon's releases to finish after the last key
	quiet       time.Duration // the cabinet must be unchanged this long before answering a keypad request
	heartbeat   time.Duration // SSE comment interval
	coalesce    time.Duration // SSE: cabinet changes within this interval make one event
	refresh     time.Duration // SSE: the cabinet is re-checked this often for daemon-side changes

	// mu guards clients and recent.
	mu      sync.Mutex
	clients map[*client]struct{}
	recent  [][]byte // the last trace and mqtt frames, oldest first

	streams atomic.Int64 // event streams being served

	idMu   sync.Mutex // guards lastID
	lastID int64      // the last grant or command id given

	stop      chan struct{} // closed by Close: the bus watchers end
	closeOnce sync.Once
}

// client is one SSE stream.
type client struct {
	frames  chan []byte // trace and mqtt frames
	dropped int         // frames dropped because the stream was too slow; guarded by Server.mu
}

const (
	maxRecent    = 100 // frames replayed to a new stream
	clientBuffer = 256 // frames queued per stream before dropping
	maxBody      = 1 << 16
	maxKeys      = 64
)

//go:embed web
var webFiles embed.FS

// New returns a server for opts.Cabinet.
func New(opts Options) *Server {
	s := &Server{
		cab:         opts.Cabinet,
		daemon:      opts.Daemon,
		central:     opts.Central,
		log:         opts.Logger,
		keypadSem:   make(chan struct{}, 1),
		keyTimeout:  2 * time.Second,
		busyTimeout: 10 * time.Second, // a jammed lock: two pulses, two confirmations, then a deposit moves on
		quiet:       50 * time.Millisecond,
		heartbeat:   15 * time.Second,
		coalesce:    25 * time.Millisecond,
		refresh:     time.Second,
		clients:     map[*client]struct{}{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	web, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded folder is part of the binary
	}
	m := http.NewServeMux()
	m.HandleFunc("GET /api/cabinet", s.handleCabinet)
	m.HandleFunc("GET /api/invariants", s.handleInvariants)
	m.HandleFunc("POST /api/keypad", s.handleKeypad)
	m.HandleFunc("POST /api/compartments/{n}/door", s.handleDoor)
	m.HandleFunc("POST /api/compartments/{n}/parcel", s.handleParcel)
	m.HandleFunc("POST /api/compartments/{n}/fault", s.handleFault)
	m.HandleFunc("GET /api/events", s.handleEvents)
	m.HandleFunc("GET /api/rs485", s.handleRS485)
	m.HandleFunc("POST /api/rs485/{bus}/boards/{addr}/fault", s.handleBoardFault)
	m.HandleFunc("POST /api/rs485/{bus}/boards/{addr}/power-cycle", s.handlePowerCycle)
	m.HandleFunc("GET /api/central", s.handleCentral)
	m.HandleFunc("POST /api/central/grants", s.handleGrants)
	m.HandleFunc("POST /api/central/commands", s.handleCommands)
	notFound := func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	}
	m.HandleFunc("GET /api/", notFound)
	m.HandleFunc("POST /api/", notFound)
	m.Handle("GET /", http.FileServerFS(web))
	s.mux = m
	s.stop = make(chan struct{})
	s.watchBuses(s.stop)
	return s
}

// Close stops forwarding the RS485 buses' frames to the event streams.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.stop) })
}

// Handler returns the HTTP handler of the API and the web page.
func (s *Server) Handler() http.Handler { return s.mux }

// Cabinet is the JSON of GET /api/cabinet.
type Cabinet struct {
	LockerID     string        `json:"locker_id"`
	Display      []string      `json:"display"`
	Compartments []Compartment `json:"compartments"`
}

// Compartment is one compartment in the API: the daemon's state and the
// simulated physical truth.
type Compartment struct {
	Number  int    `json:"number"`
	Size    string `json:"size"`
	State   string `json:"state"`
	Door    string `json:"door"`
	Latched bool   `json:"latched"`
	Parcel  bool   `json:"parcel"`
	Fault   string `json:"fault"`
	// External: the compartment is on a real RS485 board (a device that
	// exists); Door and Parcel are what the daemon reads from the board,
	// Latched is false and Fault "none" (the simulation does not know).
	External bool `json:"external,omitempty"`
	// ReadDoor is the door as the daemon's hardware reads it, debounced
	// ("open", "closed"; empty when the daemon has no reading): it lags
	// Door by the debounce time, and differs from it while a sensor is
	// faulty. A script that plays a person waits for it before closing a
	// door it just saw open, as no hand is faster than a debounce.
	ReadDoor string `json:"read_door,omitempty"`
}

// Readings is implemented by a Daemon that can tell what its hardware
// reads: the API shows it for compartments on real boards.
type Readings interface {
	// Reading is the daemon's debounced door and occupancy reading of
	// compartment n; ok is false when it has none.
	Reading(n int) (doorOpen, parcel, ok bool)
}

func (s *Server) compartment(c simulator.CompartmentState) Compartment {
	state := "unknown"
	if s.daemon != nil {
		state = s.daemon.CompartmentState(c.Number)
	}
	out := Compartment{Number: c.Number, Size: c.Size, State: state, Door: c.Door, Latched: c.Latched, Parcel: c.Parcel, Fault: string(c.Fault)}
	if r, ok := s.daemon.(Readings); ok {
		if open, _, ok := r.Reading(c.Number); ok {
			out.ReadDoor = simulator.DoorClosed
			if open {
				out.ReadDoor = simulator.DoorOpen
			}
		}
	}
	if s.cab.External(c.Number) {
		out.External, out.Latched, out.Fault, out.Door, out.Parcel = true, false, string(simulator.FaultNone), "unknown", false
		if r, ok := s.daemon.(Readings); ok {
			if open, parcel, ok := r.Reading(c.Number); ok {
				out.Door = simulator.DoorClosed
				if open {
					out.Door = simulator.DoorOpen
				}
				out.Parcel = parcel
			}
		}
	}
	return out
}

// cabinet returns the whole cabinet as the API shows it.
func (s *Server) cabinet() Cabinet {
	snap := s.cab.Snapshot()
	out := Cabinet{Display: snap.Display, Compartments: make([]Compartment, len(snap.Compartments))}
	if out.Display == nil {
		out.Display = []string{}
	}
	if s.daemon != nil {
		out.LockerID = s.daemon.LockerID()
	}
	for i, c := range snap.Compartments {
		out.Compartments[i] = s.compartment(c)
	}
	return out
}

func (s *Server) handleCabinet(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.cabinet())
}

// handleInvariants reports whether the hardware rules held so far: the
// power budget (coils on at once), the pulse cap, the gap between pulses
// and each coil's cool-down. Tests assert it before they stop a simulator.
func (s *Server) handleInvariants(w http.ResponseWriter, _ *http.Request) {
	var broken []string
	for _, err := range []error{s.cab.CheckInvariants(), s.cab.CheckSpacing()} {
		if err != nil {
			broken = append(broken, err.Error())
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": len(broken) == 0, "broken": broken,
		"max_coils_at_once": s.cab.MaxCoilsAtOnce(), "budget_violations": s.cab.BudgetViolations()})
}

// handleKeypad presses the keys one after the other, as a person does:
// hold the key until the daemon has handled it, let go, wait for the
// scanner to see it released. After the last key it waits for the daemon's
// releases and the physics to settle, and answers with the display.
func (s *Server) handleKeypad(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Keys *string `json:"keys"`
	}
	if !decode(w, r, &body) {
		return
	}
	if body.Keys == nil || *body.Keys == "" {
		writeError(w, http.StatusBadRequest, `"keys" is missing or empty`)
		return
	}
	keys := *body.Keys
	if len(keys) > maxKeys {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("at most %d keys at a time", maxKeys))
		return
	}
	if s.cab.Wiring().Keypad == nil {
		writeError(w, http.StatusConflict, "the cabinet has no keypad")
		return
	}
	for i := range len(keys) {
		if !strings.ContainsRune("0123456789*#ABCD", rune(keys[i])) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid key %q: keys are digits, *, # and A-D", keys[i]))
			return
		}
		if !s.cab.HasKey(keys[i]) {
			writeError(w, http.StatusConflict, fmt.Sprintf("the keypad has no key %q", keys[i]))
			return
		}
	}
	if s.daemon == nil {
		writeError(w, http.StatusServiceUnavailable, "no daemon is running")
		return
	}
	ctx := r.Context()
	select {
	case s.keypadSem <- struct{}{}:
		defer func() { <-s.keypadSem }()
	case <-ctx.Done():
		return
	}
	for i := range len(keys) {
		if err := s.press(ctx, keys[i]); err != nil {
			s.keypadError(w, err)
			return
		}
	}
	if err := s.settle(ctx); err != nil {
		s.keypadError(w, err)
		return
	}
	display := s.cab.Display()
	if display == nil {
		display = []string{}
	}
	writeJSON(w, http.StatusOK, map[string][]string{"display": display})
}

var (
	// errNotScanned: the daemon did not handle a held key in time, or the
	// scanner stopped.
	errNotScanned = errors.New("keypad not scanned")
	// errBusy: the daemon's lock releases did not finish in time.
	errBusy = errors.New("daemon still busy")
)

func (s *Server) keypadError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, errNotScanned), errors.Is(err, errBusy):
		s.log.Warn("api: keypad", "err", err)
		writeError(w, http.StatusGatewayTimeout, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The client is gone.
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// press holds key until the daemon has handled it, then releases it and
// waits until the scanner has seen it released.
func (s *Server) press(ctx context.Context, key byte) error {
	handled := s.daemon.KeysHandled()
	if err := s.cab.PressKey(key); err != nil {
		return err
	}
	err := waitFor(ctx, s.keyTimeout, func() bool { return s.daemon.KeysHandled() > handled })
	if rerr := s.cab.ReleaseKey(key); err == nil {
		err = rerr
	}
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("%w: key %q was not handled within %v", errNotScanned, key, s.keyTimeout)
	}
	if err != nil {
		return err
	}
	scans := s.cab.Scans()
	err = waitFor(ctx, s.keyTimeout, func() bool { return s.cab.Scans() >= scans+3 })
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("%w: the scanner stopped after key %q", errNotScanned, key)
	}
	return err
}

// settle waits until the daemon is not busy and the physics is at rest,
// then for the cabinet to stay unchanged for s.quiet (so that the daemon
// has seen the debounced doors and updated the display), within
// s.busyTimeout.
func (s *Server) settle(ctx context.Context) error {
	start := time.Now()
	err := waitFor(ctx, s.busyTimeout, func() bool { return !s.daemon.Busy() && s.cab.Settled() })
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("%w after %v", errBusy, s.busyTimeout)
	}
	if err != nil {
		return err
	}
	err = waitFor(ctx, max(s.busyTimeout-time.Since(start), 0), func() bool {
		return time.Since(s.cab.LastChange()) >= s.quiet
	})
	if errors.Is(err, errTimeout) {
		return nil // a display that keeps changing (a countdown) is fine
	}
	return err
}

// errTimeout: waitFor timed out.
var errTimeout = errors.New("timeout")

// waitFor polls cond every millisecond until it holds, the timeout passes
// (errTimeout) or ctx is done.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	if cond() {
		return nil
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			if cond() {
				return nil
			}
			return errTimeout
		case <-tick.C:
			if cond() {
				return nil
			}
		}
	}
}

// compartmentNumber returns the {n} of the path, or answers 404.
func (s *Server) compartmentNumber(w http.ResponseWriter, r *http.Request) (int, bool) {
	n, err := strconv.Atoi(r.PathValue("n"))
	if err == nil {
		_, err = s.cab.Compartment(n)
	}
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no compartment %q", r.PathValue("n")))
		return 0, false
	}
	return n, true
}

func (s *Server) handleDoor(w http.ResponseWriter, r *http.Request) {
	n, ok := s.compartmentNumber(w, r)
	if !ok {
		return
	}
	var body struct {
		Action string `json:"action"`
	}
	if !decode(w, r, &body) {
		return
	}
	var act func(int) error
	switch body.Action {
	case "close":
		act = s.cab.CloseDoor
	case "open":
		act = s.cab.OpenDoor
	case "force":
		act = s.cab.ForceDoor
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid action %q: want close, open or force", body.Action))
		return
	}
	s.act(w, n, act(n))
}

func (s *Server) handleParcel(w http.ResponseWriter, r *http.Request) {
	n, ok := s.compartmentNumber(w, r)
	if !ok {
		return
	}
	var body struct {
		Present *bool `json:"present"`
	}
	if !decode(w, r, &body) {
		return
	}
	if body.Present == nil {
		writeError(w, http.StatusBadRequest, `"present" (true or false) is missing`)
		return
	}
	s.act(w, n, s.cab.SetParcel(n, *body.Present))
}

func (s *Server) handleFault(w http.ResponseWriter, r *http.Request) {
	n, ok := s.compartmentNumber(w, r)
	if !ok {
		return
	}
	var body struct {
		Fault string `json:"fault"`
	}
	if !decode(w, r, &body) {
		return
	}
	f, err := simulator.ParseFault(body.Fault)
	if err != nil {
		names := make([]string, 0, 5)
		for _, f := range simulator.Faults() {
			names = append(names, string(f))
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid fault %q: want one of %s", body.Fault, strings.Join(names, ", ")))
		return
	}
	s.act(w, n, s.cab.SetFault(n, f))
}

// act answers a compartment action: the compartment, or the error.
func (s *Server) act(w http.ResponseWriter, n int, err error) {
	switch {
	case err == nil:
	case errors.Is(err, simulator.ErrNoCompartment):
		writeError(w, http.StatusNotFound, err.Error())
		return
	case errors.Is(err, simulator.ErrLatched), errors.Is(err, simulator.ErrDoorClosed):
		writeError(w, http.StatusConflict, err.Error())
		return
	case errors.Is(err, simulator.ErrUnknownFault):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	default:
		s.log.Error("api: compartment action", "compartment", n, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	c, err := s.cab.Compartment(n)
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.compartment(c))
}

// decode reads a JSON body into v, or answers 400.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the JSON value")
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
