package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/openlocker/locker/controller/fsm"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
)

// SelfTestResult is one compartment's result of a self-test.
type SelfTestResult struct {
	Compartment int    `json:"compartment"`
	Result      string `json:"result"` // ok, lock_fault, skipped
	Reason      string `json:"reason,omitempty"`
}

// selfTest is a self-test in progress; it lives on the loop.
type selfTest struct {
	actor    string
	total    int
	pending  map[int]bool
	results  []SelfTestResult
	progress func(SelfTestResult)
	done     chan []SelfTestResult
	starting bool // the releases are still being queued
}

// ErrSelfTestRunning: a self-test is already in progress.
var ErrSelfTestRunning = errors.New("controller: a self-test is already running")

// SelfTest releases each lock in turn — hal's power budget staggers them —
// and checks that its door sensor follows. With all false only empty
// compartments (free or reserved, door closed, nothing in progress, not
// disabled) are tested and the others reported skipped; all is for a
// technician at the cabinet (a service code). The doors that opened stay
// ajar for the technician to close. progress, if set, is called for each
// result as it comes, on the controller's loop: it must not block.
func (c *Controller) SelfTest(ctx context.Context, all bool, actor string, progress func(SelfTestResult)) ([]SelfTestResult, error) {
	var done chan []SelfTestResult
	var err error
	if derr := c.do(ctx, func() { done, err = c.startSelfTest(ctx, all, actor, progress) }); derr != nil {
		return nil, derr
	}
	if err != nil {
		return nil, err
	}
	select {
	case res := <-done:
		return res, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Controller) startSelfTest(ctx context.Context, all bool, actor string, progress func(SelfTestResult)) (chan []SelfTestResult, error) {
	if c.selftest != nil {
		return nil, ErrSelfTestRunning
	}
	var comps []store.Compartment
	if err := c.st.View(ctx, func(tx *store.Tx) error {
		var err error
		comps, err = tx.Compartments()
		return err
	}); err != nil {
		return nil, err
	}
	t := &selfTest{actor: actor, total: len(comps), pending: map[int]bool{}, progress: progress,
		done: make(chan []SelfTestResult, 1), starting: true}
	c.selftest = t
	for _, sc := range comps {
		empty := (sc.State == "free" || sc.State == "reserved") && !sc.DoorOpen && !sc.Disabled
		if sc.Session.Active() || (!all && !empty) {
			t.add(SelfTestResult{Compartment: sc.Number, Result: "skipped", Reason: "not empty or in use"})
			continue
		}
		if sc.DoorOpen {
			t.add(SelfTestResult{Compartment: sc.Number, Result: "skipped", Reason: "door open"})
			continue
		}
		t.pending[sc.Number] = true
		s := store.Session{Action: "selftest", Actor: actor}
		if err := c.release(ctx, sc.Number, s, false); err != nil && t.pending[sc.Number] {
			delete(t.pending, sc.Number)
			t.add(SelfTestResult{Compartment: sc.Number, Result: "lock_fault", Reason: err.Error()})
		}
	}
	t.starting = false
	c.showSelfTest()
	c.maybeFinishSelfTest(ctx)
	return t.done, nil
}

func (t *selfTest) add(r SelfTestResult) {
	t.results = append(t.results, r)
	if t.progress != nil {
		t.progress(r)
	}
}

// selfTestResult notes the result of a release that belongs to the self-test.
func (c *Controller) selfTestResult(ctx context.Context, n int, err error) {
	t := c.selftest
	if t == nil || !t.pending[n] {
		return
	}
	delete(t.pending, n)
	r := SelfTestResult{Compartment: n, Result: "ok"}
	if err != nil {
		r.Result, r.Reason = "lock_fault", err.Error()
	}
	t.add(r)
	c.showSelfTest()
	c.maybeFinishSelfTest(ctx)
}

func (c *Controller) showSelfTest() {
	t := c.selftest
	c.msgUntil = c.now().Add(c.opts.MessageTime)
	c.show(c.text(msgSelfTest, fmt.Sprintf("%d/%d", len(t.results), t.total)))
}

// maybeFinishSelfTest records the summary once every result is in.
func (c *Controller) maybeFinishSelfTest(ctx context.Context) {
	t := c.selftest
	if t == nil || t.starting || len(t.pending) > 0 {
		return
	}
	c.selftest = nil
	var ok, skipped int
	var faults []string
	for _, r := range t.results {
		switch r.Result {
		case "ok":
			ok++
		case "skipped":
			skipped++
		default:
			faults = append(faults, two(r.Compartment))
		}
	}
	summary := fmt.Sprintf("%d ok, %d fault, %d skipped", ok, len(faults), skipped)
	content := "Self-test: " + summary
	if len(faults) > 0 {
		content += " (faults: " + strings.Join(faults, " ") + ")"
	}
	err := c.update(ctx, func(tx *store.Tx) error {
		return c.record(tx, wire.Trace{Type: fsm.SelfTestDone.String(), Actor: t.actor, Content: content})
	})
	if err != nil {
		c.log.Error("self-test result not recorded", "err", err)
	}
	c.message(msgSelfTestDone, fmt.Sprintf("%d ok %d fault", ok, len(faults)))
	t.done <- t.results
}
