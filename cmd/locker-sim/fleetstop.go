package main

// Fleet shut-down. Once their context is done, every locker of a fleet
// process stops at once: its link publishes the offline status and waits
// for the broker's PUBACK (at most 2 s), disconnects, and its store
// deletes the acknowledged events held and closes the database (a
// checkpoint). That is CPU, for thousands of lockers together on a loaded
// machine: the wait for them grows with their number (fleetStopWait).

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"time"
)

// fleetStopBase and fleetStopPerLocker bound the shut-down of a fleet
// process's lockers: fleetStopBase, and fleetStopPerLocker for each. The
// lockers of one process stopped within 10 s each (the old bound, from the
// first) until 10,000 lockers in three processes stopped together: 3,000
// in one process took 8.4 s on two cores (2.8 ms each); 10 ms each leaves
// room for three processes stopping at once on a machine that other work
// also uses.
const (
	fleetStopBase      = 10 * time.Second
	fleetStopPerLocker = 10 * time.Millisecond
)

func fleetStopWait(n int) time.Duration { return fleetStopBase + time.Duration(n)*fleetStopPerLocker }

// stopLockers waits, fleetStopWait in all, for every locker's daemon to
// stop (their context is done), and says how long they took. The lockers
// still running then are an error, with the goroutines of the process
// written to its log (stderr), so that what they wait for shows.
func (f *fleet) stopLockers() error {
	t0 := time.Now()
	expired := make(chan struct{})
	limit := time.AfterFunc(fleetStopWait(len(f.lockers)), func() { close(expired) })
	defer limit.Stop()
	var errs []error
	late := 0
	for _, l := range f.lockers {
		if l == nil || l.d == nil {
			continue
		}
		select {
		case <-l.done:
		case <-expired:
		}
		select {
		case <-l.done:
			if l.err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", l.id, l.err))
			}
		default:
			late++
		}
	}
	if late > 0 {
		fmt.Fprintf(os.Stderr, "fleet: %d lockers still running %v after the stop; the goroutines:\n", late, fleetStopWait(len(f.lockers)))
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		errs = append(errs, fmt.Errorf("%d of %d lockers did not stop within %v", late, len(f.lockers), fleetStopWait(len(f.lockers))))
	}
	fmt.Fprintf(f.out, "fleet: %d lockers stopped in %.1f s\n", len(f.lockers)-late, time.Since(t0).Seconds())
	return errors.Join(errs...)
}
