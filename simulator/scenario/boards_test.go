package scenario

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/hal/wiring"
)

// TestBoardDownStaysInTheLog: a board that goes down and never comes back
// is in the log (so in a golden) by its name, with no recovery after it:
// a scenario cannot pass over a board that did not come back. (The log
// used to leave every board's down and up out.)
func TestBoardDownStaysInTheLog(t *testing.T) {
	w, err := wiring.Load("../../testdata/wiring/kerong-48.yaml")
	if err != nil {
		t.Fatal(err)
	}
	steps, err := Parse([]byte("board BUS1 2 no_answer\nexpect state 33 free\n"), "down.txt")
	if err != nil {
		t.Fatal(err)
	}
	lines, err := Run(context.Background(), steps, Options{Dir: t.TempDir(), Wiring: w, Verbose: func(s string) { t.Log(s) }})
	if err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(lines, "\n"))
	}
	want := []string{"1 started", `2 sensor_fault reason="board BUS1/2: bus BUS1 board 2: rs485: no reply"`}
	if !slices.Equal(lines, want) {
		t.Errorf("log:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// TestScenarioBusTimings: scenarios run the simulated buses with longer
// reply timings than the product's (a loaded machine), unless the wiring
// sets its own, and leave the caller's wiring as it was.
func TestScenarioBusTimings(t *testing.T) {
	w, err := wiring.Load("../../testdata/wiring/kerong-48.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if b := w.RS485[0]; b.ReplyTimeout != 0 || b.ReplySilence != 0 {
		t.Fatalf("kerong-48.yaml sets reply timings (%v, %v): the product's defaults are to be shown there", b.ReplyTimeout, b.ReplySilence)
	}
	w.RS485 = append(w.RS485, w.RS485[0])
	w.RS485[1].ReplyTimeout = time.Second
	got := testTimings(w)
	if b := got.RS485[0]; b.ReplyTimeout != ScenarioReplyTimeout || b.ReplySilence != ScenarioReplySilence {
		t.Errorf("bus 1: %v, %v", b.ReplyTimeout, b.ReplySilence)
	}
	if b := got.RS485[1]; b.ReplyTimeout != time.Second || b.ReplySilence != ScenarioReplySilence {
		t.Errorf("bus 2 (own reply_timeout 1s): %v, %v", b.ReplyTimeout, b.ReplySilence)
	}
	if w.RS485[0].ReplyTimeout != 0 {
		t.Error("the caller's wiring was changed")
	}
}

func TestParseBoardStep(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"board BUS1 x none", `s.txt:1: "x" is not a board address`},
		{"board BUS1 0 melted", `s.txt:1: "melted": want one of`},
		{"board BUS1 0", "s.txt:1: board takes 3 to 3 words, got 2"},
	} {
		if _, err := Parse([]byte(tc.text), "s.txt"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.text, err, tc.want)
		}
	}
}
