package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/simulator/logtest"
)

// fakeDaemon is a tiny locker daemon at pin level: it scans the keypad
// matrix, shows what is typed on the display, and on "1234#" pulses the
// lock of compartment 1.
type fakeDaemon struct {
	cab     *simulator.Cabinet
	lcd     *lcdWriter
	handled atomic.Uint64
	busy    atomic.Bool
	pulses  sync.WaitGroup

	mu    sync.Mutex
	typed string // every key handled
	code  string // the code being typed
}

func (d *fakeDaemon) LockerID() string    { return "SIM01" }
func (d *fakeDaemon) KeysHandled() uint64 { return d.handled.Load() }
func (d *fakeDaemon) Busy() bool          { return d.busy.Load() }
func (d *fakeDaemon) CompartmentState(n int) string {
	return map[bool]string{true: "occupied", false: "free"}[n == 2]
}

func (d *fakeDaemon) typedKeys() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.typed
}

func (d *fakeDaemon) handle(key byte) {
	d.mu.Lock()
	d.typed += string(key)
	switch key {
	case '#':
		if d.code == "1234" {
			d.busy.Store(true)
			lock := d.cab.ByName("LOCK01")
			d.pulses.Add(1)
			go func() {
				defer d.pulses.Done()
				_ = lock.Out(gpio.High)
				time.Sleep(100 * time.Millisecond)
				_ = lock.Out(gpio.Low)
				d.busy.Store(false)
			}()
			d.lcd.show("Door 01 open", "")
		} else {
			d.lcd.show("Wrong code", "")
		}
		d.code = ""
	case '*':
		d.code = ""
		d.lcd.show("Enter code", "")
	default:
		d.code += string(key)
		d.lcd.show("Enter code", "Code: "+strings.Repeat("*", len(d.code)))
	}
	d.mu.Unlock()
	d.handled.Add(1)
}

// scan drives one row low at a time and returns the first key held, or 0.
func (d *fakeDaemon) scan() byte {
	kp := d.cab.Wiring().Keypad
	var key byte
	for r := range kp.Rows {
		for i, name := range kp.Rows {
			_ = d.cab.ByName(name).Out(gpio.Level(i != r))
		}
		for c, name := range kp.Cols {
			if key == 0 && d.cab.ByName(name).Read() == gpio.Low {
				key = kp.Layout[r][c]
			}
		}
	}
	return key
}

// run scans the keypad until ctx is done; a key counts after 2 equal scans.
func (d *fakeDaemon) run(ctx context.Context) {
	for _, name := range d.cab.Wiring().Keypad.Cols {
		_ = d.cab.ByName(name).In(gpio.PullUp, gpio.NoEdge)
	}
	var last, down byte
	same := 0
	for ctx.Err() == nil {
		k := d.scan()
		if k == last {
			same++
		} else {
			last, same = k, 1
		}
		if same == 2 && k != down {
			down = k
			if k != 0 {
				d.handle(k)
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// lcdWriter writes an HD44780 in 4-bit mode.
type lcdWriter struct {
	rs, e gpio.PinIO
	d     [4]gpio.PinIO
	cols  int
}

func newLCDWriter(c *simulator.Cabinet) *lcdWriter {
	d := c.Wiring().Display
	w := &lcdWriter{rs: c.ByName(d.RS), e: c.ByName(d.E), cols: d.Cols}
	for i, name := range d.Data {
		w.d[i] = c.ByName(name)
	}
	for _, n := range []byte{0x3, 0x3, 0x3, 0x2} {
		w.nibble(false, n)
	}
	for _, b := range []byte{0x28, 0x0c, 0x06, 0x01} {
		w.byte(false, b)
	}
	return w
}

func (w *lcdWriter) nibble(rs bool, n byte) {
	_ = w.rs.Out(gpio.Level(rs))
	for i, p := range w.d {
		_ = p.Out(gpio.Level(n&(1<<i) != 0))
	}
	_ = w.e.Out(gpio.High)
	_ = w.e.Out(gpio.Low)
}

func (w *lcdWriter) byte(rs bool, b byte) {
	w.nibble(rs, b>>4)
	w.nibble(rs, b&0x0f)
}

func (w *lcdWriter) show(lines ...string) {
	for r, l := range lines {
		w.byte(false, 0x80|[]byte{0x00, 0x40}[r])
		l += strings.Repeat(" ", max(0, w.cols-len(l)))
		for i := range w.cols {
			w.byte(true, l[i])
		}
	}
}

type fixture struct {
	cab     *simulator.Cabinet
	daemon  *fakeDaemon
	central *fakeCentral
	logs    *logtest.Buffer // the server's log
	srv     *Server
	http    *httptest.Server
	stop    func() // stops the daemon's scanner
}

// fakeCentral records what it is asked to send.
type fakeCentral struct {
	mu       sync.Mutex
	grants   []wire.GrantsBody
	commands []wire.Command
	err      error     // returned by both when set
	sending  func(any) // when set, runs with each body or command before the send returns
}

func (c *fakeCentral) SendGrants(_ context.Context, body wire.GrantsBody) error {
	c.mu.Lock()
	if c.err != nil {
		defer c.mu.Unlock()
		return c.err
	}
	c.grants = append(c.grants, body)
	sending := c.sending
	c.mu.Unlock()
	if sending != nil {
		sending(body)
	}
	return nil
}

func (c *fakeCentral) SendCommand(_ context.Context, cmd wire.Command) error {
	c.mu.Lock()
	if c.err != nil {
		defer c.mu.Unlock()
		return c.err
	}
	c.commands = append(c.commands, cmd)
	sending := c.sending
	c.mu.Unlock()
	if sending != nil {
		sending(cmd)
	}
	return nil
}

func (c *fakeCentral) sent() ([]wire.GrantsBody, []wire.Command) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.grants), slices.Clone(c.commands)
}

func (c *fakeCentral) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

var _ Central = (*fakeCentral)(nil)

// newFixture runs the default cabinet, the fake daemon (scanning unless
// noScanner) and the API.
func newFixture(t *testing.T, noScanner bool) *fixture {
	t.Helper()
	w, err := simulator.DefaultWiring()
	if err != nil {
		t.Fatal(err)
	}
	cab, err := simulator.New(w, simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDaemon{cab: cab}
	d.lcd = newLCDWriter(cab)
	d.lcd.show("Enter code", "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if noScanner {
		close(done)
	} else {
		go func() {
			defer close(done)
			d.run(ctx)
		}()
	}
	central := &fakeCentral{}
	logs := &logtest.Buffer{}
	srv := New(Options{Cabinet: cab, Daemon: d, Central: central,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	srv.keyTimeout = 300 * time.Millisecond
	srv.heartbeat = 30 * time.Millisecond
	hs := httptest.NewServer(srv.Handler())
	f := &fixture{cab: cab, daemon: d, central: central, logs: logs, srv: srv, http: hs, stop: func() { cancel(); <-done }}
	t.Cleanup(func() {
		hs.Close()
		f.stop()
		d.pulses.Wait()
		_ = cab.Halt()
	})
	return f
}

// do sends a request and decodes the JSON answer.
func (f *fixture) do(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, f.http.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: content type %q: %s", method, path, ct, data)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s %s: %v: %s", method, path, err, data)
	}
	return resp.StatusCode, v
}

func TestGetCabinet(t *testing.T) {
	f := newFixture(t, true)
	code, v := f.do(t, "GET", "/api/cabinet", "")
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if got := slices.Sorted(mapKeys(v)); !reflect.DeepEqual(got, []string{"compartments", "display", "locker_id"}) {
		t.Fatalf("keys %v", got)
	}
	if v["locker_id"] != "SIM01" || !reflect.DeepEqual(v["display"], []any{"Enter code", ""}) {
		t.Fatalf("cabinet %v", v)
	}
	comps := v["compartments"].([]any)
	if len(comps) != 24 {
		t.Fatalf("%d compartments", len(comps))
	}
	want := []map[string]any{
		{"number": 1.0, "size": "S", "state": "free", "door": "closed", "latched": true, "parcel": false, "fault": "none"},
		{"number": 2.0, "size": "S", "state": "occupied", "door": "closed", "latched": true, "parcel": false, "fault": "none"},
	}
	for i, w := range want {
		if !reflect.DeepEqual(comps[i], w) {
			t.Errorf("compartment %d: %v", i+1, comps[i])
		}
	}
	if last := comps[23].(map[string]any); last["number"] != 24.0 || last["size"] != "XL" {
		t.Errorf("compartment 24: %v", last)
	}
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestKeypad(t *testing.T) {
	f := newFixture(t, false)
	code, v := f.do(t, "POST", "/api/keypad", `{"keys": "1234#"}`)
	if code != http.StatusOK || !reflect.DeepEqual(v, map[string]any{"display": []any{"Door 01 open", ""}}) {
		t.Fatalf("status %d: %v", code, v)
	}
	// The answer came after the release: the door is ajar, the daemon idle.
	if c, _ := f.cab.Compartment(1); c.Door != simulator.DoorOpen || f.daemon.Busy() {
		t.Fatalf("compartment 1 %+v, busy %v", c, f.daemon.Busy())
	}
	if got := f.daemon.typedKeys(); got != "1234#" {
		t.Fatalf("typed %q", got)
	}
	// Repeated keys are pressed twice.
	code, v = f.do(t, "POST", "/api/keypad", `{"keys": "11"}`)
	if code != http.StatusOK || !reflect.DeepEqual(v, map[string]any{"display": []any{"Enter code", "Code: **"}}) {
		t.Fatalf("status %d: %v", code, v)
	}
	code, v = f.do(t, "POST", "/api/keypad", `{"keys": "9#"}`)
	if code != http.StatusOK || !reflect.DeepEqual(v, map[string]any{"display": []any{"Wrong code", ""}}) {
		t.Fatalf("status %d: %v", code, v)
	}
	if got := f.daemon.typedKeys(); got != "1234#119#" {
		t.Fatalf("typed %q", got)
	}
}

func TestKeypadSerialised(t *testing.T) {
	f := newFixture(t, false)
	var wg sync.WaitGroup
	for _, keys := range []string{"123", "456", "789"} {
		wg.Go(func() {
			resp, err := http.Post(f.http.URL+"/api/keypad", "application/json", strings.NewReader(`{"keys":"`+keys+`"}`))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d", keys, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	got := f.daemon.typedKeys()
	for _, keys := range []string{"123", "456", "789"} {
		if !strings.Contains(got, keys) {
			t.Fatalf("typed %q: the requests were interleaved", got)
		}
	}
}

func TestKeypadErrors(t *testing.T) {
	f := newFixture(t, true)
	for _, body := range []string{`{"keys": "12x#"}`, `{"keys": ""}`, `{}`, `{"keys": "1", "more": 1}`, `{"keys": 12}`, `not json`, `{"keys":"1"} {}`, `{"keys": "` + strings.Repeat("1", 65) + `"}`} {
		if code, v := f.do(t, "POST", "/api/keypad", body); code != http.StatusBadRequest || v["error"] == nil {
			t.Errorf("%s: status %d %v", body, code, v)
		}
	}
	// Nobody scans: 504, and the key is let go.
	code, v := f.do(t, "POST", "/api/keypad", `{"keys": "5"}`)
	if code != http.StatusGatewayTimeout || !strings.Contains(fmt.Sprint(v["error"]), "keypad not scanned") {
		t.Fatalf("status %d %v", code, v)
	}
	if k := f.daemon.scan(); k != 0 {
		t.Fatalf("key %c still held", k)
	}
	if code, _ := f.do(t, "GET", "/api/keypad", ""); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /api/keypad: %d", code)
	}
}

func TestKeypadWithoutDaemonOrKeypad(t *testing.T) {
	w, err := simulator.DefaultWiring()
	if err != nil {
		t.Fatal(err)
	}
	cab, err := simulator.New(w, simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Options{Cabinet: cab}).Handler())
	defer srv.Close()
	f := &fixture{http: srv}
	if code, _ := f.do(t, "POST", "/api/keypad", `{"keys": "1"}`); code != http.StatusServiceUnavailable {
		t.Fatalf("no daemon: %d", code)
	}
	if code, v := f.do(t, "GET", "/api/cabinet", ""); code != 200 || v["locker_id"] != "" || v["compartments"].([]any)[0].(map[string]any)["state"] != "unknown" {
		t.Fatalf("no daemon: %d %v", code, v)
	}

	w.Keypad = nil
	cab2, err := simulator.New(w, simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(New(Options{Cabinet: cab2, Daemon: &fakeDaemon{}}).Handler())
	defer srv2.Close()
	f2 := &fixture{http: srv2}
	if code, _ := f2.do(t, "POST", "/api/keypad", `{"keys": "1"}`); code != http.StatusConflict {
		t.Fatalf("no keypad: %d", code)
	}
}

func TestCompartmentActions(t *testing.T) {
	f := newFixture(t, true)
	steps := []struct {
		path, body string
		code       int
		want       map[string]any // compartment fields to check, or error substring under "error"
	}{
		{"/api/compartments/3/door", `{"action": "open"}`, 409, map[string]any{"error": "latched"}},
		{"/api/compartments/3/parcel", `{"present": true}`, 409, map[string]any{"error": "closed"}},
		{"/api/compartments/3/door", `{"action": "force"}`, 200, map[string]any{"number": 3.0, "size": "S", "state": "free", "door": "open", "latched": false, "parcel": false, "fault": "none"}},
		{"/api/compartments/3/door", `{"action": "open"}`, 200, map[string]any{"door": "open"}},
		{"/api/compartments/3/parcel", `{"present": true}`, 200, map[string]any{"parcel": true}},
		{"/api/compartments/3/parcel", `{}`, 400, map[string]any{"error": "present"}},
		{"/api/compartments/3/parcel", `{"present": "yes"}`, 400, map[string]any{"error": "JSON"}},
		{"/api/compartments/3/door", `{"action": "close"}`, 200, map[string]any{"door": "closed", "latched": true, "parcel": true}},
		{"/api/compartments/3/door", `{"action": "slam"}`, 400, map[string]any{"error": "slam"}},
		{"/api/compartments/3/door", `{"action": "close"`, 400, map[string]any{"error": "JSON"}},
		{"/api/compartments/3/fault", `{"fault": "jammed_lock"}`, 200, map[string]any{"fault": "jammed_lock"}},
		{"/api/compartments/3/fault", `{"fault": "melted"}`, 400, map[string]any{"error": "melted"}},
		{"/api/compartments/3/fault", `{"fault": "none"}`, 200, map[string]any{"fault": "none"}},
		{"/api/compartments/2/door", `{"action": "force"}`, 200, map[string]any{"number": 2.0, "state": "occupied"}},
		{"/api/compartments/0/door", `{"action": "force"}`, 404, map[string]any{"error": ""}},
		{"/api/compartments/25/door", `{"action": "force"}`, 404, map[string]any{"error": ""}},
		{"/api/compartments/x/door", `{"action": "force"}`, 404, map[string]any{"error": ""}},
		{"/api/compartments/25/parcel", `{"present": true}`, 404, map[string]any{"error": ""}},
		{"/api/compartments/25/fault", `{"fault": "none"}`, 404, map[string]any{"error": ""}},
		{"/api/compartments/3/window", `{}`, 404, map[string]any{"error": ""}},
		{"/api/nothing", ``, 404, map[string]any{"error": ""}},
	}
	for _, s := range steps {
		code, v := f.do(t, "POST", s.path, s.body)
		if code != s.code {
			t.Fatalf("%s %s: status %d, want %d: %v", s.path, s.body, code, s.code, v)
		}
		for k, want := range s.want {
			if k == "error" {
				if msg, ok := v["error"].(string); !ok || !strings.Contains(msg, want.(string)) || len(v) != 1 {
					t.Fatalf("%s %s: %v, want an error with %q", s.path, s.body, v, want)
				}
				continue
			}
			if v[k] != want {
				t.Fatalf("%s %s: %s = %v, want %v (%v)", s.path, s.body, k, v[k], want, v)
			}
		}
		if code == 200 && len(v) != 7 {
			t.Fatalf("%s: compartment JSON %v", s.path, v)
		}
	}
}

func TestWebPage(t *testing.T) {
	f := newFixture(t, true)
	for path, want := range map[string]string{"/": "<title>", "/app.js": "EventSource", "/style.css": "grid"} {
		resp, err := http.Get(f.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, %d bytes", path, resp.StatusCode, len(body))
		}
	}
}

type sseEvent struct{ event, data string }

// openEvents connects to /api/events and returns the events as they come.
func openEvents(t *testing.T, ctx context.Context, url string) <-chan sseEvent {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", url+"/api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent, 100)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		var ev sseEvent
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				ch <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, ": "):
				ev.event = "comment"
			case strings.HasPrefix(line, "event: "):
				ev.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return ch
}

// next returns the next event of kind event for which ok holds.
func next(t *testing.T, ch <-chan sseEvent, event string, ok func(data string) bool) string {
	t.Helper()
	timeout := time.After(3 * time.Second)
	for {
		select {
		case ev, open := <-ch:
			if !open {
				t.Fatalf("stream ended waiting for %s", event)
			}
			if ev.event == event && ok(ev.data) {
				return ev.data
			}
		case <-timeout:
			t.Fatalf("no %s event", event)
		}
	}
}

func TestEvents(t *testing.T) {
	f := newFixture(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.srv.PublishTrace([]byte(`{"seq": 1, "type": "boot"}`)) // replayed on connect
	events := openEvents(t, ctx, f.http.URL)

	data := next(t, events, "cabinet", func(string) bool { return true })
	var cab Cabinet
	if err := json.Unmarshal([]byte(data), &cab); err != nil || len(cab.Compartments) != 24 || cab.LockerID != "SIM01" {
		t.Fatalf("first event: %v %s", err, data)
	}
	next(t, events, "trace", func(d string) bool { return d == `{"seq":1,"type":"boot"}` })

	if code, _ := f.do(t, "POST", "/api/compartments/7/door", `{"action": "force"}`); code != 200 {
		t.Fatalf("force: %d", code)
	}
	next(t, events, "cabinet", func(d string) bool {
		var cab Cabinet
		return json.Unmarshal([]byte(d), &cab) == nil && cab.Compartments[6].Door == "open"
	})

	f.srv.PublishTrace([]byte("{\n  \"seq\": 2,\n  \"type\": \"door_forced\",\n  \"compartment\": 7\n}"))
	next(t, events, "trace", func(d string) bool { return d == `{"seq":2,"type":"door_forced","compartment":7}` })
	f.srv.PublishMQTT("lockers/SIM01/status", []byte(`{"state":"online"}`))
	next(t, events, "mqtt", func(d string) bool {
		return strings.HasPrefix(d, `{"topic":"lockers/SIM01/status","payload":{"state":"online"},"time":"`)
	})
	f.srv.PublishMQTT("raw", []byte("not json"))
	next(t, events, "mqtt", func(d string) bool { return strings.Contains(d, `"payload":"not json"`) })
	next(t, events, "comment", func(string) bool { return true }) // heartbeat
}

func TestEventsNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	f := newFixture(t, true)
	var cancels []context.CancelFunc
	var streams []<-chan sseEvent
	for range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		ch := openEvents(t, ctx, f.http.URL)
		next(t, ch, "cabinet", func(string) bool { return true })
		streams = append(streams, ch)
	}
	if n := f.srv.streams.Load(); n != 5 {
		t.Fatalf("%d streams", n)
	}
	for i, cancel := range cancels {
		cancel()
		for range streams[i] { // drain until the reader ends
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for f.srv.streams.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams still served", f.srv.streams.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.srv.PublishTrace([]byte(`{}`)) // nobody listens: must not block
	f.http.Close()
	http.DefaultClient.CloseIdleConnections()
	f.stop()
	_ = f.cab.Halt()
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
