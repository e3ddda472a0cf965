package main

// The storage torture of issue 7: the real locker-sim binary keeps its
// database on a real file system of its own (a small tmpfs, mounted by
// the test in a mount namespace of its own, so that neither root nor a
// privileged CI runner is needed), which the test fills up to the last
// byte while deposits are under way, and later makes read-only before a
// start. The locker must open no door it cannot record, say so on its
// display, in its log and in its status, lose no event, and recover by
// itself when space returns.
//
//	go test -race -run TestTortureStorage -v ./cmd/locker-sim/
//	LOCKER_TORTURE=1 go test -run TestTortureStorage -v ./cmd/locker-sim/

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/protocol"
)

// TestTortureStorage runs storageTorture in a child process that has a
// user and mount namespace of its own (a new user namespace grants the
// right to mount there).
func TestTortureStorage(t *testing.T) {
	t.Parallel()
	if os.Getenv("LOCKER_STORAGE_CHILD") != "" {
		storageTorture(t)
		return
	}
	b := brokertest.Start(t, brokertest.Options{})
	bin := buildSim(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestTortureStorage$", "-test.v", "-test.count=1", "-test.timeout=20m")
	cmd.Env = append(os.Environ(), "LOCKER_STORAGE_CHILD=1", "LOCKER_STORAGE_BROKER="+b.URL(), "LOCKER_STORAGE_BIN="+bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "TORTURE-ROW ") {
			fmt.Println(line) // for make torture
		}
	}
	if err != nil {
		t.Fatalf("the storage torture (in its own mount namespace) failed: %v\n%s", err, out.String())
	}
	t.Logf("%s", out.String())
}

// storageTorture is the test proper, run inside the namespace.
func storageTorture(t *testing.T) {
	broker, bin := os.Getenv("LOCKER_STORAGE_BROKER"), os.Getenv("LOCKER_STORAGE_BIN")
	// Mounts made here must not leak to the parent namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make / private in the test's mount namespace: %v", err)
	}
	dbDir := t.TempDir()
	if err := syscall.Mount("tmpfs", dbDir, "tmpfs", 0, "size=8m,mode=0755"); err != nil {
		t.Fatalf("mount a tmpfs for the database: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dbDir, syscall.MNT_DETACH) })
	data := t.TempDir()

	cycles := scaled(t, "LOCKER_STORAGE_CYCLES", 1, 20, 100)

	const locker = "SIM01"
	prefix := "lockers/v1/" + locker + "/"
	c := newCentral(t, broker, "central-storage", prefix+"#")
	r := &storageRig{t: t, c: c, bin: bin, broker: broker, data: data, dbDir: dbDir, prefix: prefix}
	r.start()
	c.wait("online status", func(m msg) bool { return m.Topic == prefix+"status" && bytes.Contains(m.Payload, []byte(`"online"`)) })
	kp, err := protocol.LoadKeyPair(filepath.Join(data, "central-dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	r.kp = kp

	for i := 0; i < cycles; i++ {
		r.diskFull(i)
		if i%2 == 1 || i == cycles-1 {
			r.readOnlyStart(i)
		}
	}
	r.finalCheck()

	lost := r.lost + r.wrongOpens
	printTortureRow("disk full, read-only folder", r.fulls+r.readOnlys, "outages", lost,
		fmt.Sprintf("%d disks filled up during deposits (%d deposits ended during the outage and were reported after it, %d codes refused with \"Out of service\"), %d starts on a read-only folder; %d traces, seq gapless",
			r.fulls, r.duringOutage, r.refused, r.readOnlys, r.traces))
	if lost > 0 {
		t.Fatalf("%d events lost and %d doors opened during storage outages", r.lost, r.wrongOpens)
	}
}

type storageRig struct {
	t                        *testing.T
	c                        *testCentral
	s                        *sim
	kp                       protocol.KeyPair
	bin, broker, data, dbDir string
	prefix                   string
	n                        int // grants made
	fulls, readOnlys         int
	duringOutage, refused    int
	lost, wrongOpens, traces int
	pending                  []string // deposits finished during an outage: their `deposited` is owed
	storageFaults            int      // storage_fault traces seen so far
}

func (r *storageRig) start() {
	r.s = startSimBinary(r.t, r.bin, r.broker, r.data, "-db", r.dbDir, "-quiet")
}

// grant sends one deposit grant (with its pickup), waits for its ack and
// returns its id, courier code and pickup code.
func (r *storageRig) grant() (id, code, pickup string) {
	r.n++
	id = fmt.Sprintf("g-%d", r.n)
	code, pickup = fmt.Sprintf("%06d", 100000+r.n), fmt.Sprintf("%06d", 500000+r.n)
	now := time.Now().UTC().Truncate(time.Millisecond)
	env := sealWith(r.t, r.kp.KeyID, r.kp.Private, grantsBody("SIM01", now,
		depositWithPickup("SIM01", id, code, pickup, now)))
	acked := func() bool {
		for _, m := range r.c.all() {
			var a wire.GrantsAck
			if m.Topic == r.prefix+"grants/ack" && json.Unmarshal(m.Payload, &a) == nil && a.IssuedAt.Equal(now) {
				return a.Applied == 1
			}
		}
		return false
	}
	r.c.publish(r.prefix+"grants", env)
	r.waitUntil("the ack of "+id, 15*time.Second, acked)
	return id, code, pickup
}

// bigEnvelope is a snapshot-sized grants envelope: applying it needs far
// more room than a full disk has. It expires in a few seconds, so that
// the broker's redelivery after the outage is refused as expired and the
// small file system does not fill up with bulk grants over many cycles.
func (r *storageRig) bigEnvelope() []byte {
	now := time.Now().UTC()
	var ops []wire.GrantOp
	until := now.Add(24 * time.Hour)
	for i := 0; i < 1500; i++ {
		ops = append(ops, wire.GrantOp{Op: "put", GrantID: fmt.Sprintf("bulk-%d-%d", r.fulls, i), Version: 1,
			Action: "deposit", Size: "L", ParcelID: fmt.Sprintf("JT%013d", i), Holder: "13400000000",
			CodeHash: wire.CodeHash("SIM01", fmt.Sprintf("9%05d%d", i, r.fulls%10)), ValidUntil: &until})
	}
	body := grantsBody("SIM01", now, ops...)
	body.ExpiresAt = now.Add(3 * time.Second)
	return sealWith(r.t, r.kp.KeyID, r.kp.Private, body)
}

// fill fills the file system with a ballast file and keeps it full, as a
// runaway log would: whatever room SQLite frees (a truncated write-ahead
// log) is taken again within milliseconds. The returned func stops the
// filler and deletes the ballast: space returns.
func (r *storageRig) fill() (free func()) {
	path := filepath.Join(r.dbDir, "ballast")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	buf := make([]byte, 4096)
	fillUp := func() error {
		for {
			if _, err := f.Write(buf); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					return nil
				}
				return err
			}
		}
	}
	if err := fillUp(); err != nil {
		r.t.Fatalf("ballast: %v", err)
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				fillUp()
			}
		}
	}()
	return func() {
		close(stop)
		<-stopped
		f.Close()
		if err := os.Remove(path); err != nil {
			r.t.Fatal(err)
		}
	}
}

// remount makes the database's file system read-only or writable again.
func (r *storageRig) remount(readOnly bool) {
	flags := uintptr(syscall.MS_REMOUNT)
	if readOnly {
		flags |= syscall.MS_RDONLY
	}
	if err := syscall.Mount("tmpfs", r.dbDir, "tmpfs", flags, "size=8m"); err != nil {
		r.t.Fatalf("remount (read-only %v): %v", readOnly, err)
	}
}

// daemonStatus reads the daemon's status through the simulator's API.
func (r *storageRig) daemonStatus() (wire.Status, int) {
	var st wire.Status
	resp, err := http.Get(r.s.base + "/api/daemon/status")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 {
		json.NewDecoder(resp.Body).Decode(&st)
	}
	return st, resp.StatusCode
}

func (r *storageRig) waitUntil(what string, d time.Duration, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	defer func(t0 time.Time) { r.t.Logf("%s: %s", what, time.Since(t0).Round(time.Millisecond)) }(time.Now())
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Logf("waited for: %s", what)
			for _, m := range r.c.all() {
				r.t.Logf("central got %s: %.300s", m.Topic, m.Payload)
			}
			r.t.Fatalf("%s did not happen within %s\nlocker-sim:\n%s", what, d, r.s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *storageRig) display() string { return strings.Join(r.s.cabinet().Display, " / ") }

// unlatched lists the compartments whose door is open or whose latch let go.
func (r *storageRig) unlatched() []int {
	var out []int
	for _, k := range r.s.cabinet().Compartments {
		if k.Door == "open" || !k.Latched {
			out = append(out, k.Number)
		}
	}
	return out
}

func (r *storageRig) count(typ string) int {
	n := 0
	for _, tr := range r.c.traces() {
		if tr.Type == typ {
			n++
		}
	}
	return n
}

func (r *storageRig) deposited(id string) bool {
	for _, tr := range r.c.traces() {
		if tr.Type == "deposited" && tr.GrantID == id {
			return true
		}
	}
	return false
}

// diskFull: a deposit is under way when the disk fills up; the courier
// closes the door during the outage and another courier's code is
// refused; then space returns.
func (r *storageRig) diskFull(cycle int) {
	t := r.t
	id, code, pickup := r.grant()
	_, refusedCode, _ := r.grant()
	r.s.keys(code + "#")
	n := r.s.waitOpenDoor()
	r.s.do(n, "parcel", map[string]bool{"present": true})

	free := r.fill()
	r.fulls++
	r.c.publish(r.prefix+"grants", r.bigEnvelope())
	r.waitUntil("storage_fault in the status", 15*time.Second, func() bool {
		st, code := r.daemonStatus()
		return code == 200 && st.StorageFault != ""
	})
	r.waitUntil(`"Out of service" on the display`, 5*time.Second, func() bool {
		return strings.HasPrefix(r.display(), "Out of service")
	})
	// The courier closes the door: the deposit ends while nothing can be recorded.
	r.s.do(n, "door", map[string]string{"action": "close"})
	r.duringOutage++
	r.pending = append(r.pending, id)
	// The next courier's code is refused, and no door opens.
	if d := strings.Join(r.s.keys(refusedCode+"#"), " / "); !strings.HasPrefix(d, "Out of service") {
		t.Errorf("cycle %d: display after a code during the outage = %q", cycle, d)
	}
	r.refused++
	time.Sleep(300 * time.Millisecond)
	if open := r.unlatched(); len(open) > 0 {
		r.wrongOpens++
		t.Errorf("cycle %d: doors %v opened while nothing could be recorded", cycle, open)
	}
	if !strings.Contains(r.s.logs.String(), "storage cannot be written") {
		t.Errorf("cycle %d: the log does not say that the storage cannot be written", cycle)
	}

	// Space returns: the locker records the outage, replays the door it
	// missed, and serves again.
	free()
	r.waitUntil("a storage_fault trace", 15*time.Second, func() bool { return r.count("storage_fault") > r.storageFaults })
	r.storageFaults = r.count("storage_fault")
	r.waitUntil("the idle prompt", 10*time.Second, func() bool { return strings.HasPrefix(r.display(), "Enter code") })
	if st, _ := r.daemonStatus(); st.StorageFault != "" {
		t.Errorf("cycle %d: the status still says storage_fault %q", cycle, st.StorageFault)
	}
	r.waitUntil("deposited of "+id, 10*time.Second, func() bool { return r.deposited(id) })
	// The refused courier tries again and the locker opens for them.
	r.s.keys(refusedCode + "#")
	m := r.s.waitOpenDoor()
	time.Sleep(personPause)
	r.s.do(m, "door", map[string]string{"action": "close"}) // nothing put in: cancelled
	r.waitUntil("deposit_cancelled", 10*time.Second, func() bool { return r.count("deposit_cancelled") >= r.fulls })
	// The recipient of the parcel deposited during the outage picks it up.
	r.s.keys(pickup + "#")
	if p := r.s.waitOpenDoor(); p != n {
		t.Fatalf("cycle %d: the pickup code opened %d, the parcel is in %d", cycle, p, n)
	}
	r.s.do(n, "parcel", map[string]bool{"present": false})
	time.Sleep(personPause)
	r.s.do(n, "door", map[string]string{"action": "close"})
	r.waitUntil("picked_up", 10*time.Second, func() bool { return r.count("picked_up") >= r.fulls })
}

// readOnlyStart: the locker starts on a read-only data folder. It keeps
// every door shut, says so on the display and in the log, and starts by
// itself once the folder is writable again.
func (r *storageRig) readOnlyStart(cycle int) {
	t := r.t
	started := r.count("started")
	r.s.stop()
	r.remount(true)
	r.readOnlys++
	r.start()
	r.waitUntil(`"Out of service" on the display of a locker that cannot start`, 10*time.Second, func() bool {
		return strings.HasPrefix(r.display(), "Out of service")
	})
	if _, code := r.daemonStatus(); code != http.StatusServiceUnavailable {
		t.Errorf("cycle %d: the daemon's status answers %d on a read-only folder, want 503", cycle, code)
	}
	if logs := r.s.logs.String(); !strings.Contains(logs, "data folder cannot be written") || strings.Contains(logs, "err=<nil>") {
		t.Errorf("cycle %d: the log does not say that the data folder cannot be written, and why:\n%s", cycle, logs)
	}
	time.Sleep(500 * time.Millisecond)
	if open := r.unlatched(); len(open) > 0 {
		r.wrongOpens++
		t.Errorf("cycle %d: doors %v opened on a read-only folder", cycle, open)
	}
	r.remount(false)
	r.waitUntil("the start once the folder is writable", 15*time.Second, func() bool {
		st, code := r.daemonStatus()
		return code == 200 && st.State == "online"
	})
	r.waitUntil("a started trace", 10*time.Second, func() bool { return r.count("started") > started })
	r.waitUntil("the idle prompt", 10*time.Second, func() bool { return strings.HasPrefix(r.display(), "Enter code") })
}

// finalCheck lets the outbox drain and checks the whole trace stream.
func (r *storageRig) finalCheck() {
	t := r.t
	r.waitUntil("an empty outbox", 30*time.Second, func() bool {
		st, code := r.daemonStatus()
		return code == 200 && st.Outbox == 0
	})
	trs := r.c.traces()
	sort.Slice(trs, func(i, j int) bool { return trs[i].Seq < trs[j].Seq })
	for i, tr := range trs {
		if tr.Seq != int64(i+1) {
			r.lost++
			t.Errorf("trace seq %d where %d was due: a gap", tr.Seq, i+1)
			break
		}
	}
	for _, id := range r.pending {
		if !r.deposited(id) {
			r.lost++
			t.Errorf("the deposit of %s, finished during an outage, was never reported", id)
		}
	}
	r.traces = len(trs)
}
