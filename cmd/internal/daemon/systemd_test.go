package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func TestSdNotifySends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Fatalf("without systemd: %v", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if got := watchdogInterval(); got != 30*time.Second {
		t.Fatalf("interval = %v", got)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if got := watchdogInterval(); got != 0 {
		t.Fatalf("another process's watchdog: %v", got)
	}
}

// The watchdog is pinged only while the control loop answers.
func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	var healthy atomic.Bool
	var pings atomic.Int32
	healthy.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go watchdog(ctx, 40*time.Millisecond, func(ctx context.Context) error {
		if healthy.Load() {
			return nil
		}
		<-ctx.Done() // a hung loop: no answer
		return errors.New("no answer")
	}, func() error { pings.Add(1); return nil })
	time.Sleep(150 * time.Millisecond)
	if pings.Load() < 3 {
		t.Fatalf("%d pings while healthy", pings.Load())
	}
	healthy.Store(false)
	time.Sleep(50 * time.Millisecond)
	before := pings.Load()
	time.Sleep(200 * time.Millisecond)
	if after := pings.Load(); after != before {
		t.Fatalf("pinged %d times while the loop hung", after-before)
	}
}
