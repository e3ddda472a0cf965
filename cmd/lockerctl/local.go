package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/openlocker/locker/cmd/internal/daemon"
	"github.com/openlocker/locker/hal/wiring"
)

// local runs a command against a running locker's control API: the
// simulator's (under /api/daemon/) or lockerd's Unix socket.
func local(name string, args []string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	sim := fs.String("sim", "http://127.0.0.1:8080", "the simulator's address")
	socket := fs.String("socket", "", "lockerd's control socket (e.g. /var/lib/lockerd/control.sock); overrides -sim")
	// Each command shows only its own flags in -h.
	var all, follow bool
	var limit int
	code := "-"
	switch name {
	case "selftest":
		fs.BoolVar(&all, "all", false, "also compartments in use (needs a service code: -code)")
		fs.StringVar(&code, "code", "-", "with -all: the service code ('-' reads it from standard input)")
	case "open":
		fs.StringVar(&code, "code", "-", "the service code ('-' reads it from standard input)")
	case "outbox":
		fs.IntVar(&limit, "limit", 100, "how many events to show")
	case "traces":
		fs.BoolVar(&follow, "follow", false, "keep printing new traces as they come")
	}
	var n int
	if name == "open" {
		if len(args) == 0 {
			return errors.New("open N: which compartment?")
		}
		var err error
		if n, err = strconv.Atoi(args[0]); err != nil || n < 1 {
			return fmt.Errorf("open %q: want a compartment number", args[0])
		}
		args = args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	base := strings.TrimRight(*sim, "/") + "/api/daemon"
	client := &http.Client{Timeout: 30 * time.Second}
	if *socket != "" {
		base = "http://lockerd"
		path := *socket
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
	}
	switch name {
	case "status", "compartments":
		return show(client, base+"/"+name)
	case "outbox":
		return show(client, fmt.Sprintf("%s/outbox?limit=%d", base, limit))
	case "open":
		cd, err := readCode("code", code)
		if err != nil {
			return err
		}
		body, _ := json.Marshal(map[string]any{"compartment": n, "code": cd})
		resp, err := client.Post(base+"/open", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("open %d: %s", n, strings.TrimSpace(string(b)))
		}
		fmt.Printf("compartment %02d released\n", n)
		return nil
	case "traces":
		url := base + "/traces"
		if follow {
			url += "?follow=1"
			client.Timeout = 0
		}
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("traces: %s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		_, err = io.Copy(os.Stdout, resp.Body)
		return err
	case "selftest":
		client.Timeout = 15 * time.Minute
		req := map[string]any{"all": all}
		if all {
			cd, err := readCode("code", code)
			if err != nil {
				return fmt.Errorf("selftest -all needs a service code: %w", err)
			}
			req["code"] = cd
		}
		body, _ := json.Marshal(req)
		resp, err := client.Post(base+"/selftest", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("selftest: %s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		return printSelfTest(resp.Body, os.Stdout)
	}
	return fmt.Errorf("unknown command %q", name)
}

func show(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		out.Write(b)
	}
	fmt.Println(strings.TrimSpace(out.String()))
	return nil
}

// printSelfTest prints each compartment's result as it comes, then a
// summary; it fails when a lock is faulty.
func printSelfTest(r io.Reader, w io.Writer) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var line struct {
			Compartment int    `json:"compartment"`
			Result      string `json:"result"`
			Reason      string `json:"reason"`
			Done        bool   `json:"done"`
			OK          int    `json:"ok"`
			Fault       int    `json:"fault"`
			Skipped     int    `json:"skipped"`
			Error       string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("selftest: %q: %w", sc.Text(), err)
		}
		if line.Done {
			fmt.Fprintf(w, "self-test: %d ok, %d fault, %d skipped\n", line.OK, line.Fault, line.Skipped)
			switch {
			case line.Error != "":
				return fmt.Errorf("selftest: %s", line.Error)
			case line.Fault > 0:
				return fmt.Errorf("%d lock(s) faulty", line.Fault)
			}
			return nil
		}
		fmt.Fprintf(w, "  %02d  %-10s %s\n", line.Compartment, line.Result, line.Reason)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("selftest: the locker stopped answering")
}

// configCheck checks a lockerd config file (and the wiring it names) or a
// wiring file, and says what is wrong with it, where.
func configCheck(args []string) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Println("usage: lockerctl config check FILE   (a lockerd config, with the wiring it names, or a wiring file)")
		return nil
	}
	if len(args) != 2 || args[0] != "check" {
		return errors.New("usage: lockerctl config check FILE")
	}
	path := args[1]
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if isWiring(data) {
		w, err := wiring.Parse(data, path)
		if err != nil {
			return err
		}
		fmt.Printf("%s: a valid wiring: %d compartments%s\n", path, len(w.Compartments), wiringParts(w))
		return nil
	}
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		return err
	}
	w, err := wiring.Load(cfg.Wiring)
	if err != nil {
		return fmt.Errorf("the wiring it names: %w", err)
	}
	fmt.Printf("%s: a valid config for locker %s, broker %s, %d central key(s)\n%s: a valid wiring: %d compartments%s\n",
		path, cfg.LockerID, cfg.Broker.URL, len(cfg.CentralKeys), cfg.Wiring, len(w.Compartments), wiringParts(w))
	return nil
}

// isWiring says whether a YAML file is a wiring (it lists compartments)
// rather than a config.
func isWiring(data []byte) bool {
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "compartments:") {
			return true
		}
	}
	return false
}

func wiringParts(w *wiring.Wiring) string {
	var parts []string
	if w.Keypad != nil {
		parts = append(parts, "keypad")
	}
	if w.Display != nil {
		parts = append(parts, fmt.Sprintf("%dx%d display", w.Display.Cols, w.Display.Rows))
	}
	if len(w.Expanders) > 0 {
		parts = append(parts, fmt.Sprintf("%d expanders", len(w.Expanders)))
	}
	if len(parts) == 0 {
		return ""
	}
	return ", " + strings.Join(parts, ", ")
}
