package main

// The fleet benchmark (`locker-sim -fleet N -fleet-bench D`, `make fleet`):
// every locker connected and trading parcels for D, then the traffic stops
// and the idle CPU is measured, then the fleet's own broker is restarted
// and the reconnect curve drawn. It ends with a summary in fixed words that
// `make bench` prints.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// fleetConnectWait is how long the benchmark waits for every locker to
	// connect, after start and after the broker's restart: with the
	// protocol's back-off (at most 5 min), the last locker is back within
	// about 5 min of its first failed attempt.
	fleetConnectWait = 6 * time.Minute
	// fleetSettle is the least quiet time between the end of the traffic
	// and the idle measurement: the last doors are debounced, the last
	// status and compartments messages (throttled to one per 10 s) sent.
	fleetSettle = 12 * time.Second
	// fleetPeopleWait bounds the wait for the parcels under way when the
	// traffic stops (a grant ack may take 30 s, typing a code a few).
	fleetPeopleWait = 90 * time.Second
)

// fleetCurvePoints are the times after the broker's return at which the
// reconnect curve is read.
var fleetCurvePoints = []time.Duration{
	500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second, 5 * time.Second,
	10 * time.Second, 15 * time.Second, 20 * time.Second, 30 * time.Second, 45 * time.Second,
	time.Minute, 90 * time.Second, 2 * time.Minute, 3 * time.Minute, 5 * time.Minute,
}

// fleetBenchResult is what the benchmark measured.
type fleetBenchResult struct {
	n, connected      int
	connectedIn       time.Duration // from start to every locker connected
	baseRSS           uint64        // the process(es) before any locker
	idle              fleetMeasure  // at the end of the idle window (heap and goroutines: one process only)
	procs             int           // processes that ran the lockers
	idleFor           time.Duration
	idleCPU           time.Duration // the fleet's CPU time over idleFor
	brokerIdleCPU     time.Duration // Mosquitto's over idleFor (0: embedded or external)
	deposits, pickups int64
	failed            int
	failures          map[string]int // failed parcels by reason
	stopped           time.Duration  // the lockers' shut-down (the longest process's)
	// The broker's restart: outage, reconnect times after its return
	// (sorted), lockers that lost it and lockers still down at the end.
	restarted  bool
	outage     time.Duration
	reconnects []time.Duration
	lost, open int
	restart    string // why there is no curve
}

// bench runs the benchmark until it is done or ctx is; see the file's
// comment. In a child process (-fleet-child) it runs up to the idle
// window, says so on f.proto, and lets the parent restart the broker.
func (f *fleet) bench(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	traffic, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	f.traffic = traffic
	r := fleetBenchResult{n: f.o.N, baseRSS: processRSS(), procs: 1}

	if err := f.start(ctx); err != nil {
		cancel()
		f.stop()
		return err
	}
	if f.o.Child {
		fmt.Fprintf(f.proto, "@ready %d\n", time.Since(f.started).Milliseconds())
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if f.o.Report > 0 {
		wg.Go(func() {
			t := time.NewTicker(f.o.Report)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					fmt.Fprintln(f.out, f.line())
				}
			}
		})
	}
	finish := func(err error) error {
		m := measure()
		cancel()
		wg.Wait()
		t0 := time.Now()
		err = errors.Join(err, f.stop())
		r.stopped = time.Since(t0)
		f.finalReport(f.out, m)
		r.deposits, r.pickups, r.failed = f.deposits.Load(), f.pickups.Load(), f.failedTotal()
		f.failMu.Lock()
		r.failures = maps.Clone(f.failures)
		f.failMu.Unlock()
		if f.o.Child {
			// The reasons first: the parent reads them once it has @parcels.
			js, _ := json.Marshal(r.failures)
			fmt.Fprintf(f.proto, "@failures %s\n", url.QueryEscape(string(js)))
			fmt.Fprintf(f.proto, "@parcels %d %d %d %d\n", r.deposits, r.pickups, r.failed, r.stopped.Milliseconds())
		} else {
			r.print(f.out, f.o, f.brokerName())
		}
		return err
	}

	all := func() bool { return f.mon.connected() == f.o.N }
	if !f.waitFor(ctx, fleetConnectWait, all) {
		r.connected = f.mon.connected()
		return finish(fmt.Errorf("%d of %d lockers connected after %v", r.connected, f.o.N, fleetConnectWait))
	}
	r.connectedIn = time.Since(f.started)
	fmt.Fprintf(f.out, "fleet: all %d lockers connected %.1f s after the start; trading parcels for %v\n",
		f.o.N, r.connectedIn.Seconds(), f.o.Bench)
	if f.o.Child {
		fmt.Fprintf(f.proto, "@connected %d\n", r.connectedIn.Milliseconds())
	}
	if !f.sleep(ctx, f.o.Bench) {
		return finish(ctx.Err())
	}

	// The traffic stops; the parcels under way are finished.
	stopTraffic()
	stopped := time.Now()
	peopleDone := make(chan struct{})
	go func() { f.people.Wait(); close(peopleDone) }()
	select {
	case <-peopleDone:
	case <-time.After(fleetPeopleWait):
		return finish(fmt.Errorf("parcels still under way %v after the traffic stopped", fleetPeopleWait))
	case <-ctx.Done():
		return finish(ctx.Err())
	}
	// Settle: every recorded trace at the central, and fleetSettle quiet.
	delivered := func() bool { return f.central.traces.Load() >= f.recorded.Load() }
	f.waitFor(ctx, time.Minute, delivered)
	if !f.sleep(ctx, max(0, fleetSettle-time.Since(stopped))) {
		return finish(ctx.Err())
	}
	fmt.Fprintf(f.out, "fleet: traffic stopped (%d deposited, %d picked up); measuring idle CPU for %v\n",
		f.deposits.Load(), f.pickups.Load(), f.o.Idle)

	if f.o.Child {
		// The parent measures every child's idle CPU, restarts the broker
		// and says when it is back: "back UNIXNANO".
		fmt.Fprintln(f.proto, "@settled")
		back, ok := f.readBack(ctx)
		if !ok {
			return finish(ctx.Err())
		}
		f.mon.brokerBack(back)
		f.waitFor(ctx, fleetConnectWait, all)
		f.waitFor(ctx, 10*time.Second, f.mon.quiet)
		fmt.Fprintln(f.proto, f.mon.reconnectLine())
		return finish(nil)
	}

	// Idle.
	if f.o.IdleProfile != "" {
		pf, err := os.Create(f.o.IdleProfile)
		if err != nil {
			return finish(err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return finish(err)
		}
	}
	t0, c0, b0 := time.Now(), processCPU(), f.brokerCPU()
	idled := f.sleep(ctx, f.o.Idle)
	if f.o.IdleProfile != "" {
		pprof.StopCPUProfile()
	}
	if !idled {
		return finish(ctx.Err())
	}
	r.idleFor, r.idleCPU, r.brokerIdleCPU = time.Since(t0), processCPU()-c0, f.brokerCPU()-b0
	r.idle = measure()
	r.connected = f.mon.connected()

	// The broker's restart.
	f.brokerMu.Lock()
	own := f.broker != nil
	f.brokerMu.Unlock()
	if !own {
		r.restart = "not measured: -broker is not the fleet's to restart"
		return finish(nil)
	}
	if !f.restartBroker(ctx) {
		r.restart = "not measured: the broker did not start again"
		return finish(ctx.Err())
	}
	if !f.waitFor(ctx, fleetConnectWait, all) {
		fmt.Fprintf(f.out, "fleet: %d of %d lockers back %v after the broker's return\n", f.mon.connected(), f.o.N, fleetConnectWait)
	}
	// The monitor closes the wave at its next sample.
	f.waitFor(ctx, 10*time.Second, f.mon.quiet)
	if ws := f.mon.waves(); len(ws) > 0 {
		w := ws[len(ws)-1]
		r.restarted, r.outage, r.reconnects = true, w.back.Sub(w.start), w.reconnects()
		r.lost, r.open = len(w.down), w.open
	} else {
		r.restart = "no lockers lost the broker"
	}
	return finish(nil)
}

// readBack reads the parent's "back UNIXNANO" line from f.in.
func (f *fleet) readBack(ctx context.Context) (time.Time, bool) {
	got := make(chan time.Time, 1)
	go func() {
		sc := bufio.NewScanner(f.in)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "back "); ok {
				if ns, err := strconv.ParseInt(rest, 10, 64); err == nil {
					got <- time.Unix(0, ns)
					return
				}
			}
		}
		close(got)
	}()
	select {
	case t, ok := <-got:
		return t, ok
	case <-ctx.Done():
		return time.Time{}, false
	}
}

// reconnectLine is the last wave for the parent: "@reconnects LOST OPEN
// OUTAGE_MS MS MS …", the reconnect times in milliseconds after the
// broker's return.
func (m *fleetMonitor) reconnectLine() string {
	ws := m.waves()
	if len(ws) == 0 {
		return "@reconnects 0 0 0"
	}
	w := ws[len(ws)-1]
	var b strings.Builder
	fmt.Fprintf(&b, "@reconnects %d %d %d", len(w.down), w.open, w.back.Sub(w.start).Milliseconds())
	for _, d := range w.reconnects() {
		fmt.Fprintf(&b, " %d", d.Milliseconds())
	}
	return b.String()
}

// waitFor polls cond every 100 ms until it holds (true), d has passed or
// ctx is done (false).
func (f *fleet) waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) || !f.sleep(ctx, 100*time.Millisecond) {
			return false
		}
	}
	return true
}

func (f *fleet) brokerCPU() time.Duration {
	f.brokerMu.Lock()
	defer f.brokerMu.Unlock()
	if f.broker == nil {
		return 0
	}
	return f.broker.cpu()
}

func (f *fleet) failedTotal() int {
	f.failMu.Lock()
	defer f.failMu.Unlock()
	n := 0
	for _, c := range f.failures {
		n += c
	}
	return n
}

// curve is the share of n lockers reconnected at each of fleetCurvePoints
// after the broker came back (rs sorted), up to the first point every
// locker was back.
func curve(rs []time.Duration, n int) []string {
	var out []string
	for _, p := range fleetCurvePoints {
		k := 0
		for k < len(rs) && rs[k] <= p {
			k++
		}
		out = append(out, fmt.Sprintf("%gs %.1f%%", p.Seconds(), 100*float64(k)/float64(n)))
		if k == n {
			break
		}
	}
	return out
}

// print writes the summary; its words are fixed (make bench shows them).
func (r fleetBenchResult) print(out io.Writer, o fleetOptions, broker string) {
	n := float64(r.n)
	procs := ""
	if r.procs > 1 {
		procs = fmt.Sprintf(" in %d processes", r.procs)
	}
	fmt.Fprintf(out, "\nfleet benchmark: %d lockers (%s…%s)%s, broker %s, %d cores\n",
		r.n, fleetID(o.First), fleetID(o.First+r.n-1), procs, broker, runtime.NumCPU())
	fmt.Fprintf(out, "  lockers          %d\n", r.n)
	fmt.Fprintf(out, "  connected        %d (all %d within %.1f s of the start)\n", r.connected, r.n, r.connectedIn.Seconds())
	fmt.Fprintf(out, "  parcels          %d deposited, %d picked up, %d failed in %v of traffic (a parcel every %v per locker)\n",
		r.deposits, r.pickups, r.failed, o.Bench, o.Interval)
	reasons := slices.Sorted(maps.Keys(r.failures))
	for i, why := range reasons {
		label := "                "
		if i == 0 {
			label = "  failed          "
		}
		fmt.Fprintf(out, "%s %d× %s\n", label, r.failures[why], why)
	}
	if r.stopped > 0 {
		fmt.Fprintf(out, "  stopped          all %d lockers %.1f s after the end (the slowest process; at most %v)\n",
			r.n, r.stopped.Seconds(), fleetStopWait((r.n+r.procs-1)/r.procs))
	}
	if r.idleFor == 0 {
		fmt.Fprintln(out, "  idle             not measured")
		return
	}
	fmt.Fprintf(out, "  RSS per locker   %s (%s in all", mb(float64(r.idle.rss)/n), mb(float64(r.idle.rss)))
	if r.baseRSS > 0 {
		fmt.Fprintf(out, "; %s per locker above the process before the lockers", mb(float64(r.idle.rss-min(r.baseRSS, r.idle.rss))/n))
	}
	fmt.Fprint(out, ")")
	if r.idle.heapInuse > 0 {
		fmt.Fprintf(out, ", heap in use %s per locker, %.1f goroutines per locker", mb(float64(r.idle.heapInuse)/n), float64(r.idle.goroutines)/n)
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "  idle CPU         %.1f %% of one core over %.0f s with no traffic (%.1f µs/s per locker)",
		100*r.idleCPU.Seconds()/r.idleFor.Seconds(), r.idleFor.Seconds(), float64(r.idleCPU.Microseconds())/r.idleFor.Seconds()/n)
	if r.brokerIdleCPU > 0 || o.Mosquitto != "" {
		fmt.Fprintf(out, "; the broker %.1f %%", 100*r.brokerIdleCPU.Seconds()/r.idleFor.Seconds())
	}
	fmt.Fprintln(out)
	if !r.restarted {
		fmt.Fprintf(out, "  reconnect curve  %s\n", r.restart)
		return
	}
	fmt.Fprintf(out, "  reconnect curve  broker down %.1f s; after its return (s → %% of the fleet reconnected): %s\n",
		r.outage.Seconds(), strings.Join(curve(r.reconnects, r.n), ", "))
	if rs := r.reconnects; len(rs) > 0 {
		fmt.Fprintf(out, "                   p50 %.1f s, p90 %.1f s, last %.1f s; %d of %d lost the broker, %d still down\n",
			pct(rs, 50).Seconds(), pct(rs, 90).Seconds(), rs[len(rs)-1].Seconds(), r.lost, r.n, r.open)
	}
}

func (f *fleet) brokerName() string {
	switch {
	case f.o.Mosquitto != "":
		return "Mosquitto on " + f.o.Embedded + " (the fleet's own)"
	case f.o.Broker != "" && f.broker == nil:
		return f.o.Broker
	default:
		return "embedded on " + f.o.Embedded
	}
}
