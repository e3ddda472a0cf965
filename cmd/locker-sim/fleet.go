package main

// Fleet mode: `locker-sim -fleet N` runs N simulated lockers in one process
// against one broker, for the central team's load tests. Each locker is the
// real daemon (store, hal, controller, link) on its own simulated cabinet
// with its own database; a simulated central signs grants with the
// development key and sends them over the broker; simulated people type the
// codes, put parcels in, take them out and shut the doors through the
// cabinet model. The fleet reports memory and CPU per locker, the events
// delivered, and the reconnect curve after a broker outage.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/sync/central"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/protocol"
)

// Fleet defaults.
const (
	// fleetPoll is the sensor poll and keypad scan period in fleet mode. The
	// single locker polls every 5 ms; at 1,000 lockers that is 400,000
	// wake-ups a second for nothing, the largest CPU cost of an idle fleet.
	// 25 ms still debounces doors (debounce 50 ms) and reads a key press
	// (two scans down, two up) well within a person's 100 ms press; pulses
	// are timed by the lock driver, not by the poll.
	fleetPoll = 25 * time.Millisecond
	// fleetSample is how often the monitor samples every link's state: the
	// resolution of the reconnect curve. Above fleetBig lockers it is
	// fleetSampleBig: one sample reads every locker's state.
	fleetSample    = 20 * time.Millisecond
	fleetSampleBig = 100 * time.Millisecond
	// fleetBig is the size above which the fleet polls its cabinets every
	// wiring.MaxPoll (100 ms) by default instead of every fleetPoll: at
	// 10,000 lockers the simulated sensors and keypads, polled every 25 ms,
	// would take more than the two cores of a laptop by themselves.
	fleetBig = 1000
	// fleetScanBig is the keypad scan period above fleetBig lockers: a
	// scan of the simulated keypad costs about 6 µs, 65 µs/s per locker
	// at 100 ms. A person's key press still takes well under the 5 s the
	// fleet's people wait for it (about 1 s: handled, then three scans up).
	fleetScanBig = 250 * time.Millisecond
	// fleetStarters is how many lockers are opened at once at start-up,
	// per core: opening is CPU (SQLite reads the schema, the controller
	// boots), and 32 at once on two cores only made each wait longer, up to
	// fleetReady on a loaded machine.
	fleetStarters = 2
	// fleetReady is how long one locker may take from its start to Ready.
	fleetReady = 2 * time.Minute
	// fleetWaveClose is how long a reconnect wave may stay open before it is
	// reported with the lockers still down.
	fleetWaveClose = 15 * time.Minute
	// fleetInterval is the default mean time between two parcels at one
	// locker, up to fleetBig lockers; above, the fleet offers
	// fleetBigRate parcels a second in all. At 10,000 lockers on two
	// cores, a parcel every 30 s each (333 a second) took the cores that
	// the people's key presses and the grants' round trips wait for: 8,981
	// of 10,506 parcels failed on their time-outs. 20 a second is well
	// under what 1,200 lockers at 30 s offered (40) and carried.
	fleetInterval = 30 * time.Second
	fleetBigRate  = 20
)

// defaultInterval is the default -fleet-interval for n lockers.
func defaultInterval(n int) time.Duration {
	if n <= fleetBig {
		return fleetInterval
	}
	return max(fleetInterval, time.Duration(n)*time.Second/fleetBigRate)
}

// fleetOptions configure fleet mode.
type fleetOptions struct {
	N        int    // lockers: FLEET<First> … FLEET<First+N-1>, numbers of at least 4 digits
	First    int    // number of the first locker (default 1): several fleet processes share a broker with ranges of their own
	Broker   string // MQTT broker URL; "" starts a broker of the fleet's own on Embedded
	Embedded string // address of the fleet's own broker (default 127.0.0.1:1883)
	// Mosquitto is the path (or name on PATH) of a mosquitto binary: the
	// fleet's own broker is a Mosquitto it starts, with the open-file limit
	// and max_connections raised for N lockers, instead of the embedded one.
	Mosquitto string
	DataDir   string        // each locker's folder is DataDir/FLEETnnnn; the dev key is DataDir/central-dev.json
	Interval  time.Duration // mean time between two parcels at one locker (exponential)
	Duration  time.Duration // stop after this long; 0: at SIGINT or SIGTERM
	Report    time.Duration // a report line this often; 0: none until the end
	Poll      time.Duration // sensor poll and keypad scan period (default fleetPoll; wiring.MaxPoll above fleetBig lockers)
	// RestartAfter and Outage: with a broker of its own, stop it once every
	// locker has been online for RestartAfter, for Outage, then start it
	// again, to draw the reconnect curve. 0: never.
	RestartAfter, Outage time.Duration
	// Bench and Idle: run the benchmark (fleetbench.go) with Bench of
	// traffic and Idle of idle measurement, then stop. 0: run as usual.
	Bench, Idle time.Duration
	// IdleProfile: write a CPU profile of the idle window to this file.
	IdleProfile string
	// Procs: with Bench, run the lockers in this many child processes of
	// this program (fleetparent.go); 0: as many as the open-file limit
	// needs. Child: this process is such a child (-fleet-child).
	Procs int
	Child bool
	// BackoffMin and BackoffMax override the link's reconnect back-off
	// (default the protocol's 1 s and 5 min); tests shorten them.
	BackoffMin, BackoffMax time.Duration
	Out                    io.Writer    // reports; default os.Stdout
	Logger                 *slog.Logger // the lockers' logs; default errors only, to stderr (a broker outage would log N warnings)
}

// fleetFlags registers the fleet's own flags on fs. locker-sim's -broker,
// -data and -quiet apply too (see runFleet's caller).
func fleetFlags(fs *flag.FlagSet) *fleetOptions {
	o := &fleetOptions{}
	fs.IntVar(&o.N, "fleet", 0, "run N simulated lockers (FLEET0001…) in this process with random traffic from a simulated central, and report memory, CPU, events and the reconnect curve")
	fs.IntVar(&o.First, "fleet-first", 1, "fleet: number of the first locker (-fleet-first 20000: FLEET20000…), so that several fleet processes can share one broker")
	fs.StringVar(&o.Embedded, "fleet-listen", embeddedAddr, "fleet, without -broker: the address of the fleet's own broker (keep it on 127.0.0.1)")
	fs.StringVar(&o.Mosquitto, "fleet-mosquitto", "", "fleet, without -broker: start this mosquitto binary (e.g. mosquitto) on 127.0.0.1 as the fleet's broker instead of the embedded one, with the file limit and max_connections raised")
	fs.DurationVar(&o.Interval, "fleet-interval", 0, "fleet: mean time between two parcels at one locker (default 30s; above 1,000 lockers, 20 parcels a second in all: 8m20s at 10,000)")
	fs.DurationVar(&o.Duration, "fleet-duration", 0, "fleet: stop after this long (0: at Ctrl-C)")
	fs.DurationVar(&o.Report, "fleet-report", 10*time.Second, "fleet: print a report line this often")
	fs.DurationVar(&o.Poll, "fleet-poll", 0, "fleet: sensor poll and keypad scan period of every locker (default 25ms, 100ms above 1,000 lockers)")
	fs.DurationVar(&o.RestartAfter, "fleet-restart-after", 0, "fleet, broker of its own (no -broker): restart the broker once the fleet has been online this long (0: never)")
	fs.DurationVar(&o.Outage, "fleet-outage", 5*time.Second, "fleet: how long the fleet's own broker stays down for a restart")
	fs.DurationVar(&o.Bench, "fleet-bench", 0, "fleet: run the benchmark and exit: connect every locker, trade parcels for this long, stop the traffic, measure idle CPU over -fleet-idle, restart the broker (needs a broker of its own) and draw the reconnect curve")
	fs.IntVar(&o.Procs, "fleet-procs", 0, "fleet, -fleet-bench: run the lockers in this many processes (0: as many as the open-file limit of one process needs)")
	fs.BoolVar(&o.Child, "fleet-child", false, "fleet, -fleet-bench: run as a child of a fleet of several processes (a line protocol on stdin and stdout)")
	fs.StringVar(&o.IdleProfile, "fleet-idle-profile", "", "fleet, -fleet-bench: write a CPU profile of the idle window to this file (go tool pprof)")
	fs.DurationVar(&o.Idle, "fleet-idle", 30*time.Second, "fleet, -fleet-bench: how long the idle CPU is measured")
	return o
}

// runFleet runs the fleet until SIGINT, SIGTERM or opts.Duration, printing
// reports, and returns the exit code.
func runFleet(opts fleetOptions) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	if opts.Bench > 0 && !opts.Child {
		if procs, err := fleetProcs(opts); err != nil {
			fmt.Fprintf(os.Stderr, "locker-sim: -fleet: %v\n", err)
			return 1
		} else if procs > 1 {
			opts.Procs = procs
			if err := runFleetParent(ctx, opts); err != nil {
				fmt.Fprintf(os.Stderr, "locker-sim: -fleet: %v\n", err)
				return 1
			}
			return 0
		}
	}
	f, err := newFleet(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "locker-sim: -fleet: %v\n", err)
		return 1
	}
	run := f.run
	if opts.Bench > 0 {
		run = f.bench
	}
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "locker-sim: -fleet: %v\n", err)
		return 1
	}
	return 0
}

// fleet is N lockers, their central and their monitor.
type fleet struct {
	o       fleetOptions
	out     io.Writer
	proto   io.Writer // a child's lines to its parent (stdout)
	in      io.Reader // a child's lines from its parent (stdin)
	log     *slog.Logger
	kp      protocol.KeyPair
	w       *wiring.Wiring
	scan    time.Duration // keypad scan period: Poll, or fleetScanBig above fleetBig lockers
	nonce   string        // makes grant ids unique across runs on the same databases
	started time.Time
	// traffic ends the people's parcels (set before start; nil: the
	// fleet's context): a parcel under way is finished first, a parcel
	// waiting for its recipient stays in the locker.
	traffic context.Context
	people  sync.WaitGroup // the person goroutines

	lockers  []*fleetLocker
	byID     map[string]*fleetLocker // fixed once started
	template string                  // the database a new locker starts from (fleetstart.go)
	central  *fleetCentral
	mon      *fleetMonitor
	broker   *fleetBroker // the fleet's own broker, or nil (-broker); guarded by brokerMu
	brokerMu sync.Mutex

	recorded  atomic.Int64 // traces recorded by the lockers (OnTrace)
	grants    atomic.Int64 // grants envelopes acknowledged
	deposits  atomic.Int64
	pickups   atomic.Int64
	skipped   atomic.Int64 // parcels not sent: the locker was offline
	failMu    sync.Mutex
	failures  map[string]int // guarded by failMu
	lastCPU   time.Duration
	lastAt    time.Time
	lastTrace int64
}

// fleetLocker is one simulated locker.
type fleetLocker struct {
	i    int
	id   string
	cab  *simulator.Cabinet
	d    *daemon.Daemon
	done chan struct{} // closed when the daemon's Run returned
	err  error         // Run's error, once done
	acks chan wire.GrantsAck

	online atomic.Bool  // the central saw its online status
	traces atomic.Int64 // traces the central received from it
}

func newFleet(o fleetOptions) (*fleet, error) {
	if o.N < 1 || o.N > fleetMax {
		return nil, fmt.Errorf("%d lockers: want 1 to %d", o.N, fleetMax)
	}
	if o.First == 0 {
		o.First = 1
	}
	if o.First < 1 || o.First+o.N-1 > 99_999_999 {
		return nil, fmt.Errorf("-fleet-first %d: want 1 to %d", o.First, 99_999_999-o.N+1)
	}
	if o.Mosquitto != "" {
		if o.Broker != "" {
			return nil, errors.New("-fleet-mosquitto starts a broker of the fleet's own: not with -broker")
		}
		p, err := findMosquitto(o.Mosquitto)
		if err != nil {
			return nil, err
		}
		o.Mosquitto = p
	}
	if o.Idle <= 0 {
		o.Idle = 30 * time.Second
	}
	if o.Interval <= 0 {
		o.Interval = defaultInterval(o.N)
	}
	if o.Poll <= 0 {
		o.Poll = fleetPoll
		if o.N > fleetBig {
			o.Poll = wiring.MaxPoll
		}
	}
	if o.Embedded == "" {
		o.Embedded = embeddedAddr
	}
	if o.DataDir == "" {
		o.DataDir = "var"
	}
	out := o.Out
	if out == nil {
		out = os.Stdout
		if o.Child {
			out = os.Stderr // stdout carries the protocol
		}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	files := uint64(o.N)*fleetFilesPerLocker + 1024
	if o.Broker == "" && o.Mosquitto == "" {
		files += uint64(o.N) // the embedded broker's end of each connection
	}
	if err := raiseFileLimit(files); err != nil {
		return nil, err
	}
	kp, err := devKeyPair(filepath.Join(o.DataDir, devKeyFile))
	if err != nil {
		return nil, err
	}
	w, err := fleetWiring(o.Poll)
	if err != nil {
		return nil, err
	}
	scan := o.Poll
	if o.N > fleetBig {
		scan = max(scan, fleetScanBig)
	}
	f := &fleet{o: o, out: out, scan: scan, proto: os.Stdout, in: os.Stdin, log: log, kp: kp, w: w, nonce: strconv.FormatInt(time.Now().Unix(), 36),
		byID: map[string]*fleetLocker{}, failures: map[string]int{}}
	f.mon = newFleetMonitor(o.N)
	return f, nil
}

// fleetWiring is the simulator's default cabinet (24 compartments, keypad,
// display) polled every poll instead of every 5 ms.
func fleetWiring(poll time.Duration) (*wiring.Wiring, error) {
	w, err := simulator.DefaultWiring()
	if err != nil {
		return nil, err
	}
	if poll < wiring.MinPoll || poll > wiring.MaxPoll {
		return nil, fmt.Errorf("-fleet-poll %v: want %v to %v", poll, wiring.MinPoll, wiring.MaxPoll)
	}
	w.Sensors.Poll = poll
	w.Sensors.Debounce = max(w.Sensors.Debounce, 2*poll)
	return w, nil
}

// fleetMax is the most lockers in one fleet process.
const fleetMax = 100_000

// fleetID is the id of locker number n: FLEET0001, FLEET20000.
func fleetID(n int) string { return fmt.Sprintf("FLEET%04d", n) }

// run starts the broker (if embedded), the central and the lockers, runs
// the traffic until ctx is done, stops everything and prints the final
// report.
func (f *fleet) run(ctx context.Context) error {
	if err := f.start(ctx); err != nil {
		f.stop()
		return err
	}
	var wg sync.WaitGroup
	if f.o.Report > 0 {
		wg.Go(func() {
			t := time.NewTicker(f.o.Report)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					fmt.Fprintln(f.out, f.line())
				}
			}
		})
	}
	if f.broker != nil && f.o.RestartAfter > 0 {
		wg.Go(func() { f.restartLater(ctx) })
	}
	<-ctx.Done()
	wg.Wait()
	fmt.Fprintln(f.out, f.line())
	m := measure() // while every locker still runs
	err := f.stop()
	f.finalReport(f.out, m)
	return err
}

// start opens every locker and waits until each is ready; it does not wait
// for the connections.
func (f *fleet) start(ctx context.Context) error {
	f.started = time.Now()
	f.lastAt = f.started
	f.lastCPU = processCPU()
	url := f.o.Broker
	if url == "" {
		b := &fleetBroker{addr: f.o.Embedded, mosquitto: f.o.Mosquitto, dir: filepath.Join(f.o.DataDir, "mosquitto")}
		if err := b.start(); err != nil {
			return err
		}
		f.brokerMu.Lock()
		f.broker = b
		f.brokerMu.Unlock()
		url = "tcp://" + f.o.Embedded
	} else if err := reachable(url); err != nil {
		return fmt.Errorf("-broker %s: %w", url, err)
	}
	f.o.Broker = url
	f.lockers = make([]*fleetLocker, f.o.N)
	for i := range f.lockers {
		l := &fleetLocker{i: i, id: fleetID(f.o.First + i), done: make(chan struct{}), acks: make(chan wire.GrantsAck, 4)}
		f.lockers[i] = l
		f.byID[l.id] = l
	}
	c, err := newFleetCentral(url, f.kp, fmt.Sprintf("%d-%s", f.o.First, f.nonce), f.byID)
	if err != nil {
		return err
	}
	f.central = c
	fmt.Fprintf(f.out, "fleet: %d lockers (%s…%s), broker %s, data %s, %d compartments each, sensor poll %v, keypad scan %v, a parcel every %v per locker on average\n",
		f.o.N, fleetID(f.o.First), fleetID(f.o.First+f.o.N-1), url, f.o.DataDir, len(f.w.Compartments), f.o.Poll, f.scan, f.o.Interval)

	// Open the lockers a few at a time, each on a copy of one migrated
	// database.
	if f.template, err = f.fleetTemplate(ctx); err != nil {
		return err
	}
	next := make(chan *fleetLocker)
	errs := make(chan error, f.o.N)
	var wg sync.WaitGroup
	for range fleetStarters * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for l := range next {
				if err := f.startLocker(ctx, l); err != nil {
					errs <- fmt.Errorf("%s: %w", l.id, err)
				}
			}
		})
	}
	for _, l := range f.lockers {
		next <- l
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	go f.mon.run(ctx, f.lockers)
	traffic := f.traffic
	if traffic == nil {
		traffic = ctx
	}
	for _, l := range f.lockers {
		f.people.Go(func() { f.person(ctx, traffic, l) })
	}
	fmt.Fprintf(f.out, "fleet: %d lockers ready in %v\n", f.o.N, time.Since(f.started).Round(time.Millisecond))
	return nil
}

// startLocker builds one locker and waits until its controller is ready.
func (f *fleet) startLocker(ctx context.Context, l *fleetLocker) error {
	dir := filepath.Join(f.o.DataDir, l.id)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := copyNew(f.template, filepath.Join(dir, daemon.DBFile)); err != nil {
		return err
	}
	log := f.log.With("fleet_locker", l.id)
	cab, err := simulator.New(f.w, simulator.Options{StatePath: filepath.Join(dir, cabinetState), Logger: nil})
	if err != nil {
		return err
	}
	l.cab = cab
	d, err := daemon.New(ctx, daemon.Options{
		LockerID: l.id, DataDir: dir, Wiring: f.w, Logger: log,
		Pins: cab.ByName,
		// The simulated pins tell of their changes: the sensors and the
		// keypad are read when something happened (and every
		// hal.RestPoll), not every poll while the locker is idle.
		Hal: hal.Options{NoDisplayDelays: true, Buses: cab.Bus, ScanInterval: f.scan, InputChanges: cab.SubscribeInputs},
		Link: client.Options{Broker: f.o.Broker, Keys: f.kp.Keyring(),
			BackoffMin: f.o.BackoffMin, BackoffMax: f.o.BackoffMax},
		OnTrace: func([]byte) { f.recorded.Add(1) },
	})
	if err != nil {
		cab.Halt()
		return err
	}
	l.d = d
	go func() {
		l.err = d.Run(ctx)
		cab.Halt()
		close(l.done)
	}()
	select {
	case <-d.Controller.Ready():
		return nil
	case <-l.done:
		return fmt.Errorf("stopped before it was ready: %v", l.err)
	case <-time.After(fleetReady):
		return fmt.Errorf("not ready within %v", fleetReady)
	}
}

// stop waits for every locker's daemon (their context is done:
// stopLockers) and closes the central and the broker.
func (f *fleet) stop() error {
	err := f.stopLockers()
	if f.central != nil {
		f.central.close()
	}
	f.brokerMu.Lock()
	if f.broker != nil {
		f.broker.stop()
	}
	f.brokerMu.Unlock()
	return err
}

func (f *fleet) fail(reason string) {
	f.failMu.Lock()
	f.failures[reason]++
	f.failMu.Unlock()
}

// person plays the people of one locker: a courier deposits a parcel with a
// code from the central, and later its recipient takes it out, one parcel
// at a time, at random intervals.
func (f *fleet) person(ctx, traffic context.Context, l *fleetLocker) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(l.i)))
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-traffic.Done():
			return false
		case <-t.C:
			return true
		}
	}
	exp := func(mean time.Duration) time.Duration {
		return time.Duration(min(rng.ExpFloat64(), 5) * float64(mean))
	}
	if !sleep(time.Duration(rng.Int64N(int64(f.o.Interval)))) {
		return
	}
	for k := 1; ; k++ {
		if !l.d.Link.Connected() {
			f.skipped.Add(1)
		} else if err := f.parcel(ctx, traffic, l, rng, k, exp); err != nil && ctx.Err() == nil {
			f.fail(err.Error())
			for n := 1; n <= len(f.w.Compartments); n++ { // leave no door open
				l.cab.CloseDoor(n)
			}
		}
		if !sleep(exp(f.o.Interval)) {
			return
		}
	}
}

var fleetSizes = []string{"S", "S", "M", "M", "L", "XL"}

// parcel plays one parcel's life at locker l: grant, deposit, wait, pickup.
// When traffic ends while the parcel waits for its recipient, it stays in
// the locker. Its errors are short and without ids: they are counted by
// text.
func (f *fleet) parcel(ctx, traffic context.Context, l *fleetLocker, rng *rand.Rand, k int, exp func(time.Duration) time.Duration) error {
	human := func() time.Duration { return time.Duration(300+rng.IntN(1200)) * time.Millisecond }
	code := func() string { return fmt.Sprintf("%08d", rng.IntN(100_000_000)) }
	phone := func() string { return fmt.Sprintf("13%09d", rng.IntN(1_000_000_000)) }
	now := time.Now().UTC().Truncate(time.Millisecond)
	until, puntil := now.Add(24*time.Hour), now.Add(72*time.Hour)
	dep, pick := code(), code()
	id := fmt.Sprintf("g-%s-%d", f.nonce, k)
	body := wire.GrantsBody{Kind: "grants", LockerID: l.id, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Ops: []wire.GrantOp{{
		Op: "put", GrantID: id, Version: 1, Action: "deposit", Size: fleetSizes[rng.IntN(len(fleetSizes))],
		ParcelID: fmt.Sprintf("FL%s%s%06d", f.nonce, l.id[5:], k), Holder: phone(),
		CodeHash: codeHash(l.id, dep), ValidUntil: &until,
		Pickup: &wire.PickupSpec{GrantID: id + "-p", Holder: phone(), CodeHash: codeHash(l.id, pick), ValidUntil: &puntil},
	}}}
	for len(l.acks) > 0 { // a late ack of an earlier envelope
		<-l.acks
	}
	if err := f.central.send(l.id, protocol.SuffixGrants, body); err != nil {
		return errors.New("central: publish failed")
	}
	select {
	case ack := <-l.acks:
		if ack.Applied != 1 {
			return errors.New("grant not applied")
		}
		f.grants.Add(1)
	case <-time.After(30 * time.Second):
		return errors.New("no grants ack within 30 s")
	case <-ctx.Done():
		return ctx.Err()
	}

	// The courier.
	if !f.sleep(ctx, human()) {
		return ctx.Err()
	}
	n, err := f.open(ctx, l, dep, 0)
	if err != nil {
		return fmt.Errorf("deposit: %w", err)
	}
	f.sleep(ctx, human())
	if err := l.cab.SetParcel(n, true); err != nil {
		return fmt.Errorf("deposit: %w", err)
	}
	f.sleep(ctx, human()/2)
	if err := l.cab.CloseDoor(n); err != nil {
		return fmt.Errorf("deposit: %w", err)
	}
	f.deposits.Add(1)

	// The recipient, later.
	if !f.sleep(traffic, exp(f.o.Interval/2)+time.Second) {
		return ctx.Err()
	}
	if _, err := f.open(ctx, l, pick, n); err != nil {
		return fmt.Errorf("pickup: %w", err)
	}
	f.sleep(ctx, human())
	if err := l.cab.SetParcel(n, false); err != nil {
		return fmt.Errorf("pickup: %w", err)
	}
	f.sleep(ctx, human()/2)
	if err := l.cab.CloseDoor(n); err != nil {
		return fmt.Errorf("pickup: %w", err)
	}
	f.pickups.Add(1)
	f.sleep(ctx, time.Second) // the door settles before the next parcel
	return nil
}

func (f *fleet) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// codeHash is the code hash of docs/protocol.md; the controller's own function.
func codeHash(locker, code string) string { return wire.CodeHash(locker, code) }

// open types code and '#' on locker l's keypad and waits until a door
// springs open: door n, or any door when n is 0. It returns the door.
func (f *fleet) open(ctx context.Context, l *fleetLocker, code string, n int) (int, error) {
	for i := 0; i < len(code); i++ {
		if err := f.press(ctx, l, code[i]); err != nil {
			return 0, err
		}
	}
	if err := f.press(ctx, l, '#'); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n != 0 {
			if c, err := l.cab.Compartment(n); err == nil && c.Door == simulator.DoorOpen {
				return n, nil
			}
		} else {
			for _, c := range l.cab.Snapshot().Compartments {
				if c.Door == simulator.DoorOpen {
					return c.Number, nil
				}
			}
		}
		if !f.sleep(ctx, f.o.Poll) {
			return 0, ctx.Err()
		}
	}
	return 0, errors.New("no door opened within 5 s")
}

// press presses key k until the controller has handled it and releases it
// until the scanner has seen it up, as scenario.Run does.
func (f *fleet) press(ctx context.Context, l *fleetLocker, k byte) error {
	waitFor := func(cond func() bool) bool {
		for deadline := time.Now().Add(5 * time.Second); !cond(); {
			if time.Now().After(deadline) || !f.sleep(ctx, f.o.Poll) {
				return false
			}
		}
		return true
	}
	before := l.d.Controller.KeysHandled()
	if err := l.cab.PressKey(k); err != nil {
		return err
	}
	ok := waitFor(func() bool { return l.d.Controller.KeysHandled() > before })
	scans := l.cab.Scans()
	if err := l.cab.ReleaseKey(k); err != nil {
		return err
	}
	if !ok {
		return errors.New("a key was not handled within 5 s")
	}
	if !waitFor(func() bool { return l.cab.Scans() >= scans+3 }) {
		return errors.New("the keypad was not scanned")
	}
	return nil
}

// restartLater stops the fleet's own broker once every locker has been
// online for RestartAfter, and starts it again after Outage.
func (f *fleet) restartLater(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var allSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if f.mon.connected() < f.o.N {
			allSince = time.Time{}
			continue
		}
		if allSince.IsZero() {
			allSince = time.Now()
		}
		if time.Since(allSince) >= f.o.RestartAfter {
			break
		}
	}
	f.restartBroker(ctx)
}

// restartBroker stops the fleet's own broker for Outage and starts it
// again, and tells the monitor when it is back. It reports whether the
// broker is back.
func (f *fleet) restartBroker(ctx context.Context) bool {
	fmt.Fprintf(f.out, "fleet: stopping the broker for %v\n", f.o.Outage)
	f.brokerMu.Lock()
	f.broker.stop()
	f.brokerMu.Unlock()
	if !f.sleep(ctx, f.o.Outage) {
		return false
	}
	f.brokerMu.Lock()
	err := f.broker.start()
	f.brokerMu.Unlock()
	if err != nil {
		fmt.Fprintf(f.out, "fleet: the broker did not start again: %v\n", err)
		return false
	}
	f.mon.brokerBack(time.Now())
	fmt.Fprintln(f.out, "fleet: the broker is back")
	return true
}

// fleetMeasure is one reading of the process.
type fleetMeasure struct {
	heapInuse, rss uint64
	goroutines     int
	cpu            time.Duration // user + system since the process started
}

func measure() fleetMeasure {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return fleetMeasure{heapInuse: ms.HeapInuse, rss: processRSS(), goroutines: runtime.NumGoroutine(), cpu: processCPU()}
}

// processRSS is VmRSS from /proc/self/status, in bytes; 0 where there is no /proc.
func processRSS() uint64 { return statusRSS("/proc/self/status") }

// processCPU is the user and system time of the process; 0 where there
// is no /proc.
func processCPU() time.Duration { return statCPU("/proc/self/stat") }

func mb(b float64) string { return fmt.Sprintf("%.2f MB", b/(1<<20)) }

// line is one periodic report line.
func (f *fleet) line() string {
	m := measure()
	now := time.Now()
	n := float64(f.o.N)
	cores := 0.0
	if dt := now.Sub(f.lastAt); dt > 0 {
		cores = float64(m.cpu-f.lastCPU) / float64(dt)
	}
	delivered := f.central.traces.Load()
	rate := 0.0
	if dt := now.Sub(f.lastAt).Seconds(); dt > 0 {
		rate = float64(delivered-f.lastTrace) / dt
	}
	f.lastAt, f.lastCPU, f.lastTrace = now, m.cpu, delivered
	f.failMu.Lock()
	failed := 0
	for _, c := range f.failures {
		failed += c
	}
	f.failMu.Unlock()
	return fmt.Sprintf("fleet %6s: %d/%d online  heap %s/locker  rss %s/locker  cpu %.2f cores (%.2f ms/s per locker)  goroutines %d  events %d recorded, %d at central (%.0f/s)  parcels %d in, %d out, %d failed, %d skipped offline",
		time.Since(f.started).Round(time.Second), f.mon.connected(), f.o.N, mb(float64(m.heapInuse)/n), mb(float64(m.rss)/n),
		cores, cores*1000/n, m.goroutines, f.recorded.Load(), delivered, rate,
		f.deposits.Load(), f.pickups.Load(), failed, f.skipped.Load())
}

// finalReport prints the totals, the failures and the reconnect curves; m
// is the last measurement taken while the fleet ran.
func (f *fleet) finalReport(w io.Writer, m fleetMeasure) {
	n := float64(f.o.N)
	el := time.Since(f.started)
	fmt.Fprintf(w, "\nfleet report: %d lockers for %v\n", f.o.N, el.Round(time.Second))
	fmt.Fprintf(w, "  memory      heap in use %s per locker, RSS %s per locker (%s in all), %.1f goroutines per locker\n",
		mb(float64(m.heapInuse)/n), mb(float64(m.rss)/n), mb(float64(m.rss)), float64(m.goroutines)/n)
	fmt.Fprintf(w, "  cpu         %.2f cores on average over the run (%.2f ms/s per locker), %d cores here\n",
		float64(m.cpu)/float64(el), float64(m.cpu)/float64(el)*1000/n, runtime.NumCPU())
	fmt.Fprintf(w, "  events      %d recorded by the lockers, %d traces and %d status messages received by the central\n",
		f.recorded.Load(), f.central.traces.Load(), f.central.statuses.Load())
	fmt.Fprintf(w, "  parcels     %d grants acknowledged, %d deposited, %d picked up, %d not sent (locker offline)\n",
		f.grants.Load(), f.deposits.Load(), f.pickups.Load(), f.skipped.Load())
	f.failMu.Lock()
	reasons := make([]string, 0, len(f.failures))
	for r := range f.failures {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "  failed      %d× %s\n", f.failures[r], r)
	}
	f.failMu.Unlock()
	waves := f.mon.waves()
	if len(waves) == 0 {
		fmt.Fprintln(w, "  reconnects  no broker outage seen (restart the broker, or -fleet-restart-after with the embedded one)")
	}
	for _, wv := range waves {
		wv.print(w)
	}
}

// fleetCentral plays the central server for the whole fleet: one MQTT
// client that signs and sends grants and counts what the lockers publish.
type fleetCentral struct {
	cl   *central.Client
	byID map[string]*fleetLocker // read-only

	traces, statuses, acks atomic.Int64
}

func newFleetCentral(url string, kp protocol.KeyPair, nonce string, byID map[string]*fleetLocker) (*fleetCentral, error) {
	c := &fleetCentral{byID: byID}
	cl, err := central.Dial(central.Options{Broker: url, ClientID: "fleet-central-" + nonce, Key: kp,
		Reconnect: true, MaxReconnectInterval: time.Second,
		Unordered: true, // the handler does not block; order across lockers does not matter
		Subscribe: []string{
			protocol.Topic("+", protocol.SuffixTraces),
			protocol.Topic("+", protocol.SuffixStatus),
			protocol.Topic("+", protocol.SuffixGrantsAck),
		}, OnMessage: c.onMessage})
	if err != nil {
		return nil, err
	}
	c.cl = cl
	return c, nil
}

// onMessage counts and routes one message; it never blocks.
func (c *fleetCentral) onMessage(m central.Message) {
	rest, ok := strings.CutPrefix(m.Topic, protocol.TopicPrefix)
	if !ok {
		return
	}
	id, suffix, _ := strings.Cut(rest, "/")
	l := c.byID[id]
	if l == nil {
		return // another locker on the same broker
	}
	switch suffix {
	case protocol.SuffixTraces:
		c.traces.Add(1)
		l.traces.Add(1)
	case protocol.SuffixStatus:
		c.statuses.Add(1)
		var st struct {
			State string `json:"state"`
		}
		if json.Unmarshal(m.Payload, &st) == nil && st.State == "online" {
			l.online.Store(true)
		}
	case protocol.SuffixGrantsAck:
		c.acks.Add(1)
		var ack wire.GrantsAck
		if json.Unmarshal(m.Payload, &ack) == nil {
			select {
			case l.acks <- ack:
			default:
			}
		}
	}
}

// send signs v with the development key and publishes it to the locker.
func (c *fleetCentral) send(locker, suffix string, v any) error {
	return c.cl.Send(locker, suffix, v)
}

func (c *fleetCentral) close() { c.cl.Close() }

// fleetMonitor samples every link's connection state and groups the
// losses into waves: a wave opens with the first locker that goes down and
// closes once every locker that went down in it is back.
type fleetMonitor struct {
	every time.Duration // the sampling period
	mu    sync.Mutex
	up    []bool      // guarded by mu
	nUp   int         // guarded by mu
	cur   *fleetWave  // guarded by mu; the open wave, or nil
	done  []fleetWave // guarded by mu; closed waves of at least half the fleet
	flaps int         // guarded by mu; closed waves of fewer lockers
	back  time.Time   // guarded by mu; the broker's return, when known
}

// fleetWave is one loss of connection across the fleet.
type fleetWave struct {
	start time.Time // the first locker went down
	back  time.Time // the broker came back: known (restarted by us) or the first reconnect
	known bool      // back was told, not estimated
	down  map[int]time.Time
	up    map[int]time.Time // first reconnect of each locker after its loss
	open  int               // lockers still down when the wave was closed by time-out
}

func newFleetMonitor(n int) *fleetMonitor {
	every := fleetSample
	if n > fleetBig {
		every = fleetSampleBig
	}
	return &fleetMonitor{up: make([]bool, n), every: every}
}

func (m *fleetMonitor) run(ctx context.Context, lockers []*fleetLocker) {
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.sample(now, lockers)
		}
	}
}

func (m *fleetMonitor) sample(now time.Time, lockers []*fleetLocker) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, l := range lockers {
		up := l.d.Link.Connected()
		if up == m.up[i] {
			continue
		}
		m.up[i] = up
		if up {
			m.nUp++
			if m.cur != nil {
				if _, lost := m.cur.down[i]; lost {
					if _, seen := m.cur.up[i]; !seen {
						m.cur.up[i] = now
					}
				}
			}
			continue
		}
		m.nUp--
		if m.cur == nil {
			m.cur = &fleetWave{start: now, down: map[int]time.Time{}, up: map[int]time.Time{}}
		}
		if _, lost := m.cur.down[i]; !lost {
			m.cur.down[i] = now
		}
	}
	if w := m.cur; w != nil && (len(w.up) == len(w.down) || now.Sub(w.start) > fleetWaveClose) {
		w.open = len(w.down) - len(w.up)
		m.closeLocked()
	}
}

// closeLocked ends the open wave; it is kept when it took down at least
// half the fleet (else it counts as a flap).
func (m *fleetMonitor) closeLocked() {
	w := m.cur
	m.cur = nil
	if len(w.down) < max(2, len(m.up)/2) {
		m.flaps++
		return
	}
	if !m.back.IsZero() && m.back.After(w.start) {
		w.back, w.known = m.back, true
	} else {
		for _, t := range w.up {
			if w.back.IsZero() || t.Before(w.back) {
				w.back = t
			}
		}
	}
	m.done = append(m.done, *w)
}

// brokerBack records when the broker came back, for the open wave.
func (m *fleetMonitor) brokerBack(t time.Time) {
	m.mu.Lock()
	m.back = t
	m.mu.Unlock()
}

// quiet reports whether no wave is open.
func (m *fleetMonitor) quiet() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur == nil
}

func (m *fleetMonitor) connected() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nUp
}

// waves returns the closed waves and the open one (as it stands).
func (m *fleetMonitor) waves() []fleetWave {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Clone(m.done)
	if w := m.cur; w != nil && len(w.down) >= max(2, len(m.up)/2) {
		c := *w
		c.open = len(c.down) - len(c.up)
		if !m.back.IsZero() && m.back.After(c.start) {
			c.back, c.known = m.back, true
		} else {
			for _, t := range c.up {
				if c.back.IsZero() || t.Before(c.back) {
					c.back = t
				}
			}
		}
		out = append(out, c)
	}
	return out
}

// reconnects are the reconnect times after the broker came back, sorted.
func (w fleetWave) reconnects() []time.Duration {
	out := make([]time.Duration, 0, len(w.up))
	for _, t := range w.up {
		out = append(out, max(t.Sub(w.back), 0))
	}
	slices.Sort(out)
	return out
}

// print draws the reconnect histogram.
func (w fleetWave) print(out io.Writer) {
	rs := w.reconnects()
	how := "estimated as the first reconnect"
	if w.known {
		how = "time of the restart known"
	}
	fmt.Fprintf(out, "  reconnects  %d lockers lost the broker at %s; it was back %.1f s later (%s)\n",
		len(w.down), w.start.Format("15:04:05.000"), w.back.Sub(w.start).Seconds(), how)
	if len(rs) == 0 {
		fmt.Fprintln(out, "              none reconnected")
		return
	}
	fmt.Fprintf(out, "              reconnected after it came back: p10 %.2f s, p50 %.2f s, p90 %.2f s, last %.2f s; %d still down\n",
		pct(rs, 10).Seconds(), pct(rs, 50).Seconds(), pct(rs, 90).Seconds(), rs[len(rs)-1].Seconds(), w.open)
	width, counts := histogram(rs, 20)
	most := slices.Max(counts)
	for i, c := range counts {
		bar := strings.Repeat("#", int(math.Ceil(float64(c)*50/float64(max(most, 1)))))
		fmt.Fprintf(out, "              %6.2f–%6.2f s %5d %s\n", (time.Duration(i) * width).Seconds(),
			(time.Duration(i+1) * width).Seconds(), c, bar)
	}
}

// histogram buckets sorted durations into at most maxBuckets buckets of a
// round width.
func histogram(rs []time.Duration, maxBuckets int) (time.Duration, []int) {
	last := rs[len(rs)-1]
	width := 50 * time.Millisecond
	for _, w := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
		500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second,
		30 * time.Second, time.Minute, 5 * time.Minute} {
		width = w
		if int(last/w)+1 <= maxBuckets {
			break
		}
	}
	counts := make([]int, int(last/width)+1)
	for _, r := range rs {
		counts[int(r/width)]++
	}
	return width, counts
}

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i, 1)-1]
}
