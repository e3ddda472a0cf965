package main

// A fleet benchmark in several processes. Each locker holds four files open
// (its database, WAL, shared memory and its MQTT socket): ten thousand
// lockers need 40,000, more than the hard open-file limit of many machines
// and containers (20,000 here, and not ours to raise without root's
// CAP_SYS_RESOURCE). The parent starts the broker and K children of this
// program, each with a range of its own (-fleet-first), as the central team
// runs fleet processes on several machines; it measures the children's idle
// CPU and memory from /proc, restarts the broker, and merges their
// reconnect times into one curve.
//
// The children speak a line protocol on stdout: "@ready MS" once every
// locker of theirs is started (a start-up takes minutes on a loaded
// machine: the connections are awaited from then on), "@connected MS" once every
// locker of theirs is connected; "@settled" once the traffic has stopped and
// settled; then, after the parent writes "back UNIXNANO" on their stdin
// (the broker is back), "@reconnects LOST OPEN OUTAGE_MS MS…" and
// "@failures JSON" (the failed parcels by reason, query-escaped) and
// "@parcels DEPOSITED PICKED_UP FAILED STOP_MS" (STOP_MS: how long its
// lockers took to stop) before they exit. Their logs and
// reports go to DataDir/fleet-child-N.log.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// fleetProcs is how many processes a fleet benchmark of o.N lockers needs
// under this process's hard open-file limit (o.Procs when set).
func fleetProcs(o fleetOptions) (int, error) {
	if o.Procs > 0 {
		return o.Procs, nil
	}
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 1, nil
	}
	need := uint64(o.N)*fleetFilesPerLocker + 1024
	if o.Broker == "" && o.Mosquitto == "" {
		need += uint64(o.N)
	}
	if need <= r.Max {
		return 1, nil
	}
	if r.Max < 2048 {
		return 0, fmt.Errorf("the open-file limit is %d: too low for a fleet", r.Max)
	}
	per := (r.Max - 1024) / fleetFilesPerLocker
	return int((uint64(o.N) + per - 1) / per), nil
}

// fleetStartWait bounds the start-up of a fleet process's lockers.
const fleetStartWait = time.Hour

// fleetChild is one child process as the parent sees it.
type fleetChild struct {
	i, n, first int
	cmd         *exec.Cmd
	stdin       io.WriteCloser
	log         string
}

// fleetLine is one protocol line of child i; eof when its stdout closed.
type fleetLine struct {
	i    int
	line string
	eof  bool
}

// runFleetParent runs the benchmark of o.N lockers in o.Procs children.
func runFleetParent(ctx context.Context, o fleetOptions) error {
	out := o.Out
	if out == nil {
		out = os.Stdout
	}
	if o.DataDir == "" {
		o.DataDir = "var"
	}
	if o.Embedded == "" {
		o.Embedded = embeddedAddr
	}
	if o.First == 0 {
		o.First = 1
	}
	if o.Interval <= 0 {
		o.Interval = defaultInterval(o.N)
	}
	if o.Idle <= 0 {
		o.Idle = 30 * time.Second
	}
	if o.Broker != "" {
		return errors.New("a fleet of several processes needs a broker of its own to restart: not with -broker (run the processes yourself with -fleet-first)")
	}
	if o.Mosquitto != "" {
		p, err := findMosquitto(o.Mosquitto)
		if err != nil {
			return err
		}
		o.Mosquitto = p
	}
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	// The development key, once, before the children read it.
	if _, err := devKeyPair(filepath.Join(o.DataDir, devKeyFile)); err != nil {
		return err
	}
	if err := raiseFileLimit(uint64(o.N) + 1024); err != nil { // the broker's sockets
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	b := &fleetBroker{addr: o.Embedded, mosquitto: o.Mosquitto, dir: filepath.Join(o.DataDir, "mosquitto")}
	if err := b.start(); err != nil {
		return err
	}
	defer b.stop()
	brokerName := "embedded on " + o.Embedded
	if o.Mosquitto != "" {
		brokerName = "Mosquitto on " + o.Embedded + " (the fleet's own)"
	}
	fmt.Fprintf(out, "fleet: %d lockers in %d processes, broker %s, data %s\n", o.N, o.Procs, brokerName, o.DataDir)

	lines := make(chan fleetLine, 64)
	var children []*fleetChild
	defer func() {
		for _, c := range children {
			c.stdin.Close()
			c.cmd.Process.Signal(syscall.SIGTERM)
			c.cmd.Wait()
		}
	}()
	per := (o.N + o.Procs - 1) / o.Procs
	for i, first := 0, o.First; first < o.First+o.N; i, first = i+1, first+per {
		n := min(per, o.First+o.N-first)
		c := &fleetChild{i: i, n: n, first: first, log: filepath.Join(o.DataDir, fmt.Sprintf("fleet-child-%d.log", i+1))}
		args := []string{"-fleet", strconv.Itoa(n), "-fleet-first", strconv.Itoa(first), "-fleet-child",
			"-broker", "tcp://" + o.Embedded, "-data", o.DataDir, "-quiet",
			"-fleet-bench", o.Bench.String(), "-fleet-idle", o.Idle.String(), "-fleet-interval", o.Interval.String(),
			"-fleet-report", "0"}
		if o.Poll > 0 {
			args = append(args, "-fleet-poll", o.Poll.String())
		}
		logf, err := os.Create(c.log)
		if err != nil {
			return err
		}
		c.cmd = exec.Command(exe, args...)
		c.cmd.Stderr = logf
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			logf.Close()
			return err
		}
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			logf.Close()
			return err
		}
		err = c.cmd.Start()
		logf.Close() // the child holds its own descriptor
		if err != nil {
			return err
		}
		children = append(children, c)
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 16<<20) // @reconnects lists every locker's time
			for sc.Scan() {
				lines <- fleetLine{i: c.i, line: sc.Text()}
			}
			lines <- fleetLine{i: c.i, eof: true}
		}()
	}
	fmt.Fprintf(out, "fleet: %d children of %d lockers each, logs in %s\n", len(children), per, filepath.Join(o.DataDir, "fleet-child-N.log"))

	r := fleetBenchResult{n: o.N, procs: len(children)}
	// await waits until every child has sent a line starting with tag, and
	// passes its fields after the tag to got. Lines are kept by tag as they
	// come: a child may be a step ahead of the others.
	said := make([]map[string][]string, len(children))
	exited := make([]bool, len(children))
	for i := range said {
		said[i] = map[string][]string{}
	}
	await := func(tag string, limit time.Duration, got func(c *fleetChild, fields []string) error) error {
		timeout := time.After(limit)
		for {
			n := 0
			for i, c := range children {
				if _, ok := said[i][tag]; ok {
					n++
				} else if exited[i] {
					return fmt.Errorf("fleet process %d exited before %s (see %s)", i+1, tag, c.log)
				}
			}
			if n == len(children) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timeout:
				return fmt.Errorf("%d of %d fleet processes said %s within %v", n, len(children), tag, limit)
			case l := <-lines:
				if l.eof {
					exited[l.i] = true
				} else if fields := strings.Fields(l.line); len(fields) > 0 && strings.HasPrefix(fields[0], "@") {
					said[l.i][fields[0]] = fields[1:]
				}
			}
		}
		for i, c := range children {
			if err := got(c, said[i][tag]); err != nil {
				return fmt.Errorf("fleet process %d: %s: %w", i+1, tag, err)
			}
		}
		return nil
	}
	// Each locker has fleetReady to start; 10,000 of them took 12 min on
	// two cores that other work also used.
	if err := await("@ready", fleetStartWait, func(c *fleetChild, f []string) error {
		if len(f) < 1 {
			return errors.New("short line")
		}
		ms, err := strconv.ParseInt(f[0], 10, 64)
		fmt.Fprintf(out, "fleet: the %d lockers of process %d ready in %.1f s\n", c.n, c.i+1, float64(ms)/1000)
		return err
	}); err != nil {
		return err
	}
	if err := await("@connected", fleetConnectWait+time.Minute, func(_ *fleetChild, f []string) error {
		if len(f) < 1 {
			return errors.New("short line")
		}
		ms, err := strconv.ParseInt(f[0], 10, 64)
		r.connectedIn = max(r.connectedIn, time.Duration(ms)*time.Millisecond)
		return err
	}); err != nil {
		return err
	}
	r.connected = o.N
	fmt.Fprintf(out, "fleet: all %d lockers connected %.1f s after the start; trading parcels for %v\n", o.N, r.connectedIn.Seconds(), o.Bench)
	if err := await("@settled", o.Bench+fleetPeopleWait+2*time.Minute, func(*fleetChild, []string) error { return nil }); err != nil {
		return err
	}

	// Idle: the children's CPU and memory, from /proc.
	fmt.Fprintf(out, "fleet: traffic stopped; measuring idle CPU for %v\n", o.Idle)
	cpu := func() time.Duration {
		var t time.Duration
		for _, c := range children {
			t += statCPU(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
		}
		return t
	}
	t0, c0, b0 := time.Now(), cpu(), b.cpu()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.Idle):
	}
	r.idleFor, r.idleCPU, r.brokerIdleCPU = time.Since(t0), cpu()-c0, b.cpu()-b0
	for _, c := range children {
		r.idle.rss += statusRSS(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	}

	// The broker's restart.
	fmt.Fprintf(out, "fleet: stopping the broker for %v\n", o.Outage)
	down := time.Now()
	b.stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.Outage):
	}
	if err := b.start(); err != nil {
		return fmt.Errorf("the broker did not start again: %w", err)
	}
	back := time.Now()
	r.restarted, r.outage = true, back.Sub(down)
	fmt.Fprintln(out, "fleet: the broker is back")
	for _, c := range children {
		fmt.Fprintf(c.stdin, "back %d\n", back.UnixNano())
	}
	if err := await("@reconnects", fleetConnectWait+time.Minute, func(_ *fleetChild, f []string) error {
		if len(f) < 3 {
			return errors.New("short line")
		}
		lost, err1 := strconv.Atoi(f[0])
		open, err2 := strconv.Atoi(f[1])
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		r.lost, r.open = r.lost+lost, r.open+open
		for _, s := range f[3:] {
			ms, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return err
			}
			r.reconnects = append(r.reconnects, time.Duration(ms)*time.Millisecond)
		}
		return nil
	}); err != nil {
		return err
	}
	slices.Sort(r.reconnects)
	r.failures = map[string]int{}
	if err := await("@parcels", 2*time.Minute+fleetStopWait(per), func(c *fleetChild, f []string) error {
		if len(f) < 4 {
			return errors.New("short line")
		}
		d, err1 := strconv.ParseInt(f[0], 10, 64)
		p, err2 := strconv.ParseInt(f[1], 10, 64)
		n, err3 := strconv.Atoi(f[2])
		ms, err4 := strconv.ParseInt(f[3], 10, 64)
		r.deposits, r.pickups, r.failed = r.deposits+d, r.pickups+p, r.failed+n
		r.stopped = max(r.stopped, time.Duration(ms)*time.Millisecond)
		// @failures came before @parcels.
		if why := said[c.i]["@failures"]; len(why) == 1 {
			var m map[string]int
			js, err := url.QueryUnescape(why[0])
			if err == nil {
				err = json.Unmarshal([]byte(js), &m)
			}
			if err != nil {
				return fmt.Errorf("@failures: %w", err)
			}
			for k, v := range m {
				r.failures[k] += v
			}
		}
		return errors.Join(err1, err2, err3, err4)
	}); err != nil {
		return err
	}
	var errs []error
	for _, c := range children {
		c.stdin.Close()
		if err := c.cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("fleet process %d: %w (see %s)", c.i+1, err, c.log))
		}
	}
	children = nil
	r.print(out, o, brokerName)
	return errors.Join(errs...)
}

// statusRSS is VmRSS from a /proc/PID/status file, in bytes; 0 where there
// is none.
func statusRSS(path string) uint64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
