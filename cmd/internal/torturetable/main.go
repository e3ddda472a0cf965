// Command torturetable runs the locker's torture tests (`make torture`) at
// their torture size and prints one table: what each tried, how much, and
// how much was lost. It exits 1 if any test failed, lost anything, or did
// not report. The last line says when and on what machine.
//
//	go run ./cmd/internal/torturetable          # minutes (LOCKER_TORTURE=1)
//	go run ./cmd/internal/torturetable -long    # longer (LOCKER_TORTURE_LONG=1)
//	go run ./cmd/internal/torturetable -only flood
//
// Each test runs once with `go test -count=1 -run '^NAME$' -v`, without
// -race (the sizes are what matters here; `make test` runs the same tests
// small and with -race). A test reports its row by printing one line
// `TORTURE-ROW {json}` to stdout; its whole output is kept in the log
// folder (-logs) for a failure to be read.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/openlocker/locker/cmd/internal/machine"
)

// torture is one test and what it proves.
type torture struct {
	name string // what the row is called
	pkg  string
	test string
}

var tortures = []torture{
	{"kill -9", "./cmd/locker-sim", "TestCrashKill9"},
	{"network cuts, broker restarts", "./cmd/locker-sim", "TestTortureNetwork"},
	{"disk full, read-only folder", "./cmd/locker-sim", "TestTortureStorage"},
	{"junk flood", "./cmd/locker-sim", "TestHostileInputChangesNothing"},
	{"physical faults", "./cmd/locker-sim", "TestTorturePhysicalFaults"},
	{"physical faults (RS485)", "./cmd/locker-sim", "TestTortureRS485"},
	{"kill -9 (Kerong RS485)", "./cmd/locker-sim", "TestCrashKill9Kerong"},
	{"keypad brute force", "./controller", "TestKeypadBruteForce"},
	{"adversarial model", "./controller", "TestModel"},
}

// row is what a test printed.
type row struct {
	Torture string `json:"torture"`
	Tried   int    `json:"tried"`
	Unit    string `json:"unit"`
	Lost    int    `json:"lost"`
	Detail  string `json:"detail"`
	// ByOdds: Lost is a matter of chance (a guessed code); the test
	// itself fails when it exceeds what the odds allow.
	ByOdds bool `json:"by_odds"`
}

type result struct {
	t       torture
	rows    []row
	err     error
	elapsed time.Duration
	log     string
}

func main() {
	long := flag.Bool("long", false, "the long sizes (LOCKER_TORTURE_LONG=1): more kills, cuts, cycles and weeks")
	only := flag.String("only", "", "run only the tortures whose name matches this regular expression")
	logs := flag.String("logs", filepath.Join("bin", "torture"), "folder for each test's full output")
	timeout := flag.Duration("timeout", 3*time.Hour, "time-out of each go test run")
	flag.Parse()
	var match *regexp.Regexp
	if *only != "" {
		var err error
		if match, err = regexp.Compile(*only); err != nil {
			fmt.Fprintf(os.Stderr, "torturetable: -only: %v\n", err)
			os.Exit(2)
		}
	}
	if err := os.MkdirAll(*logs, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "torturetable: %v\n", err)
		os.Exit(2)
	}
	env := append(os.Environ(), "LOCKER_TORTURE=1")
	size := "torture"
	if *long {
		env = append(env, "LOCKER_TORTURE_LONG=1")
		size = "long"
	}

	started := time.Now()
	var results []result
	for _, t := range tortures {
		if match != nil && !match.MatchString(t.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "torture %-32s ", t.name+" ...")
		r := run(t, env, *logs, *timeout)
		verdict := "ok"
		if r.err != nil {
			verdict = "FAILED: " + r.err.Error()
		}
		fmt.Fprintf(os.Stderr, "%s (%v)\n", verdict, r.elapsed.Round(time.Second))
		results = append(results, r)
	}

	failed := false
	fmt.Printf("\nTorture (%s sizes): what was tried, and what was lost (must be 0; for the brute force, doors opened by a guessed code)\n\n", size)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "torture\ttried\tlost\tresult\ttime")
	var notes []string
	for _, r := range results {
		verdict := "ok"
		switch {
		case r.err != nil:
			verdict, failed = "FAILED (log: "+r.log+")", true
		case len(r.rows) == 0:
			verdict, failed = "NO REPORT (log: "+r.log+")", true
		}
		if len(r.rows) == 0 {
			fmt.Fprintf(w, "%s\t—\t—\t%s\t%v\n", r.t.name, verdict, r.elapsed.Round(time.Second))
			continue
		}
		for _, rw := range r.rows {
			v := verdict
			switch {
			case rw.Lost > 0 && rw.ByOdds && r.err == nil:
				v = "ok: within the odds"
			case rw.Lost > 0:
				v, failed = "LOST "+fmt.Sprint(rw.Lost), true
			}
			fmt.Fprintf(w, "%s\t%d %s\t%d\t%s\t%v\n", rw.Torture, rw.Tried, rw.Unit, rw.Lost, v, r.elapsed.Round(time.Second))
			notes = append(notes, rw.Torture+": "+rw.Detail)
		}
	}
	w.Flush()
	fmt.Println()
	for _, n := range notes {
		fmt.Println("- " + n)
	}
	fmt.Printf("\nrun %s, %v, on %s\n", started.UTC().Format("2006-01-02 15:04 MST"), time.Since(started).Round(time.Second), machine.Describe())
	if failed {
		os.Exit(1)
	}
}

// run runs one test and collects its rows.
func run(t torture, env []string, logs string, timeout time.Duration) (r result) {
	r = result{t: t, log: filepath.Join(logs, t.test+".log")}
	start := time.Now()
	defer func() { r.elapsed = time.Since(start) }()
	f, err := os.Create(r.log)
	if err != nil {
		r.err = err
		return r
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-timeout", timeout.String(),
		"-run", "^"+t.test+"$", "-v", t.pkg)
	cmd.Env = env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		r.err = err
		return r
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(f, line)
			if js, ok := strings.CutPrefix(line, "TORTURE-ROW "); ok {
				var rw row
				if json.Unmarshal([]byte(js), &rw) == nil {
					r.rows = append(r.rows, rw)
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err = cmd.Wait()
	pw.Close()
	<-done
	if err != nil {
		r.err = fmt.Errorf("go test: %v", err)
	}
	return r
}
