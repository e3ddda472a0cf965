// Package makedeps tests the Makefile's deps target, the set-up half of the
// README's `make test`: on a machine that lacks Mosquitto, Chromium or
// Firefox ESR it installs them through apt when run as root, and otherwise
// stops at once with the one command to run.
//
// The target runs for real, under the real make and /bin/sh; only the
// programs it calls (id, apt-get, systemctl and the three it looks for) are
// stand-ins in a folder that is the whole PATH, so that the test can choose
// what is "installed" and who runs it, and read what apt-get was asked.
package makedeps

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// machine is a stand-in machine: a PATH folder of fake programs, each
// recording its arguments (and DEBIAN_FRONTEND) in calls.
type machine struct {
	bin, calls string
}

func newMachine(t *testing.T, uid int, programs ...string) *machine {
	t.Helper()
	m := &machine{bin: t.TempDir(), calls: filepath.Join(t.TempDir(), "calls")}
	m.add(t, "id", fmt.Sprintf(`[ "$1" = -u ] && echo %d`, uid))
	for _, p := range programs {
		m.add(t, p, "")
	}
	return m
}

// add writes program name, which records its call and then runs body.
func (m *machine) add(t *testing.T, name, body string) {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\necho \"%s DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*\" >> %s\n%s\n", name, m.calls, body)
	if err := os.WriteFile(filepath.Join(m.bin, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// makeDeps runs `make deps` of this repository on m; it returns what the
// target printed (make's own error line goes to stderr), whether it succeeded, and the calls of the programs other than id.
func (m *machine) makeDeps(t *testing.T) (out string, ok bool, calls []string) {
	t.Helper()
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Fatalf("the tests need make: %v", err)
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(makeBin, "--no-print-directory", "-C", root, "deps",
		"DEPS_SBIN="+filepath.Join(m.bin, "no-sbin"), "VERSION=test")
	cmd.Env = []string{"PATH=" + m.bin, "HOME=" + t.TempDir()}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if stderr.Len() > 0 {
		t.Logf("make's stderr: %s", stderr.String())
	}
	if err != nil {
		if _, exit := err.(*exec.ExitError); !exit {
			t.Fatalf("make deps: %v", err)
		}
	}
	rec, rerr := os.ReadFile(m.calls)
	if rerr != nil && !os.IsNotExist(rerr) {
		t.Fatal(rerr)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(rec)), "\n") {
		if l != "" && !strings.HasPrefix(l, "id ") {
			calls = append(calls, l)
		}
	}
	return stdout.String(), err == nil, calls
}

func TestNothingMissingDoesNothing(t *testing.T) {
	for _, uid := range []int{0, 1000} {
		m := newMachine(t, uid, "mosquitto", "chromium", "firefox-esr", "apt-get", "systemctl")
		out, ok, calls := m.makeDeps(t)
		if !ok || strings.TrimSpace(out) != "" || len(calls) != 0 {
			t.Errorf("uid %d, all installed: ok %v, output %q, calls %q; want success, no output, no calls", uid, ok, out, calls)
		}
	}
}

// A user who is not root is told the one command to run, and make stops:
// no test runs, none is skipped.
func TestNotRootIsToldTheCommand(t *testing.T) {
	m := newMachine(t, 1000, "mosquitto", "apt-get", "systemctl")
	out, ok, calls := m.makeDeps(t)
	want := "the tests need chromium firefox-esr; install them with:\n  sudo apt-get install -y chromium firefox-esr\n"
	if ok || out != want || len(calls) != 0 {
		t.Errorf("not root, two missing: ok %v, output %q, calls %q; want failure, output %q, no calls", ok, out, calls, want)
	}
}

// Root on a machine without apt-get (not Debian) is told the command too.
func TestRootWithoutAptIsToldTheCommand(t *testing.T) {
	m := newMachine(t, 0, "chromium", "firefox-esr")
	out, ok, _ := m.makeDeps(t)
	if want := "the tests need mosquitto; install them with:\n  sudo apt-get install -y mosquitto\n"; ok || out != want {
		t.Errorf("root without apt-get: ok %v, output %q; want failure and %q", ok, out, want)
	}
}

// Root installs what is missing through apt, non-interactively and without
// the recommended packages, and stops the system broker the mosquitto
// package starts on 1883 (the tests start their own).
func TestRootInstallsWhatIsMissing(t *testing.T) {
	m := newMachine(t, 0, "chromium", "apt-get", "systemctl")
	out, ok, calls := m.makeDeps(t)
	want := []string{
		"apt-get DEBIAN_FRONTEND=noninteractive update -qq",
		"apt-get DEBIAN_FRONTEND=noninteractive install -y -qq --no-install-recommends mosquitto firefox-esr",
		"systemctl DEBIAN_FRONTEND= stop mosquitto",
	}
	if !ok || out != "installing mosquitto firefox-esr\n" || strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("root, two missing: ok %v, output %q, calls:\n  %s\nwant success, \"installing mosquitto firefox-esr\", calls:\n  %s",
			ok, out, strings.Join(calls, "\n  "), strings.Join(want, "\n  "))
	}
}

// A failed install stops make: the tests do not run on a machine that
// lacks what they need.
func TestRootFailedInstallStops(t *testing.T) {
	for _, step := range []string{"update", "install"} {
		m := newMachine(t, 0, "mosquitto", "chromium", "systemctl")
		m.add(t, "apt-get", fmt.Sprintf(`[ "$1" = %s ] && exit 100; exit 0`, step))
		_, ok, calls := m.makeDeps(t)
		if ok {
			t.Errorf("apt-get %s fails: make deps succeeded (calls %q)", step, calls)
		}
		for _, c := range calls {
			if strings.HasPrefix(c, "systemctl") || (step == "update" && strings.Contains(c, " install ")) {
				t.Errorf("apt-get %s fails: then %q was run", step, c)
			}
		}
	}
}
