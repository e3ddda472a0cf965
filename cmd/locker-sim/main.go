// Command locker-sim runs the real locker daemon — the same controller,
// store and sync code that runs on a cabinet — against a simulated cabinet,
// with an embedded MQTT broker, a development central key pair, and the web
// page and HTTP API of SIMULATOR-API.md.
//
//	go run ./cmd/locker-sim            # SIM01, http://127.0.0.1:8080, broker 127.0.0.1:1883, ./var
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/simulator/api"
	"github.com/openlocker/locker/simulator/scenario"
	"github.com/openlocker/locker/sync/central"
	"github.com/openlocker/locker/sync/client"
	"github.com/openlocker/locker/sync/protocol"
)

// Files inside the data folder.
const (
	devKeyFile   = "central-dev.json" // the development central key pair
	cabinetState = "cabinet.json"     // the simulated cabinet's physical state
	devKeyID     = "dev"
	embeddedAddr = "127.0.0.1:1883"
)

type keyFlags []string

func (k *keyFlags) String() string     { return strings.Join(*k, ",") }
func (k *keyFlags) Set(s string) error { *k = append(*k, s); return nil }

func main() { os.Exit(run()) }

func run() int {
	var keys keyFlags
	httpAddr := flag.String("http", "127.0.0.1:8080", "address for the web page and API")
	brokerURL := flag.String("broker", "", "use this MQTT broker (tcp://host:port, ssl://…) instead of the embedded one")
	lockerID := flag.String("locker-id", "SIM01", "the locker id")
	flag.Var(&keys, "central-key", "trust this Ed25519 public key, ID:BASE64; repeatable; replaces the development key")
	dataDir := flag.String("data", "var", "folder for the SQLite database and keys")
	dbDir := flag.String("db", "", "keep the locker's database in this folder instead of -data (on a file system of its own, to try a full disk)")
	configPath := flag.String("config", "", "a cabinet wiring file instead of the default cabinet")
	quiet := flag.Bool("quiet", false, "log warnings and errors only")
	backoffMin := flag.Duration("backoff-min", 0, "shortest reconnect back-off (default 1s; a torture test of network cuts wants less)")
	backoffMax := flag.Duration("backoff-max", 0, "longest reconnect back-off (default 5m)")
	language := flag.String("language", "en", "display language: en or zh (zh wants a display that draws Chinese: -config testdata/wiring/gpio-24-zh.yaml)")
	script := flag.String("script", "", "play a scenario file (testdata/scenarios/*.txt), print the traces, and exit: 0 when they match the FILE's .golden log (if any) and every expect held")
	fleet := fleetFlags(flag.CommandLine)
	flag.Parse()
	if fleet.N > 0 {
		fleet.Broker, fleet.DataDir = *brokerURL, *dataDir
		return runFleet(*fleet)
	}
	if *script != "" {
		return runScript(*script, *configPath, *lockerID)
	}

	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "locker-sim: %v\n", err)
		return 1
	}
	level := slog.LevelInfo
	if *quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if !protocol.ValidLockerID(*lockerID) {
		return fail(fmt.Errorf("-locker-id %q: want 1 to 32 of A-Z a-z 0-9 _ -", *lockerID))
	}
	if err := os.MkdirAll(*dataDir, 0o750); err != nil {
		return fail(fmt.Errorf("data folder: %w", err))
	}
	w, err := loadWiring(*configPath)
	if err != nil {
		return fail(err)
	}
	kp, err := devKeyPair(filepath.Join(*dataDir, devKeyFile))
	if err != nil {
		return fail(err)
	}
	ring := kp.Keyring()
	if len(keys) > 0 {
		ring = protocol.Keyring{}
		for _, s := range keys {
			id, pub, err := protocol.ParsePublicKey(s)
			if err != nil {
				return fail(fmt.Errorf("-central-key: %w", err))
			}
			ring[id] = pub
		}
	}

	cab, err := simulator.New(w, simulator.Options{StatePath: filepath.Join(*dataDir, cabinetState),
		Logger: log.With("part", "cabinet"), RealDevice: deviceExists})
	if err != nil {
		return fail(err)
	}
	defer cab.Halt()
	if err := cab.Register(); err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fail(fmt.Errorf("-http: %w", err))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	adapter := &simDaemon{lockerID: *lockerID}
	dev := &devCentral{lockerID: *lockerID, kp: kp}
	opts := api.Options{Cabinet: cab, Daemon: adapter, Logger: log.With("part", "api"), Central: dev}
	if len(keys) > 0 {
		opts.Central = nil // the locker does not trust the development key
	}
	srv := api.New(opts)
	defer srv.Close()

	url := *brokerURL
	defer dev.close()
	if url != "" {
		// A technician pointing the simulator at a broker wants to know at
		// once when it cannot be reached (lockerd instead starts offline).
		if err := reachable(url); err != nil {
			ln.Close()
			return fail(fmt.Errorf("-broker %s: %w", url, err))
		}
		stopWatch := watchBroker(url, *lockerID, srv, log)
		defer stopWatch()
	} else {
		url = "tcp://" + embeddedAddr
		broker, err := startBroker(srv, log)
		switch {
		case err == nil:
			defer broker.Close()
		case errors.Is(err, syscall.EADDRINUSE) && reachable(url) == nil:
			// A broker already listens there (a system Mosquitto): use it.
			fmt.Fprintf(os.Stderr, "locker-sim: %s is taken: using the MQTT broker that listens there\n", embeddedAddr)
			stopWatch := watchBroker(url, *lockerID, srv, log)
			defer stopWatch()
		default:
			ln.Close()
			return fail(err)
		}
	}
	dev.broker = url
	if *dbDir == "" {
		*dbDir = *dataDir
	}

	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	mux.Handle("/api/daemon/", http.StripPrefix("/api/daemon", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := adapter.daemon()
		if d == nil {
			http.Error(w, "the locker is not running yet: its data folder cannot be written", http.StatusServiceUnavailable)
			return
		}
		d.ControlHandler().ServeHTTP(w, r)
	})))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// The page and API are served once the daemon is up, so that a script
	// never types into a locker that is not listening yet — or at once
	// when the daemon has to wait for its data folder, so that the
	// technician sees the cabinet say "Out of service".
	serve := sync.OnceFunc(func() {
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http", "err", err)
				stop()
			}
		}()
	})

	d, err := daemon.New(ctx, daemon.Options{
		LockerID: *lockerID, DataDir: *dbDir, Wiring: w, Logger: log, Language: *language,
		Pins:          func(name string) gpio.PinIO { return gpioreg.ByName(name) },
		Hal:           hal.Options{NoDisplayDelays: true, Buses: cab.Bus, OpenSerial: cab.OpenSerial, ObserveRS485: cab.ObserveRS485},
		Link:          client.Options{Broker: url, Keys: ring, BackoffMin: *backoffMin, BackoffMax: *backoffMax},
		OnTrace:       srv.PublishTrace,
		OnStorageWait: func(error) { serve() },
	})
	if err != nil {
		ln.Close()
		return fail(err)
	}
	adapter.d.Store(d)
	serve()
	for _, b := range cab.RS485() {
		fmt.Fprintf(os.Stderr, "locker-sim: RS485 bus %s: simulated %s boards on %s (the wiring's device %s does not exist)\n",
			b.Name(), b.Protocol(), b.Path(), busDevice(w, b.Name()))
	}
	for _, name := range cab.RealBuses() {
		fmt.Fprintf(os.Stderr, "locker-sim: RS485 bus %s: driving the real device %s\n", name, busDevice(w, name))
	}
	fmt.Fprintf(os.Stderr, "locker-sim: locker %s with %d compartments\n  web page and API  http://%s\n  MQTT broker       %s\n  data folder       %s\n  central dev key   %s (key id %q)\n",
		*lockerID, len(w.Compartments), ln.Addr(), url, *dataDir, filepath.Join(*dataDir, devKeyFile), kp.KeyID)

	runErr := d.Run(ctx)
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hs.Shutdown(shutdown)
	if runErr != nil {
		return fail(runErr)
	}
	return 0
}

// deviceExists says whether an RS485 bus's device path exists: a real
// board on a USB-RS485 adapter, or an emulator, which the daemon then
// drives instead of simulated boards.
func deviceExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func busDevice(w *wiring.Wiring, name string) string {
	if b, ok := w.Bus(name); ok {
		return b.Device
	}
	return "?"
}

// reachable dials the broker's TCP port once.
func reachable(broker string) error {
	u, err := neturl.Parse(broker)
	if err != nil || u.Host == "" {
		return errors.New("want tcp://host:port or ssl://host:port")
	}
	c, err := net.DialTimeout("tcp", u.Host, 3*time.Second)
	if err != nil {
		return fmt.Errorf("cannot reach the broker: %w", err)
	}
	return c.Close()
}

// runScript plays a scenario on a simulated cabinet in a fresh folder and
// compares the traces with the scenario's golden log.
func runScript(path, wiringPath, lockerID string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "locker-sim: %v\n", err)
		return 1
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fail(err)
	}
	steps, err := scenario.Parse(data, path)
	if err != nil {
		return fail(err)
	}
	w, err := loadWiring(wiringPath)
	if err != nil {
		return fail(err)
	}
	dir, err := os.MkdirTemp("", "locker-sim-script")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	lines, err := scenario.Run(context.Background(), steps, scenario.Options{Dir: dir, Wiring: w, LockerID: lockerID,
		Verbose: func(s string) { fmt.Fprintln(os.Stderr, "#", s) }})
	for _, l := range lines {
		fmt.Println(l)
	}
	if err != nil {
		return fail(err)
	}
	golden := strings.TrimSuffix(path, filepath.Ext(path)) + ".golden"
	want, err := os.ReadFile(golden)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "locker-sim: every expect held (no %s to compare with)\n", golden)
		return 0
	}
	if err != nil {
		return fail(err)
	}
	if got := strings.Join(lines, "\n") + "\n"; got != string(want) {
		return fail(fmt.Errorf("the traces differ from %s", golden))
	}
	fmt.Fprintf(os.Stderr, "locker-sim: the traces match %s\n", golden)
	return 0
}

func loadWiring(path string) (*wiring.Wiring, error) {
	if path == "" {
		return simulator.DefaultWiring()
	}
	w, err := wiring.Load(path)
	if err != nil {
		return nil, fmt.Errorf("-config: %w", err)
	}
	return w, nil
}

// devKeyPair loads the development central key pair, creating it on first start.
func devKeyPair(path string) (protocol.KeyPair, error) {
	kp, err := protocol.LoadKeyPair(path)
	if err == nil {
		return kp, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return kp, fmt.Errorf("development key: %w", err)
	}
	kp, err = protocol.GenerateKeyPair(devKeyID)
	if err != nil {
		return kp, err
	}
	if err := protocol.SaveKeyPair(path, kp); err != nil {
		return kp, fmt.Errorf("development key: %w", err)
	}
	return kp, nil
}

// startBroker starts the embedded MQTT broker on 127.0.0.1:1883 and feeds
// every locker message to the web page.
func startBroker(srv *api.Server, log *slog.Logger) (*mqtt.Server, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := mqtt.New(&mqtt.Options{InlineClient: true, Logger: quiet})
	if err := b.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	if err := b.AddListener(listeners.NewTCP(listeners.Config{ID: "sim", Address: embeddedAddr})); err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w (use -broker to use another)", embeddedAddr, err)
	}
	go func() {
		if err := b.Serve(); err != nil {
			log.Error("embedded broker", "err", err)
		}
	}()
	err := b.Subscribe("lockers/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		srv.PublishMQTT(pk.TopicName, pk.Payload)
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// watchBroker feeds the page's MQTT feed from an external broker: every
// message under the locker's topics, as the embedded broker does.
func watchBroker(broker, lockerID string, srv *api.Server, log *slog.Logger) func() {
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID("locker-sim-watch-" + lockerID).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).SetConnectTimeout(5 * time.Second)
	opts.SetOnConnectHandler(func(cl paho.Client) {
		// Subscribe without waiting: this runs inside paho.
		cl.Subscribe(protocol.TopicPrefix+lockerID+"/#", 1, func(_ paho.Client, m paho.Message) {
			srv.PublishMQTT(m.Topic(), m.Payload())
		})
	})
	cl := paho.NewClient(opts)
	if t := cl.Connect(); t.WaitTimeout(5*time.Second) && t.Error() != nil {
		log.Warn("the page's MQTT feed is off", "broker", broker, "err", t.Error())
	}
	return func() { cl.Disconnect(100) }
}

// simDaemon gives the API the daemon's view.
type simDaemon struct {
	lockerID string
	d        atomic.Pointer[daemon.Daemon] // nil until the daemon is built

	mu     sync.Mutex
	at     time.Time
	states map[int]string
}

func (s *simDaemon) LockerID() string { return s.lockerID }

func (s *simDaemon) daemon() *daemon.Daemon { return s.d.Load() }

func (s *simDaemon) KeysHandled() uint64 {
	d := s.daemon()
	if d == nil {
		return 0
	}
	return d.Controller.KeysHandled()
}

// Busy reports a release under way, or the end of one the controller has
// not handled yet: a lock_fault moves a deposit on to the next compartment,
// a release the API's caller must see before it answers.
func (s *simDaemon) Busy() bool {
	d := s.daemon()
	if d == nil {
		return false
	}
	hw := d.Hardware
	if hw.Busy() || len(hw.Events()) > 0 {
		return true
	}
	// An event the loop took is handled once a no-op has gone through it.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if d.Controller.Sync(ctx) != nil {
		return true
	}
	return hw.Busy() || len(hw.Events()) > 0
}

// Reading is what the daemon's hardware reads of compartment n: the page
// shows it for compartments on a real RS485 board.
func (s *simDaemon) Reading(n int) (doorOpen, parcel, ok bool) {
	d := s.daemon()
	if d == nil {
		return false, false, false
	}
	open, err := d.Hardware.DoorOpen(n)
	if err != nil {
		return false, false, false
	}
	present, _, err := d.Hardware.ParcelPresent(n)
	return open, present && err == nil, true
}

// CompartmentState reads the daemon's view, at most once per 50 ms: the
// API asks for every compartment in turn.
func (s *simDaemon) CompartmentState(n int) string {
	d := s.daemon()
	if d == nil {
		return "unknown"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.at) > 50*time.Millisecond {
		rep, err := d.Controller.Compartments(context.Background())
		if err != nil {
			return "unknown"
		}
		s.states = map[int]string{}
		for _, c := range rep.Compartments {
			s.states[c.Number] = c.State
		}
		s.at = time.Now()
	}
	if st, ok := s.states[n]; ok {
		return st
	}
	return "unknown"
}

// devCentral plays the central server for the web page: it signs with the
// development key and publishes to the broker, as lockerctl does.
type devCentral struct {
	lockerID string
	kp       protocol.KeyPair
	broker   string

	mu sync.Mutex
	cl *central.Client // guarded by mu; nil until the first send
}

// client returns the connected client, connecting (again) if need be.
func (c *devCentral) client() (*central.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cl != nil && c.cl.IsConnected() {
		return c.cl, nil
	}
	if c.cl != nil {
		c.cl.Close() // still trying to reconnect under the same client id
		c.cl = nil
	}
	cl, err := central.Dial(central.Options{Broker: c.broker, ClientID: "locker-sim-central-" + c.lockerID,
		Key: c.kp, Wait: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	c.cl = cl
	return cl, nil
}

func (c *devCentral) send(suffix string, v any) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	return cl.Send(c.lockerID, suffix, v)
}

func (c *devCentral) SendGrants(_ context.Context, body wire.GrantsBody) error {
	return c.send(protocol.SuffixGrants, body)
}

func (c *devCentral) SendCommand(_ context.Context, cmd wire.Command) error {
	return c.send(protocol.SuffixCommands, cmd)
}

func (c *devCentral) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cl != nil {
		c.cl.Close()
	}
}

var _ api.Central = (*devCentral)(nil)

var (
	_ api.Daemon   = (*simDaemon)(nil)
	_ api.Readings = (*simDaemon)(nil)
)
