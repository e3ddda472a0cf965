//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestCrashKill9Kerong is the kill -9 crash test on the 48-door Kerong
// cabinet: the simulated boards live in the killed process, behind a pty
// that dies with it, and come back with the next start from the
// cabinet's state file, as a cabinet's boards survive its controller's
// power cut. The same checks as TestCrashKill9 after every restart.
//
//	LOCKER_CRASH_KERONG_ITERS=300 go test -run TestCrashKill9Kerong -v ./cmd/locker-sim/
func TestCrashKill9Kerong(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash test kills locker-sim tens of times; not in -short")
	}
	iters := scaled(t, "LOCKER_CRASH_KERONG_ITERS", 40, 500, 2000)
	seed := uint64(envInt(t, "LOCKER_CRASH_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("crash test on the Kerong cabinet: %d iterations, LOCKER_CRASH_SEED=%d", iters, seed)
	wiring := kerongWiring(t, filepath.Join(t.TempDir(), "ttyUSB-none"))
	sum := runCrashRig(t, seed, iters, time.Duration(iters)*2*time.Second, "-config", wiring)
	if t.Failed() {
		return
	}
	printTortureRow("kill -9 (Kerong RS485)", sum.kills, "kills", 0, fmt.Sprintf(
		"%d runs killed during %s, boards simulated behind a pty; integrity_check ok, seq gapless, no door opened twice for one use, DB matches the cabinet after each restart; %d events, %d duplicates dropped",
		sum.iters, killedDuringText(sum.killedDuring), sum.distinct, sum.dups))
}
