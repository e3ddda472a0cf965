// Package scenario reads and plays scenario scripts: a readable line per
// step — a grant arrives, keys are pressed, a door is closed, a parcel is
// put in, the clock moves on, the power goes — against the real controller
// on a simulated cabinet, and writes the traces the locker recorded, one per
// line, for comparison with a golden log.
//
// The format (testdata/scenarios/*.txt):
//
//	# a comment; blank lines are skipped
//	grant put ID ACTION [size=M] [compartment=N] [parcel=P] [holder=PHONE] [code=DIGITS]
//	          [pickup=ID:DIGITS] [pickup-holder=PHONE] [pickup-valid=72h] [valid=24h] [uses=N]
//	          [version=N] [snapshot]
//	grant revoke ID [version=N]
//	command ACTION N [id=C]           # open, disable, enable
//	keys 123456#                      # pressed one by one on the keypad matrix
//	door N close|open|force
//	parcel N in|out
//	fault N FAULT                     # none, jammed_lock, sensor_stuck_open, …
//	board BUS ADDR FAULT              # a simulated RS485 board: no_answer, bad_checksum,
//	                                  # wrong_address, lost_reply, none (waits for its
//	                                  # sensor_fault, or its sensor_recovered for none)
//	advance 73h                       # the controller's clock moves on
//	powercut                          # the daemon dies and starts again; the cabinet stays
//	poweroff                          # the daemon dies; doors and parcels can still be moved
//	poweron                           # and starts again
//	expect display TEXT               # the display shows TEXT (in either line)
//	expect state N STATE              # the daemon's view of compartment N
//	expect door N open|closed         # the physical door
//	expect parcel N in|out            # the physical parcel
//
// A first line "# wiring: FILE" names the cabinet the scenario is written
// for (a file in testdata/wiring/); without it, the simulator's default.
package scenario

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Step is one line of a scenario.
type Step struct {
	Line int
	Verb string            // grant, command, keys, door, parcel, fault, advance, powercut, expect
	Args []string          // positional words after the verb
	Opts map[string]string // key=value words; a bare flag (snapshot) maps to "true"
}

func (s Step) String() string {
	return fmt.Sprintf("line %d: %s %s", s.Line, s.Verb, strings.Join(s.Args, " "))
}

// want says how many positional words each verb takes (min, max).
var want = map[string][2]int{
	"grant": {2, 3}, "command": {2, 2}, "keys": {1, 1}, "door": {2, 2}, "parcel": {2, 2},
	"fault": {2, 2}, "advance": {1, 1}, "powercut": {0, 0}, "poweroff": {0, 0}, "poweron": {0, 0},
	"expect": {2, 3}, "board": {3, 3},
}

// WiringDirective returns FILE of a first line "# wiring: FILE", or "".
func WiringDirective(data []byte) string {
	first, _, _ := strings.Cut(string(data), "\n")
	if rest, ok := strings.CutPrefix(strings.TrimSpace(first), "# wiring:"); ok {
		return strings.TrimSpace(rest)
	}
	return ""
}

// SilentUnlockDirective reports whether a comment line "# boards:
// silent-unlock" among the first lines asks for Kerong boards that answer
// nothing to an unlock (by default they answer with their status).
func SilentUnlockDirective(data []byte) bool {
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "#") {
			return false
		}
		if rest, ok := strings.CutPrefix(line, "# boards:"); ok && strings.TrimSpace(rest) == "silent-unlock" {
			return true
		}
	}
	return false
}

// Parse reads a scenario. Errors name the line.
func Parse(data []byte, source string) ([]Step, error) {
	var steps []Step
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		words, err := split(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", source, n, err)
		}
		st := Step{Line: n, Verb: words[0], Opts: map[string]string{}}
		for _, w := range words[1:] {
			if k, v, ok := strings.Cut(w, "="); ok && st.Verb != "expect" && st.Verb != "keys" {
				st.Opts[k] = v
			} else if w == "snapshot" {
				st.Opts[w] = "true"
			} else {
				st.Args = append(st.Args, w)
			}
		}
		lim, ok := want[st.Verb]
		if !ok {
			return nil, fmt.Errorf("%s:%d: unknown step %q", source, n, st.Verb)
		}
		if len(st.Args) < lim[0] || len(st.Args) > lim[1] {
			return nil, fmt.Errorf("%s:%d: %s takes %d to %d words, got %d", source, n, st.Verb, lim[0], lim[1], len(st.Args))
		}
		if err := check(st); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", source, n, err)
		}
		steps = append(steps, st)
	}
	return steps, sc.Err()
}

// split cuts a line into words; "double quotes" keep spaces.
func split(line string) ([]string, error) {
	var out []string
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
		if line[0] == '"' {
			end := strings.IndexByte(line[1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unclosed quote")
			}
			out = append(out, line[1:end+1])
			line = line[end+2:]
			continue
		}
		i := strings.IndexAny(line, " \t")
		if i < 0 {
			i = len(line)
		}
		w := line[:i]
		if j := strings.Index(w, "#"); j == 0 {
			break // a trailing comment
		}
		out = append(out, w)
		line = line[i:]
	}
	return out, nil
}

// check validates the words of one step.
func check(st Step) error {
	num := func(s string) error {
		if n, err := strconv.Atoi(s); err != nil || n < 1 {
			return fmt.Errorf("%q is not a compartment number", s)
		}
		return nil
	}
	oneOf := func(s string, allowed ...string) error {
		for _, a := range allowed {
			if s == a {
				return nil
			}
		}
		return fmt.Errorf("%q: want one of %s", s, strings.Join(allowed, ", "))
	}
	switch st.Verb {
	case "grant":
		if err := oneOf(st.Args[0], "put", "revoke"); err != nil {
			return err
		}
		if st.Args[0] == "put" && len(st.Args) != 3 {
			return fmt.Errorf("grant put ID ACTION")
		}
	case "command":
		if err := oneOf(st.Args[0], "open", "disable", "enable"); err != nil {
			return err
		}
		return num(st.Args[1])
	case "keys":
		if strings.Trim(st.Args[0], "0123456789*#ABCD") != "" {
			return fmt.Errorf("keys %q: only 0-9 * # A-D", st.Args[0])
		}
	case "door":
		if err := num(st.Args[0]); err != nil {
			return err
		}
		return oneOf(st.Args[1], "close", "open", "force")
	case "parcel":
		if err := num(st.Args[0]); err != nil {
			return err
		}
		return oneOf(st.Args[1], "in", "out")
	case "fault":
		return num(st.Args[0])
	case "board":
		if n, err := strconv.Atoi(st.Args[1]); err != nil || n < 0 {
			return fmt.Errorf("%q is not a board address", st.Args[1])
		}
		return oneOf(st.Args[2], "none", "no_answer", "bad_checksum", "wrong_address", "lost_reply")
	case "advance":
		if d, err := time.ParseDuration(st.Args[0]); err != nil || d <= 0 {
			return fmt.Errorf("advance %q: want a duration like 90s or 73h", st.Args[0])
		}
	case "expect":
		switch st.Args[0] {
		case "display":
			if len(st.Args) != 2 {
				return fmt.Errorf(`expect display "TEXT"`)
			}
		case "state", "door", "parcel":
			if len(st.Args) != 3 {
				return fmt.Errorf("expect %s N VALUE", st.Args[0])
			}
			return num(st.Args[1])
		default:
			return fmt.Errorf("expect %q: want display, state, door or parcel", st.Args[0])
		}
	}
	return nil
}
