//go:build linux

package rs485

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/clocktest"
	halrs485 "github.com/openlocker/locker/hal/rs485"
	"github.com/openlocker/locker/hal/rs485/proto"
)

// fakePhysics records unlocks; a channel reads open once unlocked.
type fakePhysics struct {
	mu      sync.Mutex
	unlocks []string
	open    map[[2]int]bool
	parcel  map[[2]int]bool
}

func newPhysics() *fakePhysics {
	return &fakePhysics{open: map[[2]int]bool{}, parcel: map[[2]int]bool{}}
}

func (p *fakePhysics) Unlock(board, ch int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unlocks = append(p.unlocks, Hex([]byte{byte(board), byte(ch)}))
	p.open[[2]int{board, ch}] = true
}

func (p *fakePhysics) Sense(board, ch int) (open, parcel, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open[[2]int{board, ch}], p.parcel[[2]int{board, ch}], true
}

func (p *fakePhysics) Unlocks() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unlocks...)
}

// serve starts a bus behind a pty and returns the slave, opened raw as
// the daemon opens it.
func serve(t *testing.T, cfg Config) (*Bus, *os.File) {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path, err := b.ServePTY()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, "/dev/pts/") || b.Path() != path {
		t.Fatalf("slave path %q, Path %q", path, b.Path())
	}
	f, err := OpenRaw(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		b.Close()
	})
	return b, f
}

// readFrame reads n bytes within d and returns them with the sizes of the
// reads that brought them.
func readFrame(t *testing.T, f *os.File, n int, d time.Duration) ([]byte, []int) {
	t.Helper()
	if err := f.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	var got []byte
	var reads []int
	buf := make([]byte, 64)
	for len(got) < n {
		k, err := f.Read(buf)
		if k > 0 {
			got = append(got, buf[:k]...)
			reads = append(reads, k)
		}
		if err != nil {
			t.Fatalf("after % x: %v", got, err)
		}
	}
	return got, reads
}

// silent asserts that nothing arrives within d.
func silent(t *testing.T, f *os.File, d time.Duration) {
	t.Helper()
	if err := f.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if k, err := f.Read(buf); k > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read % x, %v: want silence", buf[:k], err)
	}
}

func write(t *testing.T, f *os.File, b ...byte) {
	t.Helper()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func TestKerongVectorsThroughAPTY(t *testing.T) {
	ph := newPhysics()
	ph.parcel[[2]int{0, 2}] = true
	_, f := serve(t, Config{Name: "BUS1", Protocol: proto.Kerong, LockOpenBit: 1, Physics: ph,
		Boards: []Board{{Address: 0, Channels: 16}, {Address: 1, Channels: 16}}})

	// Board 0 status: nothing open, a parcel behind lock 2.
	write(t, f, 0x02, 0x00, 0x32, 0x03, 0x37)
	got, reads := readFrame(t, f, 9, 2*time.Second)
	if want := []byte{0x02, 0x00, 0x35, 0x00, 0x00, 0x02, 0x00, 0x03, 0x3C}; !bytes.Equal(got, want) {
		t.Fatalf("status reply % x, want % x", got, want)
	}
	if len(reads) < 2 {
		t.Errorf("the reply came in %v: want bursts, as from a USB adapter", reads)
	}
	// Board 1 lock 1: unlock, answered with the board's status.
	write(t, f, 0x02, 0x10, 0x31, 0x03, 0x46)
	got, _ = readFrame(t, f, 9, 2*time.Second)
	st, err := proto.DecodeKerongStatus(got, 1)
	if err != nil || !st.LockBit(1) || st.LockBit(2) {
		t.Fatalf("unlock reply % x: %+v, %v", got, st, err)
	}
	if u := ph.Unlocks(); len(u) != 1 || u[0] != "01 01" {
		t.Fatalf("unlocks %v, want board 1 lock 1", u)
	}
}

func TestKerongLockOpenBitZeroAndSilentUnlock(t *testing.T) {
	ph := newPhysics()
	b, f := serve(t, Config{Name: "BUS1", Protocol: proto.Kerong, LockOpenBit: 0, Physics: ph,
		Boards: []Board{{Address: 0, Channels: 8, NoUnlockReply: true}}})
	write(t, f, 0x02, 0x00, 0x31, 0x03, 0x36) // unlock lock 1: no answer
	write(t, f, 0x02, 0x00, 0x32, 0x03, 0x37) // status
	got, _ := readFrame(t, f, 9, 2*time.Second)
	st, err := proto.DecodeKerongStatus(got, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Bit 0 (lock 1) reads 0 = open; locks 2–8 and the unwired 9–16 read 1.
	if st.Locks != 0xFFFE {
		t.Fatalf("locks %016b, want lock 1 open (0) and the rest closed (1)", st.Locks)
	}
	var dirs []string
	for _, fr := range b.Frames() {
		dirs = append(dirs, fr.Dir)
	}
	if strings.Join(dirs, ",") != "cmd,cmd,reply" {
		t.Fatalf("frames %v: the unlock must go unanswered", dirs)
	}
}

func TestKerongFaults(t *testing.T) {
	ph := newPhysics()
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b, f := serve(t, Config{Name: "BUS1", Protocol: proto.Kerong, LockOpenBit: 1, Physics: ph, Now: clock.Now,
		Boards: []Board{{Address: 0, Channels: 16}}})
	status := []byte{0x02, 0x00, 0x32, 0x03, 0x37}

	if err := b.SetFault(0, FaultBadChecksum); err != nil {
		t.Fatal(err)
	}
	write(t, f, status...)
	got, _ := readFrame(t, f, 9, 2*time.Second)
	if _, err := proto.DecodeKerongStatus(got, 0); !errors.Is(err, proto.ErrChecksum) {
		t.Fatalf("bad_checksum: % x decodes with %v", got, err)
	}

	if err := b.SetFault(0, FaultNoAnswer); err != nil {
		t.Fatal(err)
	}
	write(t, f, 0x02, 0x00, 0x31, 0x03, 0x36)
	silent(t, f, 100*time.Millisecond)
	if len(ph.Unlocks()) != 0 {
		t.Fatal("a board that does not answer acted")
	}

	if err := b.SetFault(0, FaultLostReply); err != nil {
		t.Fatal(err)
	}
	write(t, f, 0x02, 0x00, 0x31, 0x03, 0x36)
	silent(t, f, 100*time.Millisecond)
	if len(ph.Unlocks()) != 1 {
		t.Fatal("lost_reply: the board must act")
	}

	if err := b.SetFault(0, FaultNone); err != nil {
		t.Fatal(err)
	}
	if err := b.PowerCycle(0, time.Second); err != nil {
		t.Fatal(err)
	}
	if bs := b.Boards(); !bs[0].Off {
		t.Fatalf("boards %+v: want board 0 off", bs)
	}
	write(t, f, status...)
	silent(t, f, 100*time.Millisecond)
	clock.Advance(time.Second)
	write(t, f, status...)
	if got, _ := readFrame(t, f, 9, 2*time.Second); got[0] != 0x02 || got[2] != 0x35 {
		t.Fatalf("after the power cycle: % x", got)
	}

	// A corrupt command is ignored; garbage before a frame is skipped.
	write(t, f, 0x02, 0x00, 0x31, 0x03, 0x37, 0xFF, 0x13)
	write(t, f, status...)
	if got, _ := readFrame(t, f, 9, 2*time.Second); got[2] != 0x35 {
		t.Fatalf("after garbage: % x", got)
	}
	if len(ph.Unlocks()) != 1 {
		t.Fatal("a command with a bad checksum was obeyed")
	}
	if err := b.SetFault(3, FaultNone); !errors.Is(err, ErrNoBoard) {
		t.Fatalf("SetFault(3) = %v", err)
	}
	if err := b.SetFault(0, "smoke"); !errors.Is(err, ErrUnknownFault) {
		t.Fatalf("SetFault(smoke) = %v", err)
	}
	var errs []string
	for _, fr := range b.Frames() {
		if fr.Err != "" {
			errs = append(errs, fr.Err)
		}
	}
	joined := strings.Join(errs, "|")
	for _, want := range []string{"wrong checksum (injected)", "does not answer", "lost on the line", "power cycle", "bad checksum", "garbage"} {
		if !strings.Contains(joined, want) {
			t.Errorf("frame errors %q lack %q", joined, want)
		}
	}
}

func Test8A80VectorsAndTiming(t *testing.T) {
	ph := newPhysics()
	b, f := serve(t, Config{Name: "BUS2", Protocol: proto.P8A80, LockOpenBit: 1, Physics: ph,
		Boards: []Board{{Address: 1, Channels: 8}, {Address: 2, Channels: 24}}})
	if b.Baud() != 9600 {
		t.Fatalf("baud %d, want the 8A/80's 9600", b.Baud())
	}
	write(t, f, 0x80, 0x01, 0x00, 0x33, 0xB2)
	got, _ := readFrame(t, f, 7, 2*time.Second)
	if want := []byte{0x80, 0x01, 0x00, 0x00, 0x00, 0x33, 0xB2}; !bytes.Equal(got, want) {
		t.Fatalf("query reply % x, want % x", got, want)
	}
	start := time.Now()
	write(t, f, 0x8A, 0x01, 0x01, 0x11, 0x9B)
	got, _ = readFrame(t, f, 5, 3*time.Second)
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("unlock answered after %v, want about 500 ms", d)
	}
	if want := []byte{0x8A, 0x01, 0x01, 0x11, 0x9B}; !bytes.Equal(got, want) {
		t.Fatalf("unlock reply % x, want % x (open)", got, want)
	}
	// A 24-channel board answers three groups, highest first.
	ph.Unlock(2, 9)
	ph.Unlock(2, 24)
	q, _ := proto.Query8A80Frame(2)
	write(t, f, q...)
	got, _ = readFrame(t, f, 7, 2*time.Second)
	st, err := proto.DecodeStatus8A80(got, 2)
	if err != nil || st.Groups != 3 || !st.Bit(9) || !st.Bit(24) || st.Bit(1) || got[2] != 0x80 || got[3] != 0x01 {
		t.Fatalf("24-channel reply % x: %+v, %v", got, st, err)
	}
}

// TestMoreFaultsAndTheI15Watch: a wrong address, a noisy line and a power
// cut in the middle of an unlock, and the boards' watch on I15 — an unlock
// sent again before a status query was answered intact is counted.
func TestMoreFaultsAndTheI15Watch(t *testing.T) {
	ph := newPhysics()
	clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b, f := serve(t, Config{Name: "BUS1", Protocol: proto.Kerong, LockOpenBit: 1, Physics: ph, Now: clock.Now,
		Boards: []Board{{Address: 0, Channels: 16}, {Address: 1, Channels: 16}}})
	status := []byte{0x02, 0x00, 0x32, 0x03, 0x37}
	unlock := []byte{0x02, 0x00, 0x31, 0x03, 0x36}
	board0 := func() BoardState { t.Helper(); return b.Boards()[0] }

	// wrong_address: board 0 answers as board 1, with a right checksum.
	if err := b.SetFault(0, FaultWrongAddress); err != nil {
		t.Fatal(err)
	}
	write(t, f, status...)
	got, _ := readFrame(t, f, 9, 2*time.Second)
	if _, err := proto.DecodeKerongStatus(got, 0); !errors.Is(err, proto.ErrAddress) {
		t.Fatalf("wrong_address: % x decodes with %v", got, err)
	}
	if _, err := proto.DecodeKerongStatus(got, 1); err != nil {
		t.Fatalf("wrong_address: % x is not a good reply of board 1: %v", got, err)
	}

	// An unlock, then another before any status was answered intact: the
	// second breaks I15 (the wrong address does not tell the controller).
	write(t, f, unlock...)
	readFrame(t, f, 9, 2*time.Second) // its echo, from the wrong address
	write(t, f, status...)
	readFrame(t, f, 9, 2*time.Second)
	write(t, f, unlock...)
	readFrame(t, f, 9, 2*time.Second)
	if st := board0(); st.Resent != 1 || st.Unlocks != 2 || st.ChannelUnlocks[1] != 2 {
		t.Fatalf("after two unlocks without a good status: %+v, want 1 resent of 2", st)
	}
	// A status answered intact resolves it: the next unlock is fine.
	if err := b.SetFault(0, FaultNone); err != nil {
		t.Fatal(err)
	}
	write(t, f, status...)
	readFrame(t, f, 9, 2*time.Second)
	write(t, f, unlock...)
	readFrame(t, f, 9, 2*time.Second)
	if st := board0(); st.Resent != 1 || st.Unlocks != 3 {
		t.Fatalf("an unlock after a good status: %+v, want still 1 resent", st)
	}
	write(t, f, status...)
	readFrame(t, f, 9, 2*time.Second)

	// noise: one command in four is ignored, two replies in three come
	// with a flipped data byte (a bad checksum, never a good frame).
	if err := b.SetFault(0, FaultNoise); err != nil {
		t.Fatal(err)
	}
	var good, bad, ignored int
	for range 8 {
		write(t, f, status...)
		if err := f.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, 16)
		for len(got) < 9 {
			k, err := f.Read(buf)
			got = append(got, buf[:k]...)
			if err != nil {
				break
			}
		}
		switch _, err := proto.DecodeKerongStatus(got, 0); {
		case len(got) == 0:
			ignored++
		case err == nil:
			good++
		case errors.Is(err, proto.ErrChecksum):
			bad++
		default:
			t.Fatalf("noise: % x: %v", got, err)
		}
	}
	if ignored != 2 || good+bad != 6 || bad < 3 {
		t.Fatalf("noise over 8 queries: %d ignored, %d good, %d bad checksums", ignored, good, bad)
	}

	// power_cut_on_unlock: the lock fires, no answer, the board is off;
	// the fault is spent.
	if err := b.SetFault(0, FaultPowerCutOnUnlock); err != nil {
		t.Fatal(err)
	}
	n := len(ph.Unlocks())
	write(t, f, 0x02, 0x01, 0x31, 0x03, 0x37) // lock 2
	silent(t, f, 100*time.Millisecond)
	if st := board0(); len(ph.Unlocks()) != n+1 || !st.Off || st.Fault != FaultNone {
		t.Fatalf("power cut on unlock: %d unlocks (want %d), %+v", len(ph.Unlocks()), n+1, st)
	}
	clock.Advance(3 * time.Second)
	write(t, f, status...)
	if got, _ := readFrame(t, f, 9, 2*time.Second); got[2] != 0x35 {
		t.Fatalf("after the power cut: % x", got)
	}
	var errs []string
	for _, fr := range b.Frames() {
		errs = append(errs, fr.Err)
	}
	joined := strings.Join(errs, "|")
	for _, want := range []string{"another board's address", "noisy line", "not sent: the board lost its power", "I15 broken"} {
		if !strings.Contains(joined, want) {
			t.Errorf("frame errors %q lack %q", joined, want)
		}
	}
}

// Test8A80I15Watch: an 8A/80 unlock whose reply was lost, resent before a
// query was answered, is counted; its reply does not resolve it either
// (only a query's).
func Test8A80I15Watch(t *testing.T) {
	ph := newPhysics()
	b, f := serve(t, Config{Name: "BUS2", Protocol: proto.P8A80, LockOpenBit: 1, Physics: ph, UnlockDelay: 20 * time.Millisecond,
		Boards: []Board{{Address: 1, Channels: 8}}})
	unlock := []byte{0x8A, 0x01, 0x01, 0x11, 0x9B}
	query := []byte{0x80, 0x01, 0x00, 0x33, 0xB2}
	write(t, f, unlock...)
	readFrame(t, f, 5, 2*time.Second)
	write(t, f, unlock...)
	readFrame(t, f, 5, 2*time.Second)
	if st := b.Boards()[0]; st.Resent != 1 {
		t.Fatalf("%+v: an unlock reply does not resolve an unlock for the controller's bus", st)
	}
	write(t, f, query...)
	readFrame(t, f, 7, 2*time.Second)
	write(t, f, 0x8A, 0x01, 0x00, 0x11, 0x9A) // open all
	readFrame(t, f, 5, 3*time.Second)
	if st := b.Boards()[0]; st.Resent != 1 || st.Unlocks != 3 || st.ChannelUnlocks[8] != 1 || st.ChannelUnlocks[1] != 3 {
		t.Fatalf("%+v", st)
	}
}

// TestMonitorDecodesTheDaemonsFrames: a real bus's frame view decodes what
// the daemon's bus worker wrote and read, and keeps its errors.
func TestMonitorDecodesTheDaemonsFrames(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k := NewMonitor("BUS1", proto.Kerong, 1)
	ch, cancel := k.Subscribe()
	defer cancel()
	k.Observe(halrs485.Frame{At: at, Sent: true, Board: 1, Data: []byte{0x02, 0x10, 0x31, 0x03, 0x46}})
	k.Observe(halrs485.Frame{At: at, Board: 1, Data: []byte{0x02, 0x10, 0x35, 0x01, 0x00, 0x00, 0x00, 0x03, 0x4B}})
	k.Observe(halrs485.Frame{At: at, Board: 2, Err: halrs485.ErrTimeout})
	k.Observe(halrs485.Frame{At: at, Board: -1, Data: []byte{0xFF}, Err: halrs485.ErrStray})
	m := NewMonitor("BUS2", proto.P8A80, 1)
	m.Observe(halrs485.Frame{At: at, Sent: true, Board: 1, Data: []byte{0x80, 0x01, 0x00, 0x33, 0xB2}})
	m.Observe(halrs485.Frame{At: at, Board: 1, Data: []byte{0x80, 0x01, 0x00, 0x00, 0x01, 0x33, 0xB3}})
	m.Observe(halrs485.Frame{At: at, Board: 1, Data: []byte{0x8A, 0x01, 0x01, 0x11, 0x9B}})
	got := func(fs []Frame) (out []string) {
		for _, f := range fs {
			out = append(out, f.Bus+"|"+f.Dir+"|"+f.Hex+"|"+f.Text+"|"+f.Err)
		}
		return out
	}
	want := []string{
		"BUS1|cmd|02 10 31 03 46|board 1 lock 1: unlock|",
		"BUS1|reply|02 10 35 01 00 00 00 03 4B|board 1 status: open 1, parcels none|",
		"BUS1|reply|||" + halrs485.ErrTimeout.Error(),
		"BUS1|reply|FF||" + halrs485.ErrStray.Error(),
		"BUS2|cmd|80 01 00 33 B2|board 1: query all|",
		"BUS2|reply|80 01 00 00 01 33 B3|board 1 status: open 1|",
		"BUS2|reply|8A 01 01 11 9B|board 1 channel 1: open|",
	}
	all := append(got(k.Frames()), got(m.Frames())...)
	if strings.Join(all, "\n") != strings.Join(want, "\n") {
		t.Fatalf("frames:\n%s\nwant:\n%s", strings.Join(all, "\n"), strings.Join(want, "\n"))
	}
	if f := <-ch; f.Seq != 1 || !f.At.Equal(at) || f.Text != "board 1 lock 1: unlock" {
		t.Fatalf("first frame published: %+v", f)
	}
}
