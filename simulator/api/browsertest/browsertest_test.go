package browsertest

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"
)

const testPage = `<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>t</title></head>
<body>
<button id="b" onclick="window.clicks = (window.clicks || 0) + 1">click me</button>
<button id="off" disabled>off</button>
<div id="cover-me"><button id="covered">under</button></div>
<div style="position:fixed; top:0; left:0; width:100vw; height:3000px; pointer-events:auto; display:none" id="overlay"></div>
<input id="in" value="old">
<select id="sel" onchange="window.chosen = this.value"><option value="a">A</option><option value="b">B</option></select>
<div style="height: 2000px"></div>
<button id="far" onclick="window.far = true">far below</button>
</body></html>`

func TestBrowser(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(testPage))
	}))
	defer srv.Close()

	b := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := b.NewPage(ctx, 800, 600)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Navigate(ctx, srv.URL); err != nil {
		t.Fatal(err)
	}

	var n int
	if err := p.Eval(ctx, "1 + 2", &n); err != nil || n != 3 {
		t.Fatalf("1 + 2 = %d, %v", n, err)
	}
	var s string
	if err := p.Eval(ctx, `new Promise((ok) => setTimeout(() => ok("later"), 10))`, &s); err != nil || s != "later" {
		t.Fatalf("promise: %q, %v", s, err)
	}
	if err := p.Eval(ctx, `undefined`, &s); err != nil {
		t.Fatalf("undefined: %v", err)
	}
	if err := p.Eval(ctx, `(() => { throw new Error("boom") })()`, nil); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("exception: %v", err)
	}

	for range 2 {
		if err := p.Click(ctx, "#b"); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Eval(ctx, "window.clicks", &n); err != nil || n != 2 {
		t.Fatalf("clicks %d, %v", n, err)
	}
	if err := p.Click(ctx, "#far"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, "window.far"); err != nil {
		t.Fatal(err)
	}
	for sel, want := range map[string]string{"#off": "disabled", "#nothing": "no element", "#covered": "covered by div#overlay"} {
		if sel == "#covered" {
			if err := p.Eval(ctx, `document.getElementById("overlay").style.display = "block"`, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Click(ctx, sel); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("click %s: %v, want an error with %q", sel, err, want)
		}
	}
	if err := p.Eval(ctx, `document.getElementById("overlay").style.display = "none"`, nil); err != nil {
		t.Fatal(err)
	}

	if err := p.Type(ctx, "#in", "new text"); err != nil {
		t.Fatal(err)
	}
	if err := p.Eval(ctx, `document.getElementById("in").value`, &s); err != nil || s != "new text" {
		t.Fatalf("input %q, %v", s, err)
	}
	if err := p.Eval(ctx, `document.addEventListener("keydown", (e) => { window.keys = (window.keys || "") + e.key + ","; }); document.activeElement.blur()`, nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"7", "#", "Enter", "Escape"} {
		if err := p.Press(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Eval(ctx, "window.keys", &s); err != nil || s != "7,#,Enter,Escape," {
		t.Fatalf("keys %q, %v", s, err)
	}
	if err := p.Press(ctx, "F13"); err == nil {
		t.Fatal("pressed an unknown key")
	}
	if err := p.Select(ctx, "#sel", "b"); err != nil {
		t.Fatal(err)
	}
	if err := p.Eval(ctx, "window.chosen", &s); err != nil || s != "b" {
		t.Fatalf("chosen %q, %v", s, err)
	}
	if err := p.Select(ctx, "#sel", "z"); err == nil {
		t.Fatal("selected a missing option")
	}

	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	err = p.WaitFor(short, `window.never`)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "window.never") {
		t.Fatalf("WaitFor: %v", err)
	}

	if err := p.Eval(ctx, `setTimeout(() => { throw new Error("uncaught") }); console.error("bad", 42); 0`, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitFor(ctx, `new Promise((ok) => setTimeout(() => ok(true), 50))`); err != nil {
		t.Fatal(err)
	}
	errs := strings.Join(p.Errors(), "\n")
	if !strings.Contains(errs, "uncaught") || !strings.Contains(errs, "console.error: bad 42") {
		t.Fatalf("errors: %q", errs)
	}

	for _, full := range []bool{false, true} {
		data, err := p.Screenshot(ctx, full)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w != 800 || (full && h < 2000) || (!full && h != 600) {
			t.Fatalf("full %v: screenshot %dx%d", full, w, h)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Eval(ctx, "1", nil); !errors.Is(err, errClosed) {
		t.Fatalf("Eval on a closed tab: %v", err)
	}

	// Close ends Chromium and every process it started (zygotes,
	// renderers, GPU and network services), and removes its profile.
	line, err := chromedp.CallBrowser(b.ctx, browser.GetBrowserCommandLine, cdp.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	var profile string
	for _, arg := range line.Arguments {
		if dir, ok := strings.CutPrefix(arg, "--user-data-dir="); ok {
			profile = dir
		}
	}
	if _, err := os.Stat(profile); err != nil {
		t.Fatalf("profile %q: %v", profile, err)
	}
	tree := processTree(t, chromedp.FromContext(b.ctx).Browser.Process().Pid)
	if len(tree) < 3 {
		t.Fatalf("Chromium runs %d processes: want the browser and its children", len(tree))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for pid, start := range tree {
		if s, ok := procStat(pid); ok && s.start == start && s.state != "Z" {
			t.Errorf("process %d of Chromium is still running after Close", pid)
		}
	}
	if _, err := os.Stat(profile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the profile is left behind: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.NewPage(ctx, 10, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("NewPage after Close: %v", err)
	}
}

type stat struct {
	state, start string
	ppid         int
}

// procStat reads a process's state, parent and start time from /proc.
func procStat(pid int) (stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, false
	}
	_, after, _ := strings.Cut(string(b), ") ") // the name may hold spaces
	f := strings.Fields(after)                  // state ppid ... starttime (the 20th)
	if len(f) < 20 {
		return stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	return stat{state: f[0], ppid: ppid, start: f[19]}, true
}

// processTree returns root and its live descendants with their start times.
func processTree(t *testing.T, root int) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	all := map[int]stat{}
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if s, ok := procStat(pid); ok && s.state != "Z" {
				all[pid] = s
			}
		}
	}
	tree := map[int]string{root: all[root].start}
	for grew := true; grew; {
		grew = false
		for pid, s := range all {
			if _, in := tree[pid]; !in {
				if _, parentIn := tree[s.ppid]; parentIn {
					tree[pid] = s.start
					grew = true
				}
			}
		}
	}
	return tree
}
