package main

// The broker a fleet owns: the embedded mochi broker (the default), or a
// Mosquitto the fleet starts itself (-fleet-mosquitto) with a file limit and
// max_connections raised for ten thousand lockers. Either can be stopped and
// started again, to draw the reconnect curve.

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// fleetBroker is a broker the fleet started and may restart. Its methods
// are called from one goroutine at a time (the fleet's brokerMu).
type fleetBroker struct {
	addr      string // host:port, on 127.0.0.1
	mosquitto string // path of the mosquitto binary; "": the embedded mochi broker
	dir       string // Mosquitto's folder: config and log

	mochi  *mqtt.Server  // the running embedded broker, or nil
	cmd    *exec.Cmd     // the running Mosquitto, or nil
	exited chan struct{} // closed when cmd has exited
}

// start starts the broker and waits until it accepts connections.
func (b *fleetBroker) start() error {
	if b.mosquitto == "" {
		s, err := startFleetBroker(b.addr)
		if err != nil {
			return err
		}
		b.mochi = s
		return nil
	}
	if err := os.MkdirAll(b.dir, 0o750); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(b.addr)
	if err != nil {
		return fmt.Errorf("broker address %s: %w", b.addr, err)
	}
	var c strings.Builder
	fmt.Fprintf(&c, "listener %s %s\n", port, host)
	c.WriteString("allow_anonymous true\n")
	c.WriteString("max_connections -1\n") // the file limit is raised by raiseFileLimit
	c.WriteString("persistence false\n")
	c.WriteString("log_type error\nlog_type warning\n")
	fmt.Fprintf(&c, "log_dest file %s\n", filepath.Join(b.dir, "mosquitto.log"))
	if os.Geteuid() == 0 {
		c.WriteString("user root\n") // user mosquitto could not write the log in our folder
	}
	conf := filepath.Join(b.dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(c.String()), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(b.mosquitto, "-c", conf)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("mosquitto: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			return fmt.Errorf("mosquitto exited at start (see %s)", filepath.Join(b.dir, "mosquitto.log"))
		default:
		}
		if conn, err := net.DialTimeout("tcp", b.addr, time.Second); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("mosquitto does not listen on %s after 10 s", b.addr)
		}
	}
	b.cmd, b.exited = cmd, exited
	return nil
}

// stop stops the broker (all its connections drop) and waits for it.
func (b *fleetBroker) stop() {
	if b.mochi != nil {
		b.mochi.Close()
		b.mochi = nil
	}
	if b.cmd != nil {
		b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(10 * time.Second):
			b.cmd.Process.Kill()
			<-b.exited
		}
		b.cmd = nil
	}
}

// cpu is the CPU time Mosquitto has used (0 for the embedded broker, whose
// time is the fleet process's own).
func (b *fleetBroker) cpu() time.Duration {
	if b.cmd == nil {
		return 0
	}
	return statCPU(fmt.Sprintf("/proc/%d/stat", b.cmd.Process.Pid))
}

// startFleetBroker starts an embedded mochi broker on addr.
func startFleetBroker(addr string) (*mqtt.Server, error) {
	b := mqtt.New(&mqtt.Options{InlineClient: false, Logger: slog.New(slog.DiscardHandler)})
	if err := b.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	if err := b.AddListener(listeners.NewTCP(listeners.Config{ID: "fleet", Address: addr})); err != nil {
		return nil, fmt.Errorf("embedded broker on %s: %w (use -broker to use another)", addr, err)
	}
	go b.Serve()
	return b, nil
}

// fleetFilesPerLocker is how many files one locker of the fleet holds open
// (measured: its database, WAL and shared-memory files and its MQTT socket,
// and its cabinet state file while it is written).
const fleetFilesPerLocker = 5

// raiseFileLimit raises this process's open-file limit (inherited by a
// Mosquitto it starts) to at least want; raising the hard limit needs root
// (CAP_SYS_RESOURCE), up to /proc/sys/fs/nr_open.
func raiseFileLimit(want uint64) error {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return err
	}
	if r.Cur >= want {
		return nil
	}
	n := r
	n.Cur = want
	n.Max = max(r.Max, want)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err != nil {
		if r.Max >= want {
			return err
		}
		return fmt.Errorf("the fleet needs %d open files and the hard limit is %d: raise it (ulimit -Hn %d, as root) (%w)",
			want, r.Max, want, err)
	}
	return nil
}

// statCPU is the user and system time from a /proc/PID/stat file (fields 14
// and 15, in clock ticks of 1/100 s, Linux's USER_HZ); 0 where there is no
// such file.
func statCPU(path string) time.Duration {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 { // the command name may hold spaces
		s = s[i+1:]
	}
	fields := strings.Fields(s) // fields[0] is field 3 (state)
	if len(fields) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// findMosquitto finds the mosquitto binary: on PATH or in /usr/sbin.
func findMosquitto(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if !strings.ContainsRune(name, '/') {
		if p := filepath.Join("/usr/sbin", name); isExecutable(p) {
			return p, nil
		}
	}
	return "", errors.New(name + " not found (apt-get install mosquitto)")
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
