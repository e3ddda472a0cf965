package main

// Helpers of the kill -9 crash test (crash_test.go): a locker-sim process
// that can be killed at any moment, a central MQTT client with a persistent
// session that checks the trace stream as it arrives, and a read-only look
// into the SQLite file of a dead process.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/simulator/logtest"
	"github.com/openlocker/locker/sync/central"
	_ "modernc.org/sqlite" // the "sqlite" driver, for the read-only look
)

// errKilled: the process was killed while a request was under way (the
// expected end of every crash-test iteration).
var errKilled = errors.New("locker-sim was killed")

// crashProc is one run of locker-sim.
type crashProc struct {
	cmd     *exec.Cmd
	base    string
	logs    *logtest.Buffer
	done    chan struct{}
	started time.Time
	killed  atomic.Bool
	hc      *http.Client
}

func spawnSim(t *testing.T, bin, broker, data string, args ...string) *crashProc {
	t.Helper()
	addr := freeAddr(t)
	p := &crashProc{base: "http://" + addr, logs: &logtest.Buffer{}, done: make(chan struct{}),
		hc: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	p.cmd = exec.Command(bin, append([]string{"-broker", broker, "-data", data, "-http", addr}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	return p
}

// kill sends SIGKILL (once) and waits until the process is gone.
func (p *crashProc) kill() {
	p.killAsync()
	<-p.done
}

// stop sends SIGINT, as systemd's stop does, and waits until the process is
// gone; one still running after 10 s is killed.
func (p *crashProc) stop() {
	if p.killed.CompareAndSwap(false, true) {
		p.cmd.Process.Signal(os.Interrupt)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// killAsync sends SIGKILL (once) without waiting, as a timer does.
func (p *crashProc) killAsync() {
	if p.killed.CompareAndSwap(false, true) {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
}

func (p *crashProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// call sends a JSON request. Any failure once the kill was sent is errKilled.
func (p *crashProc) call(method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, p.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.hc.Do(req)
	if err != nil {
		if p.killed.Load() {
			return 0, errKilled
		}
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		if p.killed.Load() {
			return 0, errKilled
		}
		return 0, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		if p.killed.Load() {
			return resp.StatusCode, errKilled
		}
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %d %s: %w", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, nil
}

// waitAPI waits until the API answers; an exit before that is an error
// (unless the test killed it).
func (p *crashProc) waitAPI(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var cab cabinetJSON
		if _, err := p.call("GET", "/api/cabinet", nil, &cab); err == nil {
			return nil
		}
		if p.killed.Load() {
			return errKilled
		}
		if p.exited() {
			return errors.New("locker-sim exited at start-up")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("locker-sim did not serve its API within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *crashProc) cabinet() (cabinetJSON, error) {
	var c cabinetJSON
	_, err := p.call("GET", "/api/cabinet", nil, &c)
	return c, err
}

// keys presses keys on the keypad; a code never goes into an error message.
func (p *crashProc) keys(k string) error {
	_, err := p.call("POST", "/api/keypad", map[string]string{"keys": k}, nil)
	if err != nil && !errors.Is(err, errKilled) {
		return fmt.Errorf("keypad (%d keys): %s", len(k), strings.ReplaceAll(err.Error(), k, strings.Repeat("x", len(k))))
	}
	return err
}

func (p *crashProc) door(n int, action string) error {
	_, err := p.call("POST", fmt.Sprintf("/api/compartments/%d/door", n), map[string]string{"action": action}, nil)
	return err
}

func (p *crashProc) parcel(n int, present bool) error {
	_, err := p.call("POST", fmt.Sprintf("/api/compartments/%d/parcel", n), map[string]bool{"present": present}, nil)
	return err
}

// crashCentral is the central server of the crash test: one paho client
// with a persistent session (clean session false, fixed client id),
// subscribed at QoS 1 to the locker's topics before the locker first
// starts. Its handler never blocks: it checks and stores under mu.
type crashCentral struct {
	prefix string
	locker string
	cl     *central.Client

	mu       stdsync.Mutex
	payloads map[string][]byte // event_id → the first payload received
	traces   []wire.Trace
	maxSeq   int64
	received int // trace messages, duplicates included
	dups     int
	problems []string // conflicting payloads, events out of seq order, bad JSON
	acks     map[int64]wire.GrantsAck
	status   []byte // the last status message
	kick     chan struct{}
}

func newCrashCentral(t *testing.T, broker, locker string) *crashCentral {
	t.Helper()
	c := &crashCentral{prefix: "lockers/v1/" + locker + "/", locker: locker, payloads: map[string][]byte{},
		acks: map[int64]wire.GrantsAck{}, kick: make(chan struct{}, 1)}
	c.cl = central.DialTest(t, central.Options{Broker: broker, ClientID: "central-crash", Persistent: true,
		Reconnect: true, MaxReconnectInterval: time.Second, Subscribe: []string{c.prefix + "#"}, OnMessage: c.onMessage})
	return c
}

func (c *crashCentral) onMessage(m central.Message) {
	payload := m.Payload
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m.Topic {
	case c.prefix + "traces":
		c.received++
		var tr wire.Trace
		if err := json.Unmarshal(payload, &tr); err != nil {
			c.problems = append(c.problems, fmt.Sprintf("trace is not JSON: %q", payload))
			return
		}
		if old, ok := c.payloads[tr.EventID]; ok {
			c.dups++
			if !bytes.Equal(old, payload) {
				c.problems = append(c.problems, fmt.Sprintf("event %s received with two payloads:\n  %s\n  %s", tr.EventID, old, payload))
			}
			return
		}
		if tr.EventID != fmt.Sprintf("%s-%d", c.locker, tr.Seq) {
			c.problems = append(c.problems, fmt.Sprintf("event_id %s does not match seq %d", tr.EventID, tr.Seq))
		}
		if tr.Seq != c.maxSeq+1 {
			// Delivery is in seq order: a new event is always the next one.
			c.problems = append(c.problems, fmt.Sprintf("new event seq %d arrived after seq %d: a gap or out of order", tr.Seq, c.maxSeq))
		}
		c.payloads[tr.EventID] = payload
		c.traces = append(c.traces, tr)
		c.maxSeq = max(c.maxSeq, tr.Seq)
	case c.prefix + "grants/ack":
		var ack wire.GrantsAck
		if err := json.Unmarshal(payload, &ack); err != nil {
			c.problems = append(c.problems, fmt.Sprintf("grants ack is not JSON: %q", payload))
			return
		}
		c.acks[ack.IssuedAt.UnixNano()] = ack
	case c.prefix + "status":
		c.status = payload
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *crashCentral) ack(issuedAt int64) (wire.GrantsAck, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.acks[issuedAt]
	return a, ok
}

// sorted returns the distinct traces received, in seq order.
func (c *crashCentral) sorted() []wire.Trace {
	c.mu.Lock()
	out := slices.Clone(c.traces)
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b wire.Trace) int { return int(a.Seq - b.Seq) })
	return out
}

// snapshot returns the counters of what was received.
func (c *crashCentral) snapshot() (maxSeq int64, distinct, received, dups int, problems []string, status []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxSeq, len(c.traces), c.received, c.dups, slices.Clone(c.problems), c.status
}

// waitFor waits until cond holds or the time-out passes.
func (c *crashCentral) waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-c.kick:
		case <-time.After(20 * time.Millisecond):
		case <-deadline.C:
			return cond()
		}
	}
	return true
}

// dbFacts is what the SQLite file of a dead locker-sim says.
type dbFacts struct {
	integrity string
	lastSeq   int64 // -1: no schema yet (killed during the first start)
	outbox    int
}

// readDB opens the database of a dead process read-only (DSN
// file:PATH?mode=ro) and runs PRAGMA integrity_check.
func readDB(ctx context.Context, path string) (dbFacts, error) {
	f := dbFacts{lastSeq: -1}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		f.integrity = "ok"
		return f, nil
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return f, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return f, fmt.Errorf("integrity_check: %w", err)
	}
	var lines []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return f, err
		}
		lines = append(lines, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return f, err
	}
	f.integrity = strings.Join(lines, "; ")
	var tables int
	if err := db.QueryRowContext(ctx,
		"SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('counters', 'outbox')").Scan(&tables); err != nil {
		return f, err
	}
	if tables < 2 {
		return f, nil // killed before the schema was committed
	}
	if err := db.QueryRowContext(ctx, "SELECT MAX(COALESCE((SELECT MAX(seq) FROM outbox), 0), value) FROM counters WHERE name = 'seq'").Scan(&f.lastSeq); err != nil {
		return f, fmt.Errorf("counters: %w", err)
	}
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM outbox").Scan(&f.outbox); err != nil {
		return f, fmt.Errorf("outbox: %w", err)
	}
	return f, nil
}
