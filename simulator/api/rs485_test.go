//go:build linux

package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/hal/rs485/proto"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/simulator/rs485"
)

// kerongServer serves the API of the 48-door Kerong cabinet, its boards
// behind a pty, and returns the bus's slave opened as the daemon opens it.
func kerongServer(t *testing.T) (*simulator.Cabinet, *httptest.Server, interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	SetReadDeadline(time.Time) error
}) {
	t.Helper()
	w, err := wiring.Load("../../testdata/wiring/kerong-48.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cab, err := simulator.New(w, simulator.Options{RealDevice: func(string) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Cabinet: cab})
	hs := httptest.NewServer(srv.Handler())
	port, err := cab.OpenSerial("/dev/ttyUSB0", 19200)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
		port.Close()
		cab.Halt()
	})
	return cab, hs, port.(interface {
		Read([]byte) (int, error)
		Write([]byte) (int, error)
		SetReadDeadline(time.Time) error
	})
}

func postJSON(t *testing.T, url, body string, out any) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func TestRS485ViewFaultsAndFrames(t *testing.T) {
	cab, hs, port := kerongServer(t)

	// The event stream carries the bus's frames.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	frames := make(chan rs485.Frame, 64)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			if e, ok := strings.CutPrefix(line, "event: "); ok {
				if event == "" {
					close(ready) // the cabinet event: the stream is registered
				}
				event = e
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok && event == "rs485" {
				var f rs485.Frame
				if json.Unmarshal([]byte(d), &f) == nil {
					frames <- f
				}
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("no event stream")
	}

	// Unlock compartment 17 (board 1 lock 1), as hal would.
	f, _ := proto.KerongUnlockFrame(1, 1)
	if _, err := port.Write(f); err != nil {
		t.Fatal(err)
	}
	select {
	case fr := <-frames:
		if fr.Hex != "02 10 31 03 46" || fr.Dir != rs485.ToBoard || fr.Bus != "BUS1" {
			t.Fatalf("first frame %+v", fr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no rs485 event")
	}
	// The board answers the unlock with its status, as a Kerong board does
	// unless it is wired as silent on unlocks; read it so the fault's
	// reply below is the next thing on the port.
	if echo := readN(t, port, 9); !bytes.HasPrefix(echo, []byte{0x02, 0x10, 0x35}) {
		t.Fatalf("unlock answered by % x, want the status of board 1", echo)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, _ := cab.Compartment(17)
		if c.Door == simulator.DoorOpen && !c.Latched {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("compartment 17 = %+v after its unlock frame", c)
		}
		time.Sleep(5 * time.Millisecond)
	}

	var view RS485
	r, err := http.Get(hs.URL + "/api/rs485")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(r.Body).Decode(&view)
	r.Body.Close()
	if len(view.Buses) != 1 || view.Buses[0].Device != "/dev/ttyUSB0" || !strings.HasPrefix(view.Buses[0].PTY, "/dev/pts/") ||
		len(view.Buses[0].Boards) != 3 || len(view.Buses[0].Frames) == 0 {
		t.Fatalf("view %+v", view)
	}

	var st rs485.BoardState
	if code := postJSON(t, hs.URL+"/api/rs485/BUS1/boards/1/fault", `{"fault":"bad_checksum"}`, &st); code != 200 || st.Fault != rs485.FaultBadChecksum {
		t.Fatalf("fault: %d %+v", code, st)
	}
	q, _ := proto.KerongStatusFrame(1)
	port.Write(q)
	got := readN(t, port, 9)
	if _, err := proto.DecodeKerongStatus(got, 1); err == nil {
		t.Fatalf("status % x decodes: want a bad checksum", got)
	}
	if code := postJSON(t, hs.URL+"/api/rs485/BUS1/boards/1/power-cycle", `{"off_ms":60000}`, &st); code != 200 || !st.Off {
		t.Fatalf("power-cycle: %d %+v", code, st)
	}
	for _, tc := range []struct {
		path, body string
		want       int
	}{
		{"/api/rs485/BUS9/boards/1/fault", `{"fault":"none"}`, 404},
		{"/api/rs485/BUS1/boards/9/fault", `{"fault":"none"}`, 404},
		{"/api/rs485/BUS1/boards/1/fault", `{"fault":"smoke"}`, 400},
		{"/api/rs485/BUS1/boards/1/power-cycle", `{"off_ms":0}`, 400},
		{"/api/rs485/BUS1/boards/1/power-cycle", `{"off_ms":600000}`, 400},
	} {
		var e map[string]string
		if code := postJSON(t, hs.URL+tc.path, tc.body, &e); code != tc.want || e["error"] == "" {
			t.Errorf("POST %s %s = %d %v, want %d with an error", tc.path, tc.body, code, e, tc.want)
		}
	}
}

func readN(t *testing.T, port interface {
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
}, n int) []byte {
	t.Helper()
	port.SetReadDeadline(time.Now().Add(3 * time.Second))
	var got []byte
	buf := make([]byte, 64)
	for len(got) < n {
		k, err := port.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			t.Fatalf("after % x: %v", got, err)
		}
	}
	return got
}
