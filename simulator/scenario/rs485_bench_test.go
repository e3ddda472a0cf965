//go:build linux

package scenario

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
	"github.com/openlocker/locker/hal/rs485/proto"
	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator"
	"github.com/openlocker/locker/simulator/rs485"
)

// keyCabinet hands key events to the controller as hal's keypad scanner
// would; everything else is the real hal on the simulated Kerong board.
type keyCabinet struct {
	*hal.Hardware
	events chan hal.Event
}

func (c *keyCabinet) Events() <-chan hal.Event { return c.events }

// nullPhysics: a board on a bench with nothing behind it.
type nullPhysics struct{}

func (nullPhysics) Unlock(int, int)                   {}
func (nullPhysics) Sense(int, int) (bool, bool, bool) { return false, false, true }

// BenchmarkKeypadToUnlockFrame times the path from the '#' key event to
// the unlock frame decoded by a simulated Kerong board at the far end of a
// pseudo-terminal (19200 baud): the controller's lookup and durable
// release intent, hal's lock driver and bus worker (which may be in the
// middle of a status poll), the termios port and the pty. The baselines:
// the frame's time on the wire at 19200 baud (5 bytes, 8N1), and a raw
// write of the same frame to a pty whose board decodes it, timed in the
// same run between the locker's samples.
func BenchmarkKeypadToUnlockFrame(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	const locker = "BENCH01"
	y := "name: bench\nrs485:\n  - {name: BUS1, device: /dev/bench-none, protocol: kerong, baud: 19200, boards: [{address: 0, channels: 16}]}\n" +
		"locks:\n  pulse: 60ms\n  cooldown: 0s\n  gap: 5ms\n  confirm: 1s\nsensors:\n  debounce: 2ms\n  poll: 1ms\ncompartments:\n"
	for i := 1; i <= 16; i++ {
		y += fmt.Sprintf("  - {number: %d, size: M, bus: BUS1, board: 0, channel: %d}\n", i, i)
	}
	w, err := wiring.Parse([]byte(y), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(dir, "locker.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	until := time.Now().Add(24 * time.Hour)
	err = st.Update(ctx, func(tx *store.Tx) error {
		for n := 1; n <= 16; n++ {
			g := store.Grant{ID: fmt.Sprintf("svc-%02d", n), Version: 1, Action: "service", Compartment: n,
				CodeHash: wire.CodeHash(locker, fmt.Sprintf("99%06d", n)), ValidFrom: time.Now().Add(-time.Hour),
				ValidUntil: until, UsesLeft: -1}
			if err := tx.PutGrant(g); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	cab, err := simulator.New(w, simulator.Options{MinPulse: 5 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer cab.Halt()
	frames, unsub := cab.RS485()[0].Subscribe()
	defer unsub()
	hw, err := hal.New(w, cab.ByName, hal.Options{NoDisplayDelays: true, OpenSerial: cab.OpenSerial})
	if err != nil {
		b.Fatal(err)
	}
	defer hw.Halt()
	cabinet := &keyCabinet{Hardware: hw, events: make(chan hal.Event)}
	ctl, err := controller.New(controller.Options{LockerID: locker, Store: st, Cabinet: cabinet, MinOpenTime: time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go hw.Run(runCtx)
	go ctl.Run(runCtx)
	go func() {
		for {
			select {
			case ev := <-hw.Events():
				select {
				case cabinet.events <- ev:
				case <-runCtx.Done():
					return
				}
			case <-runCtx.Done():
				return
			}
		}
	}()
	<-ctl.Ready()

	raw := rawFrameTimer(b)
	key := func(k byte) { cabinet.events <- hal.Event{Kind: hal.KeyPressed, Key: k} }
	var lat, base []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := 1 + i%16
		for _, k := range []byte(fmt.Sprintf("99%06d", n)) {
			key(k)
		}
		for len(frames) > 0 {
			<-frames
		}
		start := time.Now()
		key('#')
		want := fmt.Sprintf("board 0 lock %d: unlock", n)
		deadline := time.After(5 * time.Second)
	wait:
		for {
			select {
			case f := <-frames:
				if f.Dir == rs485.ToBoard && f.Text == want {
					lat = append(lat, f.At.Sub(start))
					break wait
				}
			case <-deadline:
				b.Fatalf("compartment %d: no unlock frame", n)
			}
		}
		b.StopTimer()
		settle := func() {
			for deadline := time.Now().Add(3 * time.Second); (hw.Busy() || !cab.Settled()) && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		}
		settle()
		if err := cab.CloseDoor(n); err != nil {
			b.Fatal(err)
		}
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if open, _ := hw.DoorOpen(n); !open && !hw.Busy() {
				break
			}
		}
		if err := ctl.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		base = append(base, raw())
		b.StartTimer()
	}
	b.StopTimer()
	p := func(d []time.Duration, q float64) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[min(int(q*float64(len(s))), len(s)-1)].Microseconds())
	}
	b.ReportMetric(p(lat, .5), "p50-µs")
	b.ReportMetric(p(lat, .99), "p99-µs")
	b.ReportMetric(float64(proto.FrameTime(5, 19200))/1e3, "wire-µs")
	b.ReportMetric(p(base, .5), "raw-p50-µs")
	b.ReportMetric(p(base, .99), "raw-p99-µs")
}

// rawFrameTimer returns a function that writes one unlock frame to a
// simulated board's pty and times until the board has decoded it.
func rawFrameTimer(b *testing.B) func() time.Duration {
	bus, err := rs485.New(rs485.Config{Name: "RAW", Protocol: proto.Kerong, Physics: nullPhysics{},
		Boards: []rs485.Board{{Address: 0, Channels: 16, NoUnlockReply: true}}})
	if err != nil {
		b.Fatal(err)
	}
	path, err := bus.ServePTY()
	if err != nil {
		b.Fatal(err)
	}
	port, err := rs485.OpenRaw(path)
	if err != nil {
		b.Fatal(err)
	}
	frames, unsub := bus.Subscribe()
	b.Cleanup(func() { unsub(); port.Close(); bus.Close() })
	f, _ := proto.KerongUnlockFrame(0, 1)
	return func() time.Duration {
		start := time.Now()
		if _, err := port.Write(f); err != nil {
			b.Fatal(err)
		}
		select {
		case fr := <-frames:
			if !strings.HasSuffix(fr.Text, "unlock") {
				b.Fatalf("raw frame %+v", fr)
			}
			return fr.At.Sub(start)
		case <-time.After(5 * time.Second):
			b.Fatal("the raw frame was not decoded")
		}
		return 0
	}
}
