package browsertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Firefox is a headless Firefox driven through WebDriver BiDi, the W3C
// protocol Firefox speaks natively on its remote-debugging port: enough to
// load a page, evaluate script in it and wait for a condition.
//
// It is our own because no well-kept Go client of WebDriver BiDi exists:
// chromedp and go-rod speak CDP, which Firefox no longer serves, and
// playwright-go drives its own patched browsers, downloaded at run time.
type Firefox struct {
	cmd     *exec.Cmd
	ws      *websocket.Conn
	context string // the browsing context (tab)

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan bidiReply
}

type bidiReply struct {
	Type   string          `json:"type"` // success, error, event
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
	Msg    string          `json:"message"`
}

// FirefoxBinary finds Firefox: $FIREFOX, then firefox-esr or firefox.
func FirefoxBinary() (string, error) {
	if b := os.Getenv("FIREFOX"); b != "" {
		return b, nil
	}
	for _, name := range []string{"firefox-esr", "firefox"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no Firefox found: install it (apt-get install firefox-esr) or set $FIREFOX")
}

// StartFirefox launches headless Firefox with a fresh profile and opens a
// BiDi session; the test's cleanup stops it. It fails the test (never
// skips) when Firefox is missing.
func StartFirefox(t testing.TB) *Firefox {
	t.Helper()
	bin, err := FirefoxBinary()
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	profile := t.TempDir()
	cmd := exec.Command(bin, "--headless", "--no-remote", "--profile", profile,
		"--remote-debugging-port", strconv.Itoa(port), "about:blank")
	cmd.Env = append(os.Environ(), "MOZ_DISABLE_CONTENT_SANDBOX=1")
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("browsertest: starting Firefox: %v", err)
	}
	f := &Firefox{cmd: cmd, waiting: map[int]chan bidiReply{}}
	t.Cleanup(f.close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		f.ws, _, err = websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/session", port), nil)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("browsertest: Firefox's BiDi endpoint did not answer: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	f.ws.SetReadLimit(32 << 20)
	go f.readLoop()
	if _, err := f.call(ctx, "session.new", map[string]any{"capabilities": map[string]any{}}); err != nil {
		t.Fatalf("browsertest: session.new: %v", err)
	}
	res, err := f.call(ctx, "browsingContext.create", map[string]any{"type": "tab"})
	if err != nil {
		t.Fatalf("browsertest: browsingContext.create: %v", err)
	}
	var created struct {
		Context string `json:"context"`
	}
	if err := json.Unmarshal(res, &created); err != nil || created.Context == "" {
		t.Fatalf("browsertest: browsingContext.create: %s", res)
	}
	f.context = created.Context
	return f
}

func (f *Firefox) readLoop() {
	for {
		_, data, err := f.ws.Read(context.Background())
		if err != nil {
			f.mu.Lock()
			for id, ch := range f.waiting {
				ch <- bidiReply{Type: "error", Error: "closed", Msg: err.Error()}
				delete(f.waiting, id)
			}
			f.mu.Unlock()
			return
		}
		var r bidiReply
		if json.Unmarshal(data, &r) != nil || r.Type == "event" {
			continue
		}
		f.mu.Lock()
		ch := f.waiting[r.ID]
		delete(f.waiting, r.ID)
		f.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

func (f *Firefox) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	f.mu.Lock()
	f.nextID++
	id := f.nextID
	ch := make(chan bidiReply, 1)
	f.waiting[id] = ch
	f.mu.Unlock()
	msg, _ := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err := f.ws.Write(ctx, websocket.MessageText, msg); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.Type == "error" {
			return nil, fmt.Errorf("%s: %s: %s", method, r.Error, r.Msg)
		}
		return r.Result, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Navigate loads url and waits for the page to complete.
func (f *Firefox) Navigate(ctx context.Context, url string) error {
	_, err := f.call(ctx, "browsingContext.navigate", map[string]any{"context": f.context, "url": url, "wait": "complete"})
	return err
}

// Eval evaluates a JavaScript expression (awaiting a promise) and decodes
// its primitive result (boolean, number or string) into out.
func (f *Firefox) Eval(ctx context.Context, expr string, out any) error {
	res, err := f.call(ctx, "script.evaluate", map[string]any{"expression": expr, "awaitPromise": true,
		"target": map[string]any{"context": f.context}})
	if err != nil {
		return err
	}
	var r struct {
		Type   string `json:"type"`
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if r.Type == "exception" {
		return fmt.Errorf("script: %s", r.ExceptionDetails.Text)
	}
	if out == nil || r.Result.Value == nil {
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

// WaitFor polls a JavaScript condition until it is true or ctx ends.
func (f *Firefox) WaitFor(ctx context.Context, expr string) error {
	var last error
	for {
		var ok bool
		if last = f.Eval(ctx, "!!("+expr+")", &ok); last == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %v (last: %v)", abbrev(expr), ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (f *Firefox) close() {
	if f.ws != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		f.call(ctx, "browser.close", map[string]any{})
		cancel()
		f.ws.CloseNow()
	}
	if f.cmd.Process != nil {
		done := make(chan struct{})
		go func() { f.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			killProcessGroup(f.cmd.Process)
			<-done
		}
	}
}
