//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/hal/wiring"
)

// TestCrashKill9Kerong is the kill -9 crash test on the 48-door Kerong
// cabinet: the simulated boards live in the killed process, behind a pty
// that dies with it, and come back with the next start from the
// cabinet's state file, as a cabinet's boards survive its controller's
// power cut. The same checks as TestCrashKill9 after every restart.
//
//	LOCKER_CRASH_KERONG_ITERS=300 go test -run TestCrashKill9Kerong -v ./cmd/locker-sim/
func TestCrashKill9Kerong(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("the crash test kills locker-sim tens of times; not in -short")
	}
	iters := scaled(t, "LOCKER_CRASH_KERONG_ITERS", 40, 500, 2000)
	seed := uint64(envInt(t, "LOCKER_CRASH_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("crash test on the Kerong cabinet: %d iterations, LOCKER_CRASH_SEED=%d", iters, seed)
	config := kerongWiring(t, filepath.Join(t.TempDir(), "ttyUSB-none"))
	loadedMachineTimings(t, config)
	sum := runCrashRig(t, seed, iters, time.Duration(iters)*2*time.Second, "-config", config)
	if t.Failed() {
		return
	}
	printTortureRow("kill -9 (Kerong RS485)", sum.kills, "kills", 0, fmt.Sprintf(
		"%d runs killed during %s, boards simulated behind a pty; integrity_check ok, seq gapless, no door opened twice for one use, DB matches the cabinet after each restart; %d events, %d duplicates dropped",
		sum.iters, killedDuringText(sum.killedDuring), sum.distinct, sum.dups))
}

// Reply timings of the crash test's simulated buses: the boards live in
// the locker-sim process, and on a loaded machine (load average ~20 on 2
// cores) its pty and goroutines missed the product's 50ms reply time-out
// and 25ms silence poll after poll, so that a board stayed unread past the
// 30 s a restart waits for it. What the crash test checks is what a kill
// leaves behind, not the bus's timing (hal/rs485's tests), so the wiring
// gives the simulated boards the scenarios' slack; the product's defaults
// are unchanged.
const (
	crashReplyTimeout = "500ms"
	crashReplySilence = "200ms"
)

// loadedMachineTimings sets reply_timeout and reply_silence on every bus of
// the wiring file at path.
func loadedMachineTimings(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const at = "    protocol: kerong\n"
	if !strings.Contains(string(b), at) {
		t.Fatalf("%s: no %q to add the reply timings after", path, at)
	}
	timed := strings.ReplaceAll(string(b), at, at+"    reply_timeout: "+crashReplyTimeout+"\n    reply_silence: "+crashReplySilence+"\n")
	if err := os.WriteFile(path, []byte(timed), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCrashWiringTimings: the crash test's Kerong wiring gives the
// simulated buses the loaded machine's slack, and is still a valid wiring.
func TestCrashWiringTimings(t *testing.T) {
	path := kerongWiring(t, filepath.Join(t.TempDir(), "ttyUSB-none"))
	loadedMachineTimings(t, path)
	w, err := wiring.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range w.RS485 {
		if b.ReplyTimeout != 500*time.Millisecond || b.ReplySilence != 200*time.Millisecond {
			t.Errorf("bus %s: reply_timeout %v, reply_silence %v", b.Name, b.ReplyTimeout, b.ReplySilence)
		}
	}
}
