// Package browsertest drives a headless Chromium from Go tests with
// chromedp: it finds the browser, starts it the way a test needs it (as
// root in CI, headless, killed with the test), and gives the tests a Page
// that clicks and types as a person would and keeps the page's errors.
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
//
// Firefox has no CDP: StartFirefox drives it over WebDriver BiDi instead
// (firefox.go).
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"
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

// startTimeout bounds the start of Chromium.
const startTimeout = 30 * time.Second

// Browser is a running headless Chromium.
type Browser struct {
	ctx         context.Context // chromedp's context of the browser (and its first tab)
	cancel      context.CancelFunc
	cancelAlloc context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

// Start starts a headless Chromium with a fresh profile and stops it in
// t.Cleanup. The test fails (it does not skip) when Chromium is missing or
// does not start.
func Start(t testing.TB) *Browser {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	b, err := Launch(bin)
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

// Open starts Chromium for t and opens url in a 1280×900 page. It returns
// the page, a context that ends with the test (after timeout at most), and
// must, which fails t with the page's errors when err is not nil.
func Open(t testing.TB, url string, timeout time.Duration) (*Page, context.Context, func(error)) {
	t.Helper()
	b := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	p, err := b.NewPage(ctx, 1280, 900)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\npage errors: %q", err, p.Errors())
		}
	}
	must(p.Navigate(ctx, url))
	return p, ctx, must
}

// Launch starts the Chromium binary bin headless, with a profile in a
// temporary folder that chromedp removes. Close it when done.
//
// The flags are those a test needs: headless, --no-sandbox (CI runs as
// root, and the pages are the test's own), and from chromedp a pipe
// instead of a debugging port and on Linux a
// parent-death signal, so that Chromium dies with the test binary even
// when a test timeout skips the cleanups; Close kills what is left of it.
func Launch(bin string) (*Browser, error) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("hide-scrollbars", true), chromedp.Flag("mute-audio", true),
		chromedp.Flag("disable-dev-shm-usage", false)) // shared memory in /dev/shm, not on /tmp's disk
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &Browser{ctx: ctx, cancel: cancel, cancelAlloc: cancelAlloc}
	// The first call starts Chromium and binds it to ctx: give it no
	// deadline of its own, only a timer that gives up. It opens no tab.
	timer := time.AfterFunc(startTimeout, cancel)
	_, err := chromedp.CallBrowser(ctx, browser.GetVersion, cdp.Empty{})
	timer.Stop()
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	return b, nil
}

// NewPage opens a blank tab with a viewport of width×height CSS pixels.
func (b *Browser) NewPage(ctx context.Context, width, height int) (*Page, error) {
	if err := b.ctx.Err(); err != nil {
		return nil, fmt.Errorf("browsertest: the browser is closed: %w", err)
	}
	tab, cancel := chromedp.NewContext(b.ctx)
	stop := context.AfterFunc(ctx, cancel) // ctx bounds the opening only
	err := chromedp.Do(tab)
	if !stop() || err != nil {
		cancel()
		return nil, fmt.Errorf("opening a tab: %w", errors.Join(err, ctx.Err()))
	}
	p := &Page{ctx: tab, cancel: cancel}
	if err := chromedp.Listen(tab, p.event); err != nil {
		cancel()
		return nil, err
	}
	if err := p.SetViewport(ctx, width, height); err != nil {
		cancel()
		return nil, err
	}
	return p, nil
}

// Close asks Chromium to quit and waits until its processes and its
// profile are gone. It is safe to call more than once.
func (b *Browser) Close() error {
	b.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		b.closeErr = chromedp.Cancel(ctx)
		cancel()
		b.cancel()
		b.cancelAlloc() // waits for the process and the removal of the profile
	})
	return b.closeErr
}
