// Package browsertest drives a headless Chromium from Go tests through the
// Chrome DevTools Protocol (CDP), with no dependency but a WebSocket client:
// start the browser, open a page, navigate, evaluate JavaScript, click and
// type as a person would, and take screenshots.
//
//	b := browsertest.Start(t)          // fails the test when Chromium is missing
//	p, err := b.NewPage(ctx, 1280, 900)
//	err = p.Navigate(ctx, srv.URL)
//	err = p.Click(ctx, `button[data-key="1"]`)
//	err = p.WaitFor(ctx, `document.querySelector("#lcd").textContent.includes("Code")`)
//
// Chromium is found as $CHROMIUM, else as chromium, chromium-browser,
// google-chrome or google-chrome-stable on $PATH. On Debian and Ubuntu:
// apt-get install chromium.
package browsertest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// ErrNoChromium: no Chromium binary was found.
var ErrNoChromium = errors.New("no Chromium found: install it (apt-get install chromium) or set $CHROMIUM to its path")

// Binary returns the Chromium binary to run: $CHROMIUM when set, else the
// first of chromium, chromium-browser, google-chrome, google-chrome-stable
// on $PATH. The error wraps ErrNoChromium.
func Binary() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("%w ($CHROMIUM=%s: %v)", ErrNoChromium, p, err)
		}
		return path, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", ErrNoChromium
}

// Browser is a running headless Chromium and its DevTools connection.
type Browser struct {
	cmd     *exec.Cmd
	conn    *conn
	exited  chan struct{} // closed when the main process has exited
	exitErr error         // cmd.Wait's result, set before exited is closed

	stderrDone chan struct{} // closed when Chromium's stderr reaches EOF
	stderrMu   sync.Mutex
	stderr     []string // the last lines Chromium wrote, for diagnostics

	closeOnce sync.Once
	closeErr  error
}

const (
	startTimeout = 20 * time.Second
	maxStderr    = 50 // lines kept
)

// Start starts a headless Chromium with a fresh profile in a temporary
// folder, connects to it, and kills it (and every process it started) in
// t.Cleanup. The test fails (it does not skip) when Chromium is missing or
// does not start.
func Start(t testing.TB) *Browser {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	profile := t.TempDir() // registered before Close: removed after Chromium is gone
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	b, err := Launch(ctx, bin, profile)
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Logf("browsertest: closing Chromium: %v", err)
		}
	})
	return b
}

// Launch starts the Chromium binary bin headless with its profile in the
// folder profile and connects to it. Close it when done.
func Launch(ctx context.Context, bin, profile string) (*Browser, error) {
	cmd := exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--no-default-browser-check",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--hide-scrollbars", "--mute-audio",
		"--user-data-dir="+profile, "--remote-debugging-port=0", "about:blank")
	cmd.Stdout = io.Discard
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = pw
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	pw.Close() // Chromium and its children hold the write end

	b := &Browser{cmd: cmd, stderrDone: make(chan struct{}), exited: make(chan struct{})}
	wsURL := make(chan string, 1)
	go b.readStderr(pr, wsURL)
	go func() {
		b.exitErr = cmd.Wait()
		close(b.exited)
	}()

	var url string
	select {
	case url = <-wsURL:
	case <-b.exited:
		b.kill() // what it started, if anything
		return nil, fmt.Errorf("%s exited before listening (%v):\n%s", bin, b.exitErr, b.StderrTail())
	case <-ctx.Done():
		b.kill()
		return nil, fmt.Errorf("%s did not print its DevTools address: %w\n%s", bin, ctx.Err(), b.StderrTail())
	}
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		b.kill()
		return nil, fmt.Errorf("connecting to %s: %w", url, err)
	}
	b.conn = newConn(ws)
	return b, nil
}

// readStderr keeps Chromium's last lines, sends the DevTools address on
// wsURL once, and closes b.stderrDone at EOF (when Chromium and all its
// children are gone).
func (b *Browser) readStderr(r *os.File, wsURL chan<- string) {
	defer close(b.stderrDone)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		if !sent {
			if _, after, ok := strings.Cut(line, "DevTools listening on "); ok {
				wsURL <- strings.TrimSpace(after)
				sent = true
			}
		}
		b.stderrMu.Lock()
		if len(b.stderr) == maxStderr {
			b.stderr = append(b.stderr[:0], b.stderr[1:]...)
		}
		b.stderr = append(b.stderr, line)
		b.stderrMu.Unlock()
	}
}

// StderrTail returns the last lines Chromium wrote on its standard error.
func (b *Browser) StderrTail() string {
	b.stderrMu.Lock()
	defer b.stderrMu.Unlock()
	return strings.Join(b.stderr, "\n")
}

func (b *Browser) waitStderr() {
	select {
	case <-b.stderrDone:
	case <-time.After(5 * time.Second):
	}
}

// kill kills Chromium's process group and waits for it.
func (b *Browser) kill() {
	killProcessGroup(b.cmd.Process)
	select {
	case <-b.exited:
	case <-time.After(5 * time.Second):
	}
	killProcessGroup(b.cmd.Process) // children that outlived the main process
	b.waitStderr()
}

// Close asks Chromium to quit, kills what remains of it, and waits until
// every process it started is gone. It is safe to call more than once.
func (b *Browser) Close() error {
	b.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = b.conn.call(ctx, "", "Browser.close", nil, nil)
		cancel()
		select {
		case <-b.exited:
		case <-time.After(3 * time.Second):
			b.closeErr = errors.New("chromium did not quit: killed")
		}
		b.kill()
		b.conn.close()
		select {
		case <-b.stderrDone:
		default:
			b.closeErr = errors.Join(b.closeErr, errors.New("a Chromium process still holds its standard error"))
		}
	})
	return b.closeErr
}
