package controller

import (
	"container/heap"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/controller/wire"
)

var (
	soakYears = flag.Float64("soak-years", 5, "BenchmarkSoak: years of service to simulate (reports at year 0, 1 and this)")
	soakRate  = flag.Int("soak-rate", 150, "BenchmarkSoak: parcels a day")
	soakDir   = flag.String("soak-dir", "/dev/shm", "BenchmarkSoak: folder of the database (a tmpfs, so that fsyncs do not dominate); \"\" for the test's temporary folder")
	soakTick  = flag.Duration("soak-tick", 2*time.Minute, "BenchmarkSoak: simulated time between housekeeping ticks while nothing happens")
	soakProf  = flag.String("soak-memprofile", "", "BenchmarkSoak: folder to write a heap profile to at each point (y0.pprof, y1.pprof, yN.pprof), sampled every 4 KiB allocated")
)

// The soak's cabinet: 124 compartments (InPost's average), small to large.
var soakSizes = strings.TrimSpace(strings.Repeat("S ", 40) + strings.Repeat("M ", 50) + strings.Repeat("L ", 34))

// soakParcel is one parcel of the soak, from its grants to its pickup or
// reclaim.
type soakParcel struct {
	k           int
	size        string
	depCode     string
	pickCode    string // the recipient's code (a transfer changes it)
	pickVersion int64
	pickUntil   time.Time
	depUntil    time.Time
	comp        int  // where it went; 0: not deposited
	noShow      bool // the courier never comes: the deposit grant expires
	uncollected bool // the recipient never comes: reclaimed after expiry
	reclaimCode string
	reclaimTill time.Time
	done        bool
}

func (p *soakParcel) depID() string     { return fmt.Sprintf("d%d", p.k) }
func (p *soakParcel) pickID() string    { return fmt.Sprintf("d%d-p", p.k) }
func (p *soakParcel) reclaimID() string { return fmt.Sprintf("r%d", p.k) }
func (p *soakParcel) parcelID() string  { return fmt.Sprintf("JT%012d", p.k) }

type soakKind int

const (
	soakDaily   soakKind = iota // the day's grants envelope, then the snapshot
	soakDeposit                 // the courier
	soakPickup                  // the recipient
	soakReclaim                 // the courier takes an uncollected parcel back
	soakDisable                 // the central takes a compartment out of use, and back
)

type soakEvent struct {
	at   time.Time
	seq  int
	kind soakKind
	p    *soakParcel
}

type soakQueue []soakEvent

func (q soakQueue) Len() int { return len(q) }
func (q soakQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q soakQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *soakQueue) Push(x any)   { *q = append(*q, x.(soakEvent)) }
func (q *soakQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	// The slot beyond the length would keep its parcel alive: the queue
	// holds every day's events from the start and shrinks over the years,
	// and the stale slots held ever more parcels, counted in the heap
	// the soak measures (its growth from year 0 to 1 was the benchmark's
	// own parcels and codes in a heap profile; nothing of the controller).
	old[len(old)-1] = soakEvent{}
	*q = old[:len(old)-1]
	return e
}

// soakPoint is what the soak measures at one point of its simulated years.
type soakPoint struct {
	name                     string // y0, y1, yN
	day                      int
	dbBytes, walBytes        int64
	heapAlloc                uint64
	grants, commands, outbox int64
	heap, rss                uint64
	p50, p99                 time.Duration // keypad '#' to coil, over the last samples
	samples                  int
	coldStart                time.Duration // median of 3 reopenings
	snapApply                time.Duration // median of the last 7 days' snapshots
	snapOps                  int
}

// BenchmarkSoak runs a locker for years on a fake clock (default 5 years
// at 150 parcels a day: 273,750 parcels) and reports, after the first week
// (year 0), after year 1 and at the end: the database's size on disk (file,
// WAL and shared-memory index), the rows in grants, commands and outbox,
// the Go heap in use and the process's RSS, keypad '#'-to-coil p50/p99
// over the last 300 codes, cold start (close and reopen the store and the
// controller, to Ready) and the apply time of the daily snapshot.
//
// Every parcel goes through its real transactions: the deposit code, the
// release, door open, parcel in, door closed (deposited), and the same for
// the pickup. Each day: one grants envelope at 06:00 with the day's
// deposit grants (nested pickups), transfers of 5 % of the parcels waiting
// (a new pickup code) and reclaim grants for the parcels whose pickup
// expired; then a snapshot of every grant in force; a disable and an
// enable command at 03:00. 2 % of couriers never come (the deposit grant
// expires), 3 % of recipients never come (the pickup expires, the parcel
// is reclaimed the next morning). Housekeeping ticks every -soak-tick of
// simulated time while nothing happens, and after every visit. The events
// of each step are acknowledged in one batch, as the MQTT link does.
//
// The database is on a tmpfs (-soak-dir, default /dev/shm), so that the
// fsyncs of 1.6 million durable transactions do not dominate: the figures
// are CPU, SQLite and Go, not the disk (BenchmarkWear measures the disk).
func BenchmarkSoak(b *testing.B) {
	years, rate := *soakYears, *soakRate
	days := int(math.Round(years * 365))
	if days < 8 || rate < 1 {
		b.Fatalf("-soak-years %v -soak-rate %d: want at least 8 days and 1 parcel a day", years, rate)
	}
	dir := b.TempDir()
	if *soakDir != "" {
		var err error
		if dir, err = os.MkdirTemp(*soakDir, "locker-soak-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	if *soakProf != "" {
		runtime.MemProfileRate = 4096 // the heap is a few MB: the default 512 KiB sees nothing
	}
	start := time.Now()
	day0 := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	r := newSoakRig(b, filepath.Join(dir, "locker.db"), soakSizes, day0, nil)
	rng := rand.New(rand.NewPCG(12, 2026))
	r.tick()
	r.ack()

	var (
		q         soakQueue
		seq       int
		nextK     int
		live      = map[int]*soakParcel{} // parcels not yet done
		occupied  = map[int]bool{}        // compartments holding a parcel (as the benchmark put them)
		lat       []time.Duration         // keypad '#' to coil, last 300
		snaps     []time.Duration         // snapshot apply, last 7
		snapOps   int
		points    []soakPoint
		issued    time.Time
		want      = map[string]int{} // traces the scenario must produce
		noRelease int
	)
	push := func(e soakEvent) { seq++; e.seq = seq; heap.Push(&q, e) }
	nextIssued := func(now time.Time) time.Time {
		if !now.After(issued) {
			now = issued.Add(time.Millisecond)
		}
		issued = now
		return now
	}
	sample := func(d time.Duration) {
		lat = append(lat, d)
		if len(lat) > 300 {
			lat = lat[1:]
		}
	}
	codeOf := func(prefix, k int) string { return fmt.Sprintf("%d%07d", prefix, k%10_000_000) }

	for d := range days {
		push(soakEvent{at: day0.Add(time.Duration(d)*24*time.Hour + 6*time.Hour), kind: soakDaily})
		push(soakEvent{at: day0.Add(time.Duration(d)*24*time.Hour + 3*time.Hour), kind: soakDisable})
	}
	end := day0.Add(time.Duration(days) * 24 * time.Hour)
	checkAt := map[int]string{7: "y0", days: "yN"}
	if days > 365 {
		checkAt[365] = "y1"
	}
	nextDay := 1

	// measure takes the figures of a point at the end of a day.
	measure := func(name string, day int) {
		p := soakPoint{name: name, day: day, snapOps: snapOps}
		var err error
		if p.dbBytes, err = r.st.DiskBytes(r.ctx); err != nil {
			b.Fatal(err)
		}
		if fi, err := os.Stat(r.path + "-wal"); err == nil {
			p.walBytes = fi.Size()
		}
		p.grants, p.commands, p.outbox = r.rows()
		p.heap, p.rss = memory()
		if *soakProf != "" {
			writeHeapProfile(b, filepath.Join(*soakProf, name+".pprof"))
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		p.heapAlloc = ms.HeapAlloc
		s := slices.Clone(lat)
		slices.Sort(s)
		p.samples = len(s)
		if len(s) > 0 {
			p.p50, p.p99 = s[(len(s)-1)*50/100], s[(len(s)*99+99)/100-1]
		}
		var cold []time.Duration
		for range 3 {
			cold = append(cold, r.restart())
			r.ack()
		}
		slices.Sort(cold)
		p.coldStart = cold[1]
		ss := slices.Clone(snaps)
		slices.Sort(ss)
		if len(ss) > 0 {
			p.snapApply = ss[len(ss)/2]
		}
		points = append(points, p)
		if *soakProf != "" {
			fmt.Fprintf(os.Stderr, "soak %s (day %d): heap %d live %d rss %d\n", name, day, p.heap, p.heapAlloc, p.rss)
		}
		b.Logf("%s (day %d, %v): db %.2f MB, rows grants %d commands %d outbox %d, heap %.1f MB, rss %.1f MB, "+
			"'#'→coil p50 %v p99 %v (%d), cold start %v, snapshot %v (%d ops)",
			name, day, time.Since(start).Round(time.Second), float64(p.dbBytes)/1e6, p.grants, p.commands, p.outbox,
			float64(p.heap)/1e6, float64(p.rss)/1e6, p.p50, p.p99, p.samples, p.coldStart, p.snapApply, p.snapOps)
	}

	b.ResetTimer()
	for q.Len() > 0 {
		e := heap.Pop(&q).(soakEvent)
		final := !e.at.Before(end)
		if final {
			e.at = end // what comes after the last day is not played
		}
		// Time passes: housekeeping ticks until the event is due, and the
		// end of each day is a point to measure at.
		for {
			now := r.clock.Now()
			dayEnd := day0.Add(time.Duration(nextDay) * 24 * time.Hour)
			next := now.Add(*soakTick)
			if !next.Before(e.at) && dayEnd.After(e.at) {
				break
			}
			if !dayEnd.After(next) {
				if dayEnd.After(now) {
					r.clock.Advance(dayEnd.Sub(now))
				}
				r.tick()
				r.ack()
				if name, ok := checkAt[nextDay]; ok {
					measure(name, nextDay)
				}
				nextDay++
				continue
			}
			r.clock.Advance(*soakTick)
			r.tick()
			r.ack()
		}
		if d := e.at.Sub(r.clock.Now()); d > 0 {
			r.clock.Advance(d)
		}
		if final {
			break
		}
		now := r.clock.Now()
		switch e.kind {
		case soakDaily:
			var ops []wire.GrantOp
			// Today's parcels.
			for range rate {
				nextK++
				p := &soakParcel{k: nextK, size: []string{"S", "S", "S", "S", "S", "M", "M", "M", "M", "L"}[rng.IntN(10)],
					depCode: codeOf(1, nextK), pickCode: codeOf(2, nextK), pickVersion: 1,
					depUntil: now.Add(36 * time.Hour), pickUntil: now.Add(4*24*time.Hour - 3*time.Hour)}
				u := rng.Float64()
				p.noShow, p.uncollected = u < 0.02, u >= 0.02 && u < 0.05
				live[p.k] = p
				ops = append(ops, wire.GrantOp{Op: "put", GrantID: p.depID(), Version: 1, Action: "deposit", Size: p.size,
					ParcelID: p.parcelID(), Holder: "13488888888", CodeHash: wire.CodeHash(lockerID, p.depCode),
					ValidUntil: ptr(p.depUntil), Pickup: &wire.PickupSpec{GrantID: p.pickID(), Holder: "13499996666",
						CodeHash: wire.CodeHash(lockerID, p.pickCode), ValidUntil: ptr(p.pickUntil)}})
				if p.noShow {
					want["no-show"]++
					continue
				}
				push(soakEvent{at: now.Add(time.Hour + time.Duration(rng.Int64N(int64(14*time.Hour)))), kind: soakDeposit, p: p})
			}
			for _, p := range live {
				switch {
				case p.done || p.comp == 0:
				case p.uncollected && p.reclaimCode == "" && !now.Before(p.pickUntil):
					// Expired yesterday: the courier takes it back today.
					p.reclaimCode, p.reclaimTill = codeOf(4, p.k), now.Add(48*time.Hour)
					ops = append(ops, wire.GrantOp{Op: "put", GrantID: p.reclaimID(), Version: 1, Action: "reclaim",
						Compartment: p.comp, ParcelID: p.parcelID(), Holder: "13500002222",
						CodeHash: wire.CodeHash(lockerID, p.reclaimCode), ValidUntil: ptr(p.reclaimTill)})
					want["pickup_expired"]++
					push(soakEvent{at: now.Add(3*time.Hour + time.Duration(rng.Int64N(int64(8*time.Hour)))), kind: soakReclaim, p: p})
				case !p.uncollected && p.pickVersion == 1 && rng.IntN(20) == 0:
					// A transfer: the recipient hands the parcel to someone else.
					p.pickVersion, p.pickCode = 2, codeOf(3, p.k)
					ops = append(ops, p.pickupOp())
					want["transfer"]++
				}
			}
			ack := r.apply(&wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: nextIssued(now),
				ExpiresAt: now.Add(time.Hour), Ops: ops})
			if len(ack.Rejected) > 0 {
				b.Fatalf("day %v: rejected %+v", now, ack.Rejected[0])
			}
			r.ack()

			// The snapshot: every grant in force, a minute later.
			r.clock.Advance(time.Minute)
			now = r.clock.Now()
			ops = ops[:0]
			for _, p := range live {
				switch {
				case p.done:
				case p.comp == 0 && now.Before(p.depUntil):
					ops = append(ops, wire.GrantOp{Op: "put", GrantID: p.depID(), Version: 1, Action: "deposit", Size: p.size,
						ParcelID: p.parcelID(), Holder: "13488888888", CodeHash: wire.CodeHash(lockerID, p.depCode),
						ValidUntil: ptr(p.depUntil), Pickup: &wire.PickupSpec{GrantID: p.pickID(), Holder: "13499996666",
							CodeHash: wire.CodeHash(lockerID, codeOf(2, p.k)), ValidUntil: ptr(p.pickUntil)}})
				case p.comp != 0 && p.reclaimCode != "":
					ops = append(ops, wire.GrantOp{Op: "put", GrantID: p.reclaimID(), Version: 1, Action: "reclaim",
						Compartment: p.comp, ParcelID: p.parcelID(), Holder: "13500002222",
						CodeHash: wire.CodeHash(lockerID, p.reclaimCode), ValidUntil: ptr(p.reclaimTill)})
				case p.comp != 0 && now.Before(p.pickUntil):
					ops = append(ops, p.pickupOp())
				}
			}
			snapOps = len(ops)
			t := time.Now()
			ack = r.apply(&wire.GrantsBody{Kind: "grants", LockerID: lockerID, IssuedAt: nextIssued(now),
				ExpiresAt: now.Add(time.Hour), Snapshot: true, Ops: ops})
			snaps = append(snaps, time.Since(t))
			if len(snaps) > 7 {
				snaps = snaps[1:]
			}
			if len(ack.Rejected) > 0 || ack.Applied != 0 {
				b.Fatalf("day %v: the snapshot of the grants in force changed something: applied %d, rejected %v",
					now, ack.Applied, ack.Rejected)
			}
			r.ack()
			r.tick()
			r.ack()
			// Parcels whose story ended are forgotten by the benchmark.
			for k, p := range live {
				if p.done || (p.comp == 0 && !now.Before(p.depUntil)) {
					delete(live, k)
				}
			}

		case soakDeposit:
			p := e.p
			n, d := r.code(p.depCode)
			if n == 0 {
				noRelease++ // no free compartment of its size: the grant expires
				want["no-show"]++
				continue
			}
			sample(d)
			if occupied[n] {
				b.Fatalf("deposit %d opened compartment %d, which holds a parcel", p.k, n)
			}
			r.visit(n, true)
			p.comp, occupied[n] = n, true
			want["deposited"]++
			r.ack()
			r.tick()
			r.ack()
			if p.uncollected {
				continue // its pickup expires; reclaimed the morning after
			}
			delay := 20*time.Minute + time.Duration(rng.ExpFloat64()*float64(8*time.Hour))
			if max := p.pickUntil.Sub(r.clock.Now()) - time.Hour; delay > max {
				delay = max
			}
			push(soakEvent{at: r.clock.Now().Add(delay), kind: soakPickup, p: p})

		case soakPickup, soakReclaim:
			p := e.p
			code := p.pickCode
			if e.kind == soakReclaim {
				code = p.reclaimCode
			}
			n, d := r.code(code)
			if n != p.comp {
				b.Fatalf("%v: parcel %d's code opened compartment %d, want %d", now, p.k, n, p.comp)
			}
			sample(d)
			r.visit(n, false)
			p.done, occupied[n] = true, false
			if e.kind == soakReclaim {
				want["reclaimed"]++
			} else {
				want["picked_up"]++
			}
			r.ack()
			r.tick()
			r.ack()

		case soakDisable:
			// A compartment that holds nothing (no courier comes at night).
			n := 0
			for i := 124; i > 0 && n == 0; i-- {
				if !occupied[i] {
					n = i
				}
			}
			for i, act := range []string{"disable", "enable"} {
				if i == 1 {
					r.clock.Advance(20 * time.Minute)
					r.tick()
					r.ack()
				}
				at := r.clock.Now()
				res, err := r.c.Execute(r.ctx, &wire.Command{Kind: "command", LockerID: lockerID,
					CommandID: fmt.Sprintf("c-%d-%s", seq, act), IssuedAt: at, ExpiresAt: at.Add(time.Hour), Action: act,
					Compartment: n, Reason: "soak"})
				if err != nil || !res.OK {
					b.Fatalf("%v: %s %d: %v %+v", at, act, n, err, res)
				}
				want["commands"]++
				r.ack()
			}
		}
	}
	b.StopTimer()
	r.tick()
	r.ack()
	for _, p := range live {
		if p.uncollected && p.comp != 0 && p.reclaimCode == "" && p.pickUntil.Before(r.clock.Now()) {
			want["pickup_expired"]++
		}
	}

	// The scenario happened as planned: every deposit, pickup, reclaim and
	// expiry, and nothing else went wrong.
	for _, typ := range []string{"deposited", "picked_up", "reclaimed", "pickup_expired"} {
		if got := r.count(typ); got != want[typ] {
			b.Errorf("%d %s traces, want %d", got, typ, want[typ])
		}
	}
	for _, typ := range []string{"grant_rejected", "lock_fault", "sensor_fault", "door_forced", "deposit_cancelled", "pickup_incomplete", "outbox_overflow"} {
		if got := r.count(typ); got != 0 {
			b.Errorf("%d %s traces, want none", got, typ)
		}
	}
	if noRelease > rate*days/1000 {
		b.Errorf("%d deposits found no free compartment (more than 0.1%%)", noRelease)
	}
	b.Logf("%d parcels in %d days (%d transfers, %d no-shows, %d reclaimed, %d without a free compartment), %d commands, %v",
		nextK, days, want["transfer"], want["no-show"], want["reclaimed"], noRelease, want["commands"], time.Since(start).Round(time.Second))

	for _, p := range points {
		m := func(v float64, unit string) { b.ReportMetric(v, p.name+"-"+unit) }
		m(float64(p.dbBytes)/1e6, "db-MB")
		m(float64(p.walBytes)/1e6, "wal-MB")
		m(float64(p.heapAlloc)/1e6, "live-MB")
		m(float64(p.grants), "grants-rows")
		m(float64(p.commands), "commands-rows")
		m(float64(p.outbox), "outbox-rows")
		m(float64(p.heap)/1e6, "heap-MB")
		m(float64(p.rss)/1e6, "rss-MB")
		m(float64(p.p50.Microseconds()), "k2c-p50-µs")
		m(float64(p.p99.Microseconds()), "k2c-p99-µs")
		m(float64(p.coldStart.Microseconds())/1000, "cold-ms")
		m(float64(p.snapApply.Microseconds())/1000, "snapshot-ms")
		m(float64(p.snapOps), "snapshot-ops")
	}
	b.ReportMetric(years, "years")
	b.ReportMetric(float64(rate), "parcels/day")
	b.ReportMetric(time.Since(start).Seconds(), "wall-s")
	b.ReportMetric(float64(soakBound(rate))/1e6, "bound-MB")
	b.ReportMetric(0, "ns/op")
}

// soakBound is the database size the soak must stay under at rate parcels
// a day (see docs in the benchmark's report): the rows of every parcel
// whose grants ended within PurgeAfter plus the longest a grant lives,
// at a generous 2 KiB a parcel (two grant rows, their indexes, a
// tombstone's rewrite and half-empty B-tree pages), plus a 4 MiB
// write-ahead log.
func soakBound(rate int) int64 {
	const perParcel = 2048
	horizon := 14 + 4 + 1 // days: PurgeAfter, the longest grant, a day of slack
	return int64(rate*horizon*perParcel) + 4<<20
}

func (p *soakParcel) pickupOp() wire.GrantOp {
	return wire.GrantOp{Op: "put", GrantID: p.pickID(), Version: p.pickVersion, Action: "pickup", Compartment: p.comp,
		ParcelID: p.parcelID(), Holder: "13499996666", CodeHash: wire.CodeHash(lockerID, p.pickCode), ValidUntil: ptr(p.pickUntil)}
}

func (r *soakRig) apply(body *wire.GrantsBody) wire.GrantsAck {
	r.tb.Helper()
	ack, err := r.c.ApplyGrants(r.ctx, body)
	if err != nil {
		r.tb.Fatal(err)
	}
	return ack
}

// writeHeapProfile writes the heap profile (after the collection memory
// ran) to path.
func writeHeapProfile(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}
