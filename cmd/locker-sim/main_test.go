package main

// The binaries the tests run, built at most once per test binary into one
// temporary folder that TestMain removes at the end:
//
//   - locker-sim with -race, for the end-to-end tests (startSim): the
//     daemon's own goroutines are checked for races while a person, the
//     central and the broker drive it;
//   - locker-sim without -race, for the tests that time things or restart
//     the process hundreds of times (startSimFast, the crash rig, the
//     fleet benchmark);
//   - lockerctl, for the self-test through lockerctl.
//
// A build starts when a test first asks for it; the first ask for either
// locker-sim starts both, so that they build side by side (a run of
// `go test -run` that needs only one stops the other at the end).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	stdsync "sync"
	"testing"
)

// goBinary is one `go build`, started at most once.
type goBinary struct {
	args []string // after "go build -o PATH"
	once stdsync.Once
	done chan struct{}
	path string
	err  error
}

func (b *goBinary) start() {
	b.once.Do(func() {
		go func() {
			defer close(b.done)
			out, err := exec.CommandContext(buildCtx, "go", append([]string{"build", "-o", b.path}, b.args...)...).CombinedOutput()
			if err != nil {
				b.err = fmt.Errorf("go build %v: %v\n%s", b.args, err, out)
			}
		}()
	})
}

// wait starts the build if need be and returns the binary's path.
func (b *goBinary) wait(t *testing.T) string {
	t.Helper()
	b.start()
	<-b.done
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

var (
	simRace, simPlain, ctlBinary *goBinary
	buildCtx, stopBuilds         = context.WithCancel(context.Background())
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "locker-sim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin := func(name string, args ...string) *goBinary {
		return &goBinary{args: args, done: make(chan struct{}), path: filepath.Join(dir, name)}
	}
	// Race-checked, but without the compiler's pointer checks in SQLite's
	// translated C (as make test runs the tests): a third of the CPU.
	simRace = bin("locker-sim-race", "-race", "-gcflags=modernc.org/...=-d=checkptr=0", ".")
	simPlain = bin("locker-sim", ".")
	ctlBinary = bin("lockerctl", "../lockerctl")
	code := m.Run()
	stopBuilds() // a build no test waited for
	for _, b := range []*goBinary{simRace, simPlain, ctlBinary} {
		b.once.Do(func() { close(b.done) }) // not started: nothing to wait for
		<-b.done
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildSim returns locker-sim built with -race.
func buildSim(t *testing.T) string {
	t.Helper()
	simPlain.start()
	return simRace.wait(t)
}

// buildSimFast returns locker-sim built without -race: for tests that
// time things, or start it again and again.
func buildSimFast(t *testing.T) string {
	t.Helper()
	simRace.start()
	return simPlain.wait(t)
}

// buildCtl returns lockerctl.
func buildCtl(t *testing.T) string {
	t.Helper()
	return ctlBinary.wait(t)
}
