package api

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/simulator/api/browsertest"
)

// TestPageInFirefox: the page works in Firefox too (WebDriver BiDi): the
// cabinet is drawn, the event stream goes live, the on-screen keypad's
// keys reach the daemon and the door opens in the picture. It needs
// Firefox (apt-get install firefox-esr) and fails without it.
func TestPageInFirefox(t *testing.T) {
	f := newFixture(t, false)
	ff := browsertest.StartFirefox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ff.Navigate(ctx, f.http.URL))
	must(ff.WaitFor(ctx, `document.querySelectorAll("#cabinet .door").length === 24 && document.getElementById("conn").textContent === "live"`))
	must(ff.WaitFor(ctx, `document.getElementById("lcd").dataset.text.startsWith("Enter code")`))
	for _, k := range "1234#" {
		must(ff.Eval(ctx, fmt.Sprintf(`document.querySelector('#keypad [data-key="%c"]').click()`, k), nil))
	}
	must(ff.WaitFor(ctx, `document.getElementById("lcd").dataset.text.startsWith("Door 01 open")`))
	if got := f.daemon.typedKeys(); got != "1234#" {
		t.Fatalf("the daemon got %q", got)
	}
	must(ff.WaitFor(ctx, `document.querySelector('.door[data-n="1"]').dataset.door === "open"`))
	if c, _ := f.cab.Compartment(1); c.Door != simulator.DoorOpen {
		t.Fatalf("compartment 1: %+v", c)
	}
}
