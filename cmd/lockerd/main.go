// Command lockerd is the locker daemon for a real cabinet: it drives the
// board's GPIO pins as the wiring file says, keeps state in SQLite and talks
// to the central server over MQTT.
//
//	lockerd -config /etc/lockerd/config.yaml
//
// It refuses to start, with a one-line message and a non-zero exit, when the
// config or wiring is wrong, a pin is missing or the database is unusable.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/sync/client"
)

func main() { os.Exit(run()) }

func run() int {
	configPath := flag.String("config", "/etc/lockerd/config.yaml", "config file")
	check := flag.Bool("check", false, "check the config and wiring files and exit")
	flag.Parse()
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "lockerd: %v\n", err)
		return 1
	}
	cfg, err := daemon.LoadConfig(*configPath)
	if err != nil {
		return fail(err)
	}
	w, err := wiring.Load(cfg.Wiring)
	if err != nil {
		return fail(err)
	}
	keys, err := cfg.Keyring()
	if err != nil {
		return fail(err)
	}
	tlsConf, err := cfg.TLS()
	if err != nil {
		return fail(err)
	}
	password, err := cfg.Password()
	if err != nil {
		return fail(err)
	}
	if *check {
		fmt.Printf("%s: config ok (locker %s, %d compartments, broker %s)\n", *configPath, cfg.LockerID,
			len(w.Compartments), cfg.Broker.URL)
		return 0
	}
	log := daemon.NewLogger(os.Stderr)
	if _, err := host.Init(); err != nil {
		return fail(fmt.Errorf("gpio: %w", err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d, err := daemon.New(ctx, daemon.Options{
		LockerID: cfg.LockerID, DataDir: cfg.Data, Wiring: w, Language: cfg.Language, Logger: log,
		ControlSocket: filepath.Join(cfg.Data, "control.sock"), Keypad: cfg.Keypad, PurgeAfter: cfg.PurgeAfter,
		Pins: func(name string) gpio.PinIO { return gpioreg.ByName(name) },
		Hal:  hal.Options{},
		Link: client.Options{Broker: cfg.Broker.URL, Keys: keys, TLS: tlsConf,
			Username: cfg.Broker.Username, Password: password},
	})
	if err != nil {
		return fail(err)
	}
	log.Info("lockerd starting", "locker_id", cfg.LockerID, "compartments", len(w.Compartments),
		"broker", cfg.Broker.URL, "version", daemon.Version)
	if err := d.Run(ctx); err != nil {
		log.Error("lockerd stopped", "err", err)
		return 1
	}
	log.Info("lockerd stopped")
	return 0
}
