package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runSim runs locker-sim expecting it to refuse to start, and returns its
// one-line message.
func runSimFailing(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(buildSim(t), args...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("locker-sim %v started; want a refusal", args)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("locker-sim %v: %v", args, err)
	}
	msg := strings.TrimSpace(string(out))
	if strings.Count(msg, "\n") != 0 {
		t.Fatalf("want one line, got:\n%s", msg)
	}
	return msg
}

func TestSimRefusesBadStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badWiring := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badWiring, []byte("name: x\ncompartments:\n  - number: 1\n    size: Q\n    lock: L1\n    door: D1\n"), 0o600)
	corrupt := filepath.Join(dir, "corrupt")
	os.MkdirAll(corrupt, 0o750)
	os.WriteFile(filepath.Join(corrupt, "locker.db"), []byte(strings.Repeat("garbage ", 1000)), 0o600)
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, []byte("x"), 0o600)

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"malformed wiring", []string{"-config", badWiring, "-data", t.TempDir(), "-http", freeAddr(t), "-broker", "tcp://" + freeAddr(t)},
			[]string{"bad.yaml:4", "size"}},
		{"missing wiring", []string{"-config", filepath.Join(dir, "nope.yaml"), "-data", t.TempDir()},
			[]string{"nope.yaml"}},
		{"unreachable broker", []string{"-broker", "tcp://" + freeAddr(t), "-data", t.TempDir(), "-http", freeAddr(t)},
			[]string{"-broker", "cannot reach the broker"}},
		{"corrupt database", []string{"-data", corrupt, "-http", freeAddr(t), "-broker", startListener(t)},
			[]string{"locker.db", "corrupt"}},
		{"data folder is a file", []string{"-data", notDir, "-http", freeAddr(t)},
			[]string{"data folder"}},
		{"bad locker id", []string{"-locker-id", "no spaces allowed", "-data", t.TempDir()},
			[]string{"-locker-id"}},
		{"bad central key", []string{"-central-key", "dev:AAAA", "-data", t.TempDir(), "-http", freeAddr(t)},
			[]string{"-central-key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := runSimFailing(t, tc.args...)
			if !strings.HasPrefix(msg, "locker-sim: ") {
				t.Errorf("message %q does not say who speaks", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// startListener accepts TCP connections on 127.0.0.1 (a stand-in broker
// that is reachable) and returns its tcp:// URL.
func startListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return "tcp://" + l.Addr().String()
}

func TestScriptMode(t *testing.T) {
	t.Parallel()
	bin := buildSim(t)
	out, err := exec.Command(bin, "-script", "../../testdata/scenarios/deposit-pickup.txt").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the traces match") || !strings.Contains(string(out), "picked_up c=09") {
		t.Fatalf("a good scenario: %v\n%s", err, out)
	}
	// A scenario whose expectation fails exits non-zero and says which line.
	bad := filepath.Join(t.TempDir(), "bad.txt")
	os.WriteFile(bad, []byte("grant put g-1 deposit size=S code=123456\nkeys 123456#\nexpect door 2 open\n"), 0o600)
	out, err = exec.Command(bin, "-script", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "line 3") || !strings.Contains(string(out), "door 2 is closed, want open") {
		t.Fatalf("a failing scenario: %v\n%s", err, out)
	}
	// Traces that differ from the golden log fail too.
	golden := strings.TrimSuffix(bad, ".txt") + ".golden"
	os.WriteFile(bad, []byte("grant put g-1 deposit size=S code=123456\n"), 0o600)
	os.WriteFile(golden, []byte("1 started\n> ack applied=0 stale=0\n"), 0o600)
	out, err = exec.Command(bin, "-script", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "differ") {
		t.Fatalf("a scenario that differs from its golden log: %v\n%s", err, out)
	}
}

func TestChineseOnTheSimulator(t *testing.T) {
	t.Parallel()
	s := startSim(t, startListener(t), t.TempDir(), "-language", "zh", "-config", "../../testdata/wiring/gpio-24-zh.yaml")
	var d []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		// The display is written a character at a time: wait for the whole prompt.
		if d = s.cabinet().Display; len(d) >= 2 && d[0] == "请输入取件码" && d[1] == "按 #确认" {
			break
		}
	}
	if len(d) < 2 || d[0] != "请输入取件码" || d[1] != "按 #确认" {
		t.Fatalf("display = %q", d)
	}
	if d := s.keys("1"); d[0] != "密码:*" {
		t.Fatalf("after a key the display = %q", d)
	}
}
