package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// fleetFlags are the fleet benchmark's settings (-fleet N: 0 runs none).
type fleetFlags struct {
	n             int
	traffic, idle time.Duration
	mosquitto     string
}

// fleetResult is the fleet benchmark's summary (locker-sim's fixed words,
// cmd/locker-sim/fleetbench.go), by the line's label: "lockers",
// "connected", "parcels", "failed", "RSS per locker", "idle CPU",
// "reconnect curve"; the lines that continue a label are joined to it.
type fleetResult map[string]string

// fleetLabels are the summary's labels, in the order printed.
var fleetLabels = []string{"lockers", "connected", "parcels", "failed", "stopped", "RSS per locker", "idle CPU", "reconnect curve"}

// runFleet runs `locker-sim -fleet N -fleet-bench …` against a Mosquitto
// of its own (make fleet's way), its databases on /dev/shm where there is
// one, its output shown on stderr as it comes, and returns its summary.
func (r *runner) runFleet(o fleetFlags) (fleetResult, error) {
	dir, err := os.MkdirTemp("/dev/shm", "locker-fleet.")
	if err != nil {
		if dir, err = os.MkdirTemp("", "locker-fleet."); err != nil {
			return nil, err
		}
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "locker-sim")
	if out, err := r.goCmd(context.Background(), nil, "build", "-o", bin, "./cmd/locker-sim"); err != nil {
		return nil, fmt.Errorf("build locker-sim: %s", firstError(out, err))
	}
	// Starting 10,000 lockers takes minutes on two cores: an hour at most
	// for the whole run.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour+o.traffic+o.idle)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-fleet", fmt.Sprint(o.n), "-fleet-mosquitto", cmp.Or(o.mosquitto, "mosquitto"),
		"-fleet-bench", o.traffic.String(), "-fleet-idle", o.idle.String(), "-fleet-report", "0", "-data", filepath.Join(dir, "data"))
	cmd.Dir = r.root
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	res := parseFleet(io.TeeReader(stdout, os.Stderr))
	if err := cmd.Wait(); err != nil {
		return res, fmt.Errorf("locker-sim -fleet %d: %w", o.n, err)
	}
	return res, nil
}

// parseFleet reads the summary that follows "fleet benchmark:".
func parseFleet(in io.Reader) fleetResult {
	res := fleetResult{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	summary, last := false, ""
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "fleet benchmark:") {
			summary, last = true, ""
			clear(res)
			res["title"] = strings.TrimSpace(strings.TrimPrefix(line, "fleet benchmark:"))
			continue
		}
		if !summary || !strings.HasPrefix(line, "  ") {
			continue
		}
		body := strings.TrimSpace(line)
		found := false
		for _, l := range fleetLabels {
			if rest, ok := strings.CutPrefix(body, l+" "); ok {
				res[l], last, found = strings.TrimSpace(rest), l, true
				break
			}
		}
		if !found && last != "" {
			res[last] += "; " + body
		}
	}
	return res
}
