package browsertest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
)

// Page is one browser tab.
type Page struct {
	b       *Browser
	target  string
	session string

	loads chan struct{} // one value per load event

	mu     sync.Mutex
	errors []string // JavaScript exceptions and console errors, guarded by mu
}

// NewPage opens a blank tab with a viewport of width×height CSS pixels.
func (b *Browser) NewPage(ctx context.Context, width, height int) (*Page, error) {
	var created struct {
		TargetID string `json:"targetId"`
	}
	if err := b.conn.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &created); err != nil {
		return nil, err
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	err := b.conn.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": created.TargetID, "flatten": true}, &attached)
	if err != nil {
		return nil, err
	}
	p := &Page{b: b, target: created.TargetID, session: attached.SessionID, loads: make(chan struct{}, 16)}
	b.conn.handle(p.session, p.event)
	for _, m := range []string{"Page.enable", "Runtime.enable"} {
		if err := p.call(ctx, m, nil, nil); err != nil {
			return nil, err
		}
	}
	if err := p.SetViewport(ctx, width, height); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Page) call(ctx context.Context, method string, params, result any) error {
	return p.b.conn.call(ctx, p.session, method, params, result)
}

// event receives the page's events from the read loop; it must not block.
func (p *Page) event(method string, params json.RawMessage) {
	switch method {
	case "Page.loadEventFired":
		select {
		case p.loads <- struct{}{}:
		default:
		}
	case "Runtime.exceptionThrown":
		var e struct {
			ExceptionDetails exceptionDetails `json:"exceptionDetails"`
		}
		if json.Unmarshal(params, &e) == nil {
			p.addError("exception: " + e.ExceptionDetails.String())
		}
	case "Runtime.consoleAPICalled":
		var e struct {
			Type string         `json:"type"`
			Args []remoteObject `json:"args"`
		}
		if json.Unmarshal(params, &e) == nil && (e.Type == "error" || e.Type == "assert") {
			parts := make([]string, len(e.Args))
			for i, a := range e.Args {
				parts[i] = a.String()
			}
			p.addError("console." + e.Type + ": " + strings.Join(parts, " "))
		}
	}
}

func (p *Page) addError(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errors = append(p.errors, s)
}

// Errors returns the uncaught JavaScript exceptions and console.error
// messages of the page so far.
func (p *Page) Errors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errors...)
}

// remoteObject is a CDP Runtime.RemoteObject.
type remoteObject struct {
	Type        string          `json:"type"`
	Subtype     string          `json:"subtype,omitempty"`
	Value       json.RawMessage `json:"value,omitempty"`
	Description string          `json:"description,omitempty"`
}

func (o remoteObject) String() string {
	if o.Description != "" {
		return o.Description
	}
	var s string
	if json.Unmarshal(o.Value, &s) == nil {
		return s
	}
	if len(o.Value) > 0 {
		return string(o.Value)
	}
	return o.Type
}

// exceptionDetails is a CDP Runtime.ExceptionDetails.
type exceptionDetails struct {
	Text       string        `json:"text"`
	Line       int           `json:"lineNumber"`
	Column     int           `json:"columnNumber"`
	URL        string        `json:"url"`
	Exception  *remoteObject `json:"exception"`
	StackTrace *struct {
		CallFrames []struct {
			FunctionName string `json:"functionName"`
			URL          string `json:"url"`
			Line         int    `json:"lineNumber"`
		} `json:"callFrames"`
	} `json:"stackTrace"`
}

func (e exceptionDetails) String() string {
	msg := e.Text
	if e.Exception != nil {
		msg = e.Exception.String()
	}
	if e.URL != "" {
		msg += fmt.Sprintf(" (%s:%d:%d)", e.URL, e.Line+1, e.Column+1)
	}
	return msg
}

// SetViewport sets the page's viewport to width×height CSS pixels at a
// device scale factor of 1.
func (p *Page) SetViewport(ctx context.Context, width, height int) error {
	return p.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil)
}

// Navigate loads url and waits for its load event.
func (p *Page) Navigate(ctx context.Context, url string) error {
	for len(p.loads) > 0 {
		<-p.loads
	}
	var res struct {
		ErrorText string `json:"errorText"`
	}
	if err := p.call(ctx, "Page.navigate", map[string]any{"url": url}, &res); err != nil {
		return err
	}
	if res.ErrorText != "" {
		return fmt.Errorf("navigating to %s: %s", url, res.ErrorText)
	}
	select {
	case <-p.loads:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("navigating to %s: no load event: %w", url, ctx.Err())
	}
}

// Eval evaluates the JavaScript expression expr in the page, awaits it
// when it is a promise, and decodes its value (as JSON) into out unless out
// is nil. An exception thrown by expr is returned as an error.
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result           remoteObject      `json:"result"`
		ExceptionDetails *exceptionDetails `json:"exceptionDetails"`
	}
	err := p.call(ctx, "Runtime.evaluate", map[string]any{
		"expression": expr, "awaitPromise": true, "returnByValue": true, "userGesture": true}, &res)
	if err != nil {
		return err
	}
	if res.ExceptionDetails != nil {
		return fmt.Errorf("evaluating %s: %s", abbrev(expr), res.ExceptionDetails)
	}
	if out == nil {
		return nil
	}
	v := res.Result.Value
	if len(v) == 0 {
		v = json.RawMessage("null") // undefined
	}
	if err := json.Unmarshal(v, out); err != nil {
		return fmt.Errorf("evaluating %s: decoding %s: %w", abbrev(expr), v, err)
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

// WaitFor evaluates expr every 20 ms until its value is truthy or ctx is
// done (the error then names expr and its last value). An exception thrown
// by expr ends the wait with that error; an evaluation the browser could
// not run (the page was navigating) is tried again.
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
		var cdpErr *cdpError
		switch {
		case err == nil && got.OK:
			return nil
		case err == nil:
			last = fmt.Sprintf("%q", got.V)
		case errors.As(err, &cdpErr):
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

// point is the middle of an element, in CSS pixels of the viewport.
type point struct {
	X     float64 `json:"x"`
	Y     float64 `json:"y"`
	Error string  `json:"error"`
}

// locate scrolls the first element matching selector into view and
// returns its middle, after checking that it is visible, enabled and not
// covered by another element.
func (p *Page) locate(ctx context.Context, selector string) (point, error) {
	sel, _ := json.Marshal(selector)
	js := `(() => {
  const e = document.querySelector(` + string(sel) + `);
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
	var pt point
	if err := p.Eval(ctx, js, &pt); err != nil {
		return pt, err
	}
	if pt.Error != "" {
		return pt, fmt.Errorf("%s: %s", selector, pt.Error)
	}
	return pt, nil
}

// Click clicks the middle of the first element matching selector with
// the mouse, as a person would: the element must be visible, enabled and
// on top.
func (p *Page) Click(ctx context.Context, selector string) error {
	pt, err := p.locate(ctx, selector)
	if err != nil {
		return fmt.Errorf("click: %w", err)
	}
	x, y := math.Round(pt.X), math.Round(pt.Y)
	for _, ev := range []map[string]any{
		{"type": "mouseMoved", "x": x, "y": y},
		{"type": "mousePressed", "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1},
		{"type": "mouseReleased", "x": x, "y": y, "button": "left", "buttons": 0, "clickCount": 1},
	} {
		if err := p.call(ctx, "Input.dispatchMouseEvent", ev, nil); err != nil {
			return fmt.Errorf("click %s: %w", selector, err)
		}
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
		return p.call(ctx, "Input.dispatchKeyEvent", map[string]any{"type": "keyDown", "key": "Delete", "code": "Delete", "windowsVirtualKeyCode": 46}, nil)
	}
	return p.call(ctx, "Input.insertText", map[string]any{"text": text}, nil)
}

// Press presses and releases one key on the keyboard, sent to whatever
// has the focus: a printable character ("7", "#") or Enter, Escape, Tab or
// Backspace.
func (p *Page) Press(ctx context.Context, key string) error {
	down := map[string]any{"type": "keyDown", "key": key}
	switch key {
	case "Enter":
		down["code"], down["windowsVirtualKeyCode"], down["text"] = "Enter", 13, "\r"
	case "Escape":
		down["code"], down["windowsVirtualKeyCode"] = "Escape", 27
	case "Tab":
		down["code"], down["windowsVirtualKeyCode"] = "Tab", 9
	case "Backspace":
		down["code"], down["windowsVirtualKeyCode"] = "Backspace", 8
	default:
		if len([]rune(key)) != 1 {
			return fmt.Errorf("press: unknown key %q", key)
		}
		down["text"], down["unmodifiedText"] = key, key
	}
	if err := p.call(ctx, "Input.dispatchKeyEvent", down, nil); err != nil {
		return fmt.Errorf("press %s: %w", key, err)
	}
	up := map[string]any{"type": "keyUp", "key": key}
	if c, ok := down["code"]; ok {
		up["code"], up["windowsVirtualKeyCode"] = c, down["windowsVirtualKeyCode"]
	}
	if err := p.call(ctx, "Input.dispatchKeyEvent", up, nil); err != nil {
		return fmt.Errorf("press %s: %w", key, err)
	}
	return nil
}

// Select chooses the option of value in the <select> matching selector
// and fires its input and change events, as a person choosing it would.
func (p *Page) Select(ctx context.Context, selector, value string) error {
	if _, err := p.locate(ctx, selector); err != nil {
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
	params := map[string]any{"format": "png"}
	if full {
		var m struct {
			Content struct {
				Width  float64 `json:"width"`
				Height float64 `json:"height"`
			} `json:"cssContentSize"`
		}
		if err := p.call(ctx, "Page.getLayoutMetrics", nil, &m); err != nil {
			return nil, err
		}
		params["captureBeyondViewport"] = true
		params["clip"] = map[string]any{"x": 0, "y": 0, "width": math.Ceil(m.Content.Width),
			"height": math.Ceil(m.Content.Height), "scale": 1}
	}
	var res struct {
		Data string `json:"data"`
	}
	if err := p.call(ctx, "Page.captureScreenshot", params, &res); err != nil {
		return nil, err
	}
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		return nil, fmt.Errorf("screenshot: %w", err)
	}
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		return nil, errors.New("screenshot: not a PNG")
	}
	return png, nil
}

// Close closes the tab.
func (p *Page) Close(ctx context.Context) error {
	p.b.conn.handle(p.session, nil)
	return p.b.conn.call(ctx, "", "Target.closeTarget", map[string]any{"targetId": p.target}, nil)
}
