// Package daemon wires the locker's parts together — store, hardware,
// controller and MQTT link — for both lockerd (real pins) and locker-sim
// (simulated pins). It decides nothing itself.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/openlocker/locker/controller"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/sync/client"
)

// Version is the software version reported in status.
var Version = "0.1.0"

// Options say what to run.
type Options struct {
	LockerID string
	DataDir  string // the SQLite database lives here
	Wiring   *wiring.Wiring
	Pins     hal.PinSource
	Hal      hal.Options
	Link     client.Options // Locker, LockerID, Software, Logger, Now and Transient are filled in
	Language string
	Logger   *slog.Logger
	// OnTrace is called with every recorded trace (after commit).
	OnTrace func(payload []byte)
	// ControlSocket, when set, is the Unix socket of the control API.
	ControlSocket string
	// Keypad tunes the lockout; zero values keep the controller's defaults.
	Keypad Keypad
	// PurgeAfter is the replay horizon; zero keeps the controller's default.
	PurgeAfter time.Duration
	// OnStorageWait, when set, is called once if the database cannot be
	// opened for writing at start-up (a full disk, a read-only data
	// folder): New then shows "Out of service" and tries again every
	// storageRetry until it can, or ctx ends.
	OnStorageWait func(err error)
}

// storageRetry is how often a locker waiting for its data folder tries again.
const storageRetry = 2 * time.Second

// Daemon is a running locker.
type Daemon struct {
	Store      *store.Store
	Hardware   *hal.Hardware
	Controller *controller.Controller
	Link       *client.Link
	log        *slog.Logger
	socket     string
	hub        *traceHub
}

// DBFile is the database file's name inside the data folder.
const DBFile = "locker.db"

// New drives the lock outputs off, opens the database, configures the
// pins and builds the parts. Every error says what and where, for a
// one-line message at start-up.
//
// The lock outputs go off first (hal.LocksOff), before anything that may
// fail: a corrupt database or a bad pin must not leave a coil's output
// floating, or where a crashed process left it. Every path out of New that
// does not return a Daemon leaves them off again (Halt).
func New(ctx context.Context, o Options) (d *Daemon, err error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	hopts := o.Hal
	hopts.Logger = log.With("part", "hal")
	locks, locksErr := hal.LocksOff(o.Wiring, o.Pins, hopts)
	var hw *hal.Hardware
	hwTried := false // hal.New's own error then says what LocksOff found
	defer func() {
		if err == nil {
			return
		}
		if hw != nil {
			hw.Halt()
			return
		}
		locks.Halt()
		if locksErr != nil && !hwTried { // one line: the start-up message
			err = fmt.Errorf("%w (lock outputs not all driven off: %s)", err, strings.ReplaceAll(locksErr.Error(), "\n", "; "))
		}
	}()
	st, err := store.Open(ctx, filepath.Join(o.DataDir, DBFile))
	if storeErr := err; store.Unavailable(storeErr) {
		// The pins first, to keep the doors shut and say so on the display.
		hwTried = true
		if hw, err = hal.New(o.Wiring, o.Pins, hopts); err != nil {
			return nil, err
		}
		if st, err = waitForStore(ctx, o, hw, log, storeErr); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	if hw == nil {
		hwTried = true
		if hw, err = hal.New(o.Wiring, o.Pins, hopts); err != nil {
			st.Close()
			return nil, err
		}
	}
	if locksErr != nil {
		log.Warn("lock outputs: not all driven off before the hardware was configured", "err", locksErr)
	}
	hub := newTraceHub()
	onTrace := hub.publish
	if o.OnTrace != nil {
		onTrace = func(p []byte) { hub.publish(p); o.OnTrace(p) }
	}
	ctl, err := controller.New(controller.Options{
		LockerID: o.LockerID, Store: st, Cabinet: hw, Software: Version, Language: o.Language,
		Logger: log.With("part", "controller"), OnTrace: onTrace,
		LockoutAfter: o.Keypad.LockoutAfter, LockoutBase: o.Keypad.LockoutBase, LockoutMax: o.Keypad.LockoutMax,
		MinCodeLen: o.Keypad.MinCodeLen, PurgeAfter: o.PurgeAfter,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	lo := o.Link
	lo.LockerID, lo.Locker, lo.Software = o.LockerID, ctl, Version
	// Envelopes expire at the controller's time (trusted, or estimated on a
	// board that booted in 1970), and a grants envelope that fails because
	// the storage cannot be written is tried again until it applies.
	lo.Now, lo.Transient = ctl.Now, store.Unavailable
	if lo.InFlight == 0 {
		lo.InFlight = client.MaxInFlight // Mosquitto's default max_inflight_messages
	}
	lo.Logger = log.With("part", "sync")
	link, err := client.New(lo)
	if err != nil {
		st.Close()
		return nil, err
	}
	return &Daemon{Store: st, Hardware: hw, Controller: ctl, Link: link, log: log, socket: o.ControlSocket, hub: hub}, nil
}

// waitForStore is called when the database could not be opened because the
// data folder cannot be written (err). It keeps the doors shut, says so on
// the display and in the log, and tries again until it can: the locker
// recovers by itself when space returns. A corrupt or newer database is
// still refused at once.
func waitForStore(ctx context.Context, o Options, hw *hal.Hardware, log *slog.Logger, err error) (*store.Store, error) {
	path := filepath.Join(o.DataDir, DBFile)
	since := time.Now()
	log.Error("data folder cannot be written: doors stay shut until it can", "err", err)
	sdNotify("STATUS=out of service: the data folder cannot be written")
	l1, l2 := controller.OutOfService(o.Language)
	if err := hw.Show(l1, l2); err != nil {
		log.Warn("display", "err", err)
	}
	if o.OnStorageWait != nil {
		o.OnStorageWait(err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(storageRetry):
		}
		var st *store.Store
		st, err = store.Open(ctx, path)
		if err == nil || !store.Unavailable(err) {
			if err == nil {
				log.Info("data folder can be written again: starting", "after", time.Since(since).Round(time.Millisecond))
				sdNotify("STATUS=starting")
			}
			return st, err
		}
	}
}

// Run runs every part until ctx is done or one of them fails; then it
// stops the others, leaves every output inert and closes the database.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer d.Store.Close()
	defer d.Hardware.Halt()

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A panic anywhere ends the process without running the other
			// goroutines' defers: leave every coil off first.
			defer func() {
				if r := recover(); r != nil {
					d.Hardware.Halt()
					panic(r)
				}
			}()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
			cancel()
		}()
	}
	run("hardware", d.Hardware.Run)
	run("controller", d.Controller.Run)
	select {
	case <-d.Controller.Ready():
		d.log.Info("locker ready", "locker_id", d.Controller.LockerID())
		if err := sdNotify("READY=1"); err != nil {
			d.log.Warn("systemd notify", "err", err)
		}
		if iv := watchdogInterval(); iv > 0 {
			go watchdog(ctx, iv, d.Controller.Sync, func() error { return sdNotify("WATCHDOG=1") })
		}
		run("sync", d.Link.Run)
		if d.socket != "" {
			run("control socket", func(ctx context.Context) error { return d.serveControl(ctx, d.socket) })
		}
	case <-ctx.Done():
	}
	wg.Wait()
	sdNotify("STOPPING=1")
	close(errs)
	return <-errs
}
