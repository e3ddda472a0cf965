package controller

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/clocktest"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/hal"
)

// soakCabinet is the fake cabinet of the long-running benchmarks
// (BenchmarkSoak, BenchmarkWear): it remembers only the last release and
// when it came (the moment the coil would fire), so that years of parcels
// do not pile up in the benchmark's own memory.
type soakCabinet struct {
	*fakeCabinet
	relMu   stdsync.Mutex
	relN    int       // the last compartment released
	relAt   time.Time // when (wall clock)
	relSeen int       // releases so far
}

func (s *soakCabinet) Release(n int) error {
	at := time.Now()
	if n < 1 || n > len(s.comps) {
		return hal.ErrNoCompartment
	}
	s.relMu.Lock()
	s.relN, s.relAt = n, at
	s.relSeen++
	s.relMu.Unlock()
	return nil
}

func (s *soakCabinet) lastRelease() (n int, at time.Time, count int) {
	s.relMu.Lock()
	defer s.relMu.Unlock()
	return s.relN, s.relAt, s.relSeen
}

// soakRig is a controller on a database file with a soakCabinet, a fake
// clock and housekeeping run by hand (its own ticker never fires), for a
// benchmark (testing.TB). It plays the MQTT link's part of the outbox: the
// events each step records are acknowledged in one batch after the step,
// as sync/client's BatchAcker does within AckDelay.
type soakRig struct {
	tb     testing.TB
	ctx    context.Context
	cancel context.CancelFunc
	path   string
	st     *store.Store
	cab    *soakCabinet
	clock  *clocktest.Clock
	c      *Controller
	done   chan error
	logger *slog.Logger // nil: the controller's default (discard)

	mu      stdsync.Mutex
	pending []int64        // seqs recorded and not yet acknowledged
	counts  map[string]int // traces by type
}

func newSoakRig(tb testing.TB, path, sizes string, now time.Time, logger *slog.Logger) *soakRig {
	tb.Helper()
	r := &soakRig{tb: tb, path: path, cab: &soakCabinet{fakeCabinet: newFakeCabinet(sizes)},
		clock: clocktest.New(now), logger: logger, counts: map[string]int{}}
	if _, err := r.start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.stop)
	return r
}

// start opens the store and starts a controller on it, and returns the
// time from the open to Ready (the cold start).
func (r *soakRig) start() (time.Duration, error) {
	r.ctx, r.cancel = context.WithCancel(context.Background())
	t0 := time.Now()
	st, err := store.Open(r.ctx, r.path)
	if err != nil {
		return 0, err
	}
	r.st = st
	r.cab.events = make(chan hal.Event)
	c, err := New(Options{LockerID: lockerID, Store: st, Cabinet: r.cab, Clock: r.clock, Tick: 1 << 62,
		Logger: r.logger, OnTrace: r.onTrace})
	if err != nil {
		return 0, err
	}
	r.c = c
	r.done = make(chan error, 1)
	go func() { r.done <- c.Run(r.ctx) }()
	select {
	case <-c.Ready():
	case err := <-r.done:
		return 0, fmt.Errorf("controller stopped: %w", err)
	}
	return time.Since(t0), nil
}

func (r *soakRig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.st.Close()
	r.cancel = nil
}

// restart closes the store and the controller and starts them again; it
// returns the cold start time.
func (r *soakRig) restart() time.Duration {
	r.tb.Helper()
	r.stop()
	d, err := r.start()
	if err != nil {
		r.tb.Fatal(err)
	}
	return d
}

func (r *soakRig) onTrace(p []byte) {
	var tr struct {
		Seq  int64  `json:"seq"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal(p, &tr); err != nil {
		r.tb.Errorf("trace is not JSON: %v", err)
		return
	}
	r.mu.Lock()
	r.pending = append(r.pending, tr.Seq)
	r.counts[tr.Type]++
	r.mu.Unlock()
}

// ack acknowledges every event recorded so far, in one batch.
func (r *soakRig) ack() {
	r.tb.Helper()
	r.mu.Lock()
	seqs := r.pending
	r.pending = nil
	r.mu.Unlock()
	if err := r.c.AckEvents(r.ctx, seqs); err != nil {
		r.tb.Fatal(err)
	}
}

func (r *soakRig) count(typ string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[typ]
}

// event hands ev to the controller and waits until it has handled it.
func (r *soakRig) event(ev hal.Event) {
	r.tb.Helper()
	select {
	case r.cab.events <- ev:
	case <-time.After(5 * time.Second):
		r.tb.Fatal("controller does not take events")
	}
	if err := r.c.do(r.ctx, func() {}); err != nil {
		r.tb.Fatal(err)
	}
}

func (r *soakRig) keys(s string) {
	for i := 0; i < len(s); i++ {
		r.event(hal.Event{Kind: hal.KeyPressed, Key: s[i]})
	}
}

// code types code and '#', and returns the compartment released (0: none)
// and the time from the '#' to the coil.
func (r *soakRig) code(code string) (int, time.Duration) {
	r.tb.Helper()
	r.keys(code)
	_, _, before := r.cab.lastRelease()
	start := time.Now()
	r.event(hal.Event{Kind: hal.KeyPressed, Key: '#'})
	n, at, after := r.cab.lastRelease()
	if after == before {
		return 0, 0
	}
	// hal reports the end of every release (pulse and confirmation).
	r.event(hal.Event{Kind: hal.LockReleased, Compartment: n, At: r.clock.Now()})
	return n, at.Sub(start)
}

func (r *soakRig) door(n int, open bool) {
	r.cab.mu.Lock()
	r.cab.door[n] = open
	r.cab.mu.Unlock()
	r.event(hal.Event{Kind: hal.DoorChanged, Compartment: n, On: open, At: r.clock.Now()})
}

func (r *soakRig) parcel(n int, present bool) {
	r.cab.mu.Lock()
	r.cab.parcel[n] = present
	r.cab.mu.Unlock()
	r.event(hal.Event{Kind: hal.ParcelChanged, Compartment: n, On: present, At: r.clock.Now()})
}

// visit is a person at compartment n after its release: the door opens,
// the parcel goes in (put) or out, the door closes, on the fake clock.
func (r *soakRig) visit(n int, put bool) {
	r.clock.Advance(4 * time.Second)
	r.door(n, true)
	r.clock.Advance(12 * time.Second)
	r.parcel(n, put)
	r.clock.Advance(5 * time.Second)
	r.door(n, false)
}

func (r *soakRig) tick() {
	r.tb.Helper()
	if err := r.c.do(r.ctx, func() { r.c.housekeeping(r.ctx) }); err != nil {
		r.tb.Fatal(err)
	}
}

// rows counts the rows of the grants, commands and outbox tables through a
// connection of its own.
func (r *soakRig) rows() (grants, commands, outbox int64) {
	r.tb.Helper()
	db, err := sql.Open("sqlite", "file:"+r.path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		r.tb.Fatal(err)
	}
	defer db.Close()
	for _, q := range []struct {
		table string
		n     *int64
	}{{"grants", &grants}, {"commands", &commands}, {"outbox", &outbox}} {
		if err := db.QueryRow("SELECT count(*) FROM " + q.table).Scan(q.n); err != nil {
			r.tb.Fatal(err)
		}
	}
	return grants, commands, outbox
}

// memory is the Go heap in use after a collection, and the process's
// resident set once the freed memory went back to the system.
func memory() (heapInuse, rss uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, procStatus("VmRSS")
}

// procStatus reads a "kB" line of /proc/self/status, in bytes (0 when it
// cannot: not Linux).
func procStatus(key string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return n * 1024
	}
	return 0
}

// procIO reads a field of /proc/self/io: the kernel's count of this
// process's I/O (write_bytes: bytes it caused to be sent to storage).
func procIO(tb testing.TB, key string) int64 {
	tb.Helper()
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Fatalf("the kernel's I/O count: %v", err)
	}
	for line := range bytes.Lines(data) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && string(k) == key {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatalf("/proc/self/io has no %s", key)
	return 0
}

// countingWriter counts the bytes written to it.
type countingWriter struct {
	mu stdsync.Mutex
	n  int64
	w  io.Writer // optional copy
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.n += int64(len(p))
	c.mu.Unlock()
	if c.w != nil {
		return c.w.Write(p)
	}
	return len(p), nil
}

func (c *countingWriter) bytes() int64 { c.mu.Lock(); defer c.mu.Unlock(); return c.n }
