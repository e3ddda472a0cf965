package brokertest

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestStartStopRestart(t *testing.T) {
	b := Start(t, Options{Extra: []string{"max_inflight_messages 20"}})
	if !strings.HasPrefix(b.URL(), "tcp://127.0.0.1:") {
		t.Fatalf("URL = %q", b.URL())
	}
	dial := func() error {
		c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatal(err)
	}
	b.Stop()
	if err := dial(); err == nil {
		t.Fatal("broker still listening after Stop")
	}
	b.Stop() // idempotent
	b.Restart(t)
	if err := dial(); err != nil {
		t.Fatal(err)
	}
	b.Restart(t) // while running
	if err := dial(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.Log(), "mosquitto version") {
		t.Errorf("log does not show start-up:\n%s", b.Log())
	}
}

func TestMissingBinarySaysHowToInstall(t *testing.T) {
	_, err := findBinary("/nonexistent/mosquitto")
	if err == nil || !strings.Contains(err.Error(), "apt-get install mosquitto") {
		t.Errorf("err = %v", err)
	}
}
