package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/openlocker/locker/controller"
)

// ControlHandler is the daemon's local control API, for lockerctl:
//
//	GET  /status        the status as published on P/status, plus "connected"
//	GET  /compartments  every compartment as published on P/compartments
//	GET  /outbox?limit=N the events waiting for the broker's acknowledgement
//	POST /selftest      {"all": false}: runs the self-test (all: also compartments
//	                    in use, with "code": a service code); streams one JSON
//	                    result per line as it comes, then {"done": true, …}
//	POST /open          {"compartment": N, "code": "…"}: opens N for a service code
//	GET  /traces        the last 100 traces, one per line; ?follow=1 then streams new ones
//
// It is served on a Unix socket only root (or the daemon's user) can open,
// and under /api/daemon/ by the simulator.
func (d *Daemon) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := d.Controller.Status(r.Context())
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		st.State = "offline"
		if d.Link.Connected() {
			st.State = "online"
		}
		writeJSON(w, st)
	})
	mux.HandleFunc("GET /compartments", func(w http.ResponseWriter, r *http.Request) {
		rep, err := d.Controller.Compartments(r.Context())
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, rep)
	})
	mux.HandleFunc("GET /outbox", func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		if limit <= 0 || limit > 10000 {
			limit = 100
		}
		evs, err := d.Controller.PendingEvents(r.Context(), 0, limit)
		if err != nil {
			httpError(w, http.StatusInternalServerError, err)
			return
		}
		out := []json.RawMessage{}
		for _, e := range evs {
			out = append(out, e.Payload)
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("POST /selftest", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			All  bool   `json:"all"`
			Code string `json:"code"` // a service code, required with all
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1024)).Decode(&req); err != nil {
				httpError(w, http.StatusBadRequest, err)
				return
			}
		}
		actor := "technician"
		if req.All {
			// Compartments that hold parcels are tested only for a
			// technician at the cabinet: a service code in force.
			who, err := d.Controller.CheckServiceCode(r.Context(), req.Code)
			req.Code = ""
			if err != nil {
				httpError(w, http.StatusForbidden, err)
				return
			}
			actor = who
		}
		// Results come on the controller's loop: hand them over without blocking it.
		results := make(chan controller.SelfTestResult, 256)
		done := make(chan error, 1)
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
		defer cancel()
		go func() {
			_, err := d.Controller.SelfTest(ctx, req.All, actor, func(res controller.SelfTestResult) {
				select {
				case results <- res:
				default:
				}
			})
			done <- err
		}()
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		flusher, _ := w.(http.Flusher)
		var ok, faults, skipped int
		for {
			select {
			case res := <-results:
				switch res.Result {
				case "ok":
					ok++
				case "skipped":
					skipped++
				default:
					faults++
				}
				enc.Encode(res)
				if flusher != nil {
					flusher.Flush()
				}
			case err := <-done:
				for len(results) > 0 {
					res := <-results
					enc.Encode(res)
					switch res.Result {
					case "ok":
						ok++
					case "skipped":
						skipped++
					default:
						faults++
					}
				}
				summary := map[string]any{"done": true, "ok": ok, "fault": faults, "skipped": skipped}
				if err != nil {
					summary["error"] = err.Error()
				}
				enc.Encode(summary)
				return
			}
		}
	})
	mux.HandleFunc("POST /open", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Compartment int    `json:"compartment"`
			Code        string `json:"code"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1024)).Decode(&req); err != nil {
			httpError(w, http.StatusBadRequest, err)
			return
		}
		err := d.Controller.ServiceOpen(r.Context(), req.Code, req.Compartment)
		req.Code = ""
		switch {
		case errors.Is(err, controller.ErrNotAuthorized):
			httpError(w, http.StatusForbidden, err)
		case err != nil:
			httpError(w, http.StatusConflict, err)
		default:
			writeJSON(w, map[string]any{"opened": req.Compartment})
		}
	})
	mux.HandleFunc("GET /traces", func(w http.ResponseWriter, r *http.Request) {
		recent, ch, stop := d.hub.follow()
		defer stop()
		w.Header().Set("Content-Type", "application/x-ndjson")
		flusher, _ := w.(http.Flusher)
		line := func(p []byte) { // p is shared with other followers: not appended to
			w.Write(p)
			w.Write([]byte{'\n'})
		}
		for _, p := range recent {
			line(p)
		}
		if r.URL.Query().Get("follow") == "" {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		for {
			select {
			case p := <-ch:
				line(p)
				if flusher != nil {
					flusher.Flush()
				}
			case <-r.Context().Done():
				return
			}
		}
	})
	return mux
}

// serveControl serves the control API on a Unix socket at path (mode 0600)
// until ctx is done.
func (d *Daemon) serveControl(ctx context.Context, path string) error {
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return err
	}
	srv := &http.Server{Handler: d.ControlHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
