package browsertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// Page is one browser tab. Its methods take the context that bounds the
// step (the test's deadline); the tab lives until Close or the browser's
// end.
type Page struct {
	ctx    context.Context // chromedp's context of the tab
	cancel context.CancelFunc

	mu     sync.Mutex
	errors []string // JavaScript exceptions and console errors, guarded by mu
}

// errClosed: the tab or the browser was closed.
var errClosed = errors.New("browsertest: the page is closed")

// run runs a on the tab, ended by ctx (the step's deadline) or by the
// end of the tab, whichever comes first.
func run[T any](ctx context.Context, p *Page, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(p.ctx, func() { cancel(errClosed) })
	defer stop()
	v, err := chromedp.Run(tabValues{ctx, p.ctx}, a)
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(err, cause) {
		err = fmt.Errorf("%w (%w)", err, cause)
	}
	return v, err
}

// tabValues is a context ended as its own and holding the values of the
// tab's chromedp context, where chromedp finds the tab.
type tabValues struct {
	context.Context
	tab context.Context
}

func (c tabValues) Value(key any) any { return c.tab.Value(key) }

func (p *Page) do(ctx context.Context, steps ...chromedp.Action[chromedp.Void]) error {
	_, err := run(ctx, p, chromedp.Steps(steps...))
	return err
}

// event is called by chromedp for each event of the tab, in order; it must
// not block.
func (p *Page) event(ev any) {
	var msg string
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = (&chromedp.ExceptionError{ExceptionDetails: e.ExceptionDetails}).Error()
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError && e.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		parts := make([]string, len(e.Args))
		for i, a := range e.Args {
			var s string
			switch {
			case a.Description != "":
				parts[i] = a.Description
			case json.Unmarshal(a.Value, &s) == nil:
				parts[i] = s
			default:
				parts[i] = string(a.Value)
			}
		}
		msg = "console." + string(e.Type) + ": " + strings.Join(parts, " ")
	default:
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errors = append(p.errors, msg)
}

// Errors returns the uncaught JavaScript exceptions and console.error
// messages of the page so far.
func (p *Page) Errors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errors...)
}

// SetViewport sets the page's viewport to width×height CSS pixels at a
// device scale factor of 1.
func (p *Page) SetViewport(ctx context.Context, width, height int) error {
	return p.do(ctx, chromedp.EmulateViewport(int64(width), int64(height)))
}

// Navigate loads url and waits for its load event.
func (p *Page) Navigate(ctx context.Context, url string) error {
	if err := p.do(ctx, chromedp.Navigate(url)); err != nil {
		return fmt.Errorf("navigating to %s: %w", url, err)
	}
	return nil
}

// Eval evaluates the JavaScript expression expr in the page, awaits it
// when it is a promise, and decodes its value (as JSON) into out unless out
// is nil (undefined and null leave out as it is). An exception thrown by
// expr is returned as an error.
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	raw, err := run(ctx, p, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise,
		func(e *runtime.EvaluateParams) { e.UserGesture = new(true) }))
	if err != nil {
		return fmt.Errorf("evaluating %s: %w", abbrev(expr), err)
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("evaluating %s: decoding %s: %w", abbrev(expr), raw, err)
	}
	return nil
}

func abbrev(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// WaitFor evaluates expr (awaited when it is a promise) every 20 ms until
// its value is truthy or ctx is done (the error then names expr and its
// last value). An exception thrown by expr ends the wait with that error;
// an evaluation the browser could not run (the page was navigating) is
// tried again.
func (p *Page) WaitFor(ctx context.Context, expr string) error {
	wrapped := "(async () => { const v = await (" + expr + "); return {ok: !!v, v: String(v)}; })()"
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	last := "nothing yet"
	for {
		var got struct {
			OK bool   `json:"ok"`
			V  string `json:"v"`
		}
		err := p.Eval(ctx, wrapped, &got)
		var protoErr *cdproto.Error
		switch {
		case err == nil && got.OK:
			return nil
		case err == nil:
			last = fmt.Sprintf("%q", got.V)
		case errors.As(err, &protoErr):
			last = err.Error()
		case ctx.Err() == nil:
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s (last %s): %w", abbrev(expr), last, ctx.Err())
		case <-tick.C:
		}
	}
}

// locateJS scrolls the first element matching the selector (%s, as JSON)
// into view and returns its middle, after checking that a person could
// click it: visible, enabled and not covered by another element.
const locateJS = `(() => {
  const e = document.querySelector(%s);
  if (!e) return {error: "no element matches"};
  e.scrollIntoView({block: "center", inline: "center"});
  const r = e.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) return {error: "the element is not visible"};
  if (e.disabled) return {error: "the element is disabled"};
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const hit = document.elementFromPoint(x, y);
  if (!hit) return {error: "the element is outside the viewport"};
  if (hit !== e && !e.contains(hit)) {
    const name = hit.tagName.toLowerCase() + (hit.id ? "#" + hit.id : "") +
      (hit.className && typeof hit.className === "string" ? "." + hit.className.trim().split(/\s+/).join(".") : "");
    return {error: "the element is covered by " + name};
  }
  return {x, y};
})()`

func (p *Page) locate(ctx context.Context, selector string) (x, y float64, err error) {
	sel, _ := json.Marshal(selector)
	var pt struct {
		X, Y  float64
		Error string
	}
	if err := p.Eval(ctx, fmt.Sprintf(locateJS, sel), &pt); err != nil {
		return 0, 0, err
	}
	if pt.Error != "" {
		return 0, 0, fmt.Errorf("%s: %s", selector, pt.Error)
	}
	return math.Round(pt.X), math.Round(pt.Y), nil
}

// Click clicks the middle of the first element matching selector with
// the mouse, as a person would: the element must be visible, enabled and
// on top.
func (p *Page) Click(ctx context.Context, selector string) error {
	x, y, err := p.locate(ctx, selector)
	if err != nil {
		return fmt.Errorf("click: %w", err)
	}
	if err := p.do(ctx, chromedp.MouseEvent(chromedp.MouseMoved, x, y), chromedp.MouseClickXY(x, y)); err != nil {
		return fmt.Errorf("click %s: %w", selector, err)
	}
	return nil
}

// Type clicks the field matching selector, selects what it holds, and
// types text over it.
func (p *Page) Type(ctx context.Context, selector, text string) error {
	if err := p.Click(ctx, selector); err != nil {
		return err
	}
	sel, _ := json.Marshal(selector)
	if err := p.Eval(ctx, `document.querySelector(`+string(sel)+`).select()`, nil); err != nil {
		return fmt.Errorf("type: %w", err)
	}
	if text == "" {
		return p.do(ctx, chromedp.KeyEvent(kb.Delete))
	}
	return p.do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, input.InsertText, input.InsertTextParams{Text: text})
		return err
	}))
}

// keys are the named keys Press knows besides printable characters.
var keys = map[string]string{"Enter": kb.Enter, "Escape": kb.Escape, "Tab": kb.Tab, "Backspace": kb.Backspace}

// Press presses and releases one key on the keyboard, sent to whatever
// has the focus: a printable character ("7", "#") or Enter, Escape, Tab or
// Backspace.
func (p *Page) Press(ctx context.Context, key string) error {
	k, ok := keys[key]
	if !ok && len([]rune(key)) == 1 {
		k, ok = key, true
	}
	if !ok {
		return fmt.Errorf("press: unknown key %q", key)
	}
	if err := p.do(ctx, chromedp.KeyEvent(k)); err != nil {
		return fmt.Errorf("press %s: %w", key, err)
	}
	return nil
}

// Select chooses the option of value in the <select> matching selector
// and fires its input and change events, as a person choosing it would.
func (p *Page) Select(ctx context.Context, selector, value string) error {
	if _, _, err := p.locate(ctx, selector); err != nil {
		return fmt.Errorf("select: %w", err)
	}
	sel, _ := json.Marshal(selector)
	val, _ := json.Marshal(value)
	js := `(() => {
  const e = document.querySelector(` + string(sel) + `);
  if (![...e.options].some((o) => o.value === ` + string(val) + `)) return false;
  e.focus();
  e.value = ` + string(val) + `;
  e.dispatchEvent(new Event("input", {bubbles: true}));
  e.dispatchEvent(new Event("change", {bubbles: true}));
  return true;
})()`
	var ok bool
	if err := p.Eval(ctx, js, &ok); err != nil {
		return fmt.Errorf("select: %w", err)
	}
	if !ok {
		return fmt.Errorf("select %s: no option %q", selector, value)
	}
	return nil
}

// Screenshot returns a PNG of the viewport, or of the whole page when
// full is set.
func (p *Page) Screenshot(ctx context.Context, full bool) ([]byte, error) {
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100) // quality 100: a PNG
	}
	png, err := run(ctx, p, shot)
	if err != nil {
		return nil, fmt.Errorf("screenshot: %w", err)
	}
	return png, nil
}

// Close closes the tab.
func (p *Page) Close() error {
	return chromedp.Cancel(p.ctx)
}
