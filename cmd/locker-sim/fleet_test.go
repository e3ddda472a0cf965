package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openlocker/locker/simulator/logtest"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/central"
	"github.com/openlocker/locker/sync/protocol"
)

func fleetWaitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// A fleet of 20 lockers against a real Mosquitto: every locker connects,
// publishes its retained online status and traces, and the people's
// parcels go through; after a broker restart the lockers come back spread
// over the back-off window, not in one spike. The back-off is shortened
// for the test (BackoffMin 100 ms, BackoffMax 3 s, through fleetOptions).
func TestFleetAgainstMosquitto(t *testing.T) {
	t.Parallel()
	const n = 20
	b := brokertest.Start(t, brokertest.Options{NoPersistence: true})
	var out logtest.Buffer // the fleet reports from several goroutines
	f, err := newFleet(fleetOptions{N: n, Broker: b.URL(), DataDir: t.TempDir(), Interval: 2 * time.Second,
		BackoffMin: 100 * time.Millisecond, BackoffMax: 3 * time.Second,
		Out: &out, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := f.stop(); err != nil {
				t.Error(err)
			}
		}
	}
	defer stop()
	if err := f.start(ctx); err != nil {
		t.Fatal(err)
	}
	fleetWaitFor(t, 20*time.Second, func() bool { return f.mon.connected() == n }, "every locker to connect")
	fleetWaitFor(t, 20*time.Second, func() bool {
		for _, l := range f.lockers {
			if !l.online.Load() || l.traces.Load() == 0 {
				return false
			}
		}
		return true
	}, "every locker's online status and a trace at the central")
	fleetWaitFor(t, 30*time.Second, func() bool { return f.deposits.Load() >= 5 && f.pickups.Load() >= 2 },
		"deposits and pickups")

	// The online statuses are retained: a newcomer gets one per locker.
	retained := map[string]bool{}
	var rmu sync.Mutex
	cl := central.DialTest(t, central.Options{Broker: b.URL(), ClientID: "fleet-test-newcomer", Wait: 5 * time.Second,
		Subscribe: []string{protocol.Topic("+", protocol.SuffixStatus)}, OnMessage: func(m central.Message) {
			var st struct {
				State    string `json:"state"`
				LockerID string `json:"locker_id"`
			}
			if json.Unmarshal(m.Payload, &st) == nil && m.Retained && st.State == "online" {
				rmu.Lock()
				retained[st.LockerID] = true
				rmu.Unlock()
			}
		}})
	fleetWaitFor(t, 5*time.Second, func() bool { rmu.Lock(); defer rmu.Unlock(); return len(retained) == n },
		"a retained online status per locker")
	cl.Close()

	// Restart the broker.
	b.Stop()
	fleetWaitFor(t, 10*time.Second, func() bool { return f.mon.connected() == 0 }, "the fleet to notice the outage")
	time.Sleep(1500 * time.Millisecond) // attempts fail, the back-off ceilings grow
	b.Restart(t)
	f.mon.brokerBack(time.Now())
	fleetWaitFor(t, 20*time.Second, func() bool { return f.mon.connected() == n }, "every locker to reconnect")
	time.Sleep(2 * fleetSample) // the monitor closes the wave

	waves := f.mon.waves()
	if len(waves) != 1 {
		t.Fatalf("%d reconnect waves, want 1", len(waves))
	}
	rs := waves[0].reconnects()
	if len(rs) != n {
		t.Fatalf("%d reconnects, want %d", len(rs), n)
	}
	if spread := rs[len(rs)-1] - rs[0]; spread < 500*time.Millisecond {
		t.Errorf("all %d lockers reconnected within %v of each other: a spike, not a jittered back-off (%v)", n, spread, rs)
	}
	m := measure()
	stop()
	f.finalReport(&out, m)
	report := out.String()
	t.Log("\n" + report)
	for _, want := range []string{"heap in use", "MB per locker", "reconnected after it came back", "time of the restart known"} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}

func TestFleetHistogram(t *testing.T) {
	t.Parallel()
	rs := []time.Duration{0, 40 * time.Millisecond, 300 * time.Millisecond, 900 * time.Millisecond, 2100 * time.Millisecond}
	width, counts := histogram(rs, 20)
	if width != 250*time.Millisecond {
		t.Fatalf("width %v, want 250ms", width)
	}
	want := []int{2, 1, 0, 1, 0, 0, 0, 0, 1}
	if len(counts) != len(want) {
		t.Fatalf("counts %v, want %v", counts, want)
	}
	for i := range want {
		if counts[i] != want[i] {
			t.Fatalf("counts %v, want %v", counts, want)
		}
	}
}

// The fleet benchmark in two processes (as `make fleet` runs 10,000
// lockers where one process may not hold 40,000 files) against a
// Mosquitto of its own: every locker connects and trades, the idle CPU of
// the children is measured, and after the broker's restart every locker of
// both processes is in one reconnect curve that reaches 100 %.
func TestFleetBenchInProcesses(t *testing.T) {
	t.Parallel()
	bin := buildSimFast(t)
	mosq, err := findMosquitto("mosquitto")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-fleet", "9", "-fleet-first", "500", "-fleet-procs", "2",
		"-fleet-mosquitto", mosq, "-fleet-listen", addr, "-data", t.TempDir(),
		"-fleet-bench", "4s", "-fleet-interval", "2s", "-fleet-idle", "2s", "-fleet-outage", "1s")
	out, err := cmd.CombinedOutput()
	t.Log("\n" + string(out))
	if err != nil {
		t.Fatalf("locker-sim -fleet-bench: %v", err)
	}
	for _, want := range []string{
		"9 lockers (FLEET0500…FLEET0508) in 2 processes",
		"lockers          9\n",
		"connected        9 ",
		"RSS per locker",
		"idle CPU ",
		"100.0%\n",
		"9 of 9 lost the broker, 0 still down",
		"stopped          all 9 lockers", // each process said how long its lockers took (@parcels)
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}

func TestFleetCurve(t *testing.T) {
	t.Parallel()
	s := time.Second
	rs := []time.Duration{200 * time.Millisecond, 800 * time.Millisecond, 1500 * time.Millisecond, 4 * s}
	got := strings.Join(curve(rs, 4), ", ")
	if want := "0.5s 25.0%, 1s 50.0%, 2s 75.0%, 3s 75.0%, 5s 100.0%"; got != want {
		t.Errorf("curve %q, want %q", got, want)
	}
}

// Above fleetBig lockers the default parcel rate is the fleet's, not each
// locker's: 10,000 lockers each with a parcel every 30 s were more than
// two cores could carry.
func TestFleetDefaultInterval(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{1, 30 * time.Second}, {fleetBig, 30 * time.Second}, {fleetBig + 1, 50050 * time.Millisecond}, {10000, 500 * time.Second}} {
		if got := defaultInterval(c.n); got != c.want {
			t.Errorf("defaultInterval(%d) = %v, want %v", c.n, got, c.want)
		}
	}
}
