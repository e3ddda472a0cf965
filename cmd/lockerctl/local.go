package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// local runs a command against a running locker's control API: the
// simulator's (under /api/daemon/) or lockerd's Unix socket.
func local(name string, args []string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	sim := fs.String("sim", "http://127.0.0.1:8080", "the simulator's address")
	socket := fs.String("socket", "", "lockerd's control socket (e.g. /var/lib/lockerd/control.sock); overrides -sim")
	all := fs.Bool("all", false, "selftest: also compartments that hold a parcel (a technician at the cabinet)")
	limit := fs.Int("limit", 100, "outbox: how many events to show")
	if err := fs.Parse(args); err != nil {
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
		return show(client, fmt.Sprintf("%s/outbox?limit=%d", base, *limit))
	case "selftest":
		client.Timeout = 15 * time.Minute
		body, _ := json.Marshal(map[string]bool{"all": *all})
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
