package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSeqIsGaplessAcrossRollbacksAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "l.db")
	s := open(t, path)
	appendOne := func(fail bool) error {
		return s.Update(ctx, func(tx *Tx) error {
			if _, _, err := tx.AppendEvent("test", func(seq int64) ([]byte, error) {
				return []byte(fmt.Sprintf(`{"seq":%d}`, seq)), nil
			}); err != nil {
				return err
			}
			if fail {
				return errors.New("boom")
			}
			return nil
		})
	}
	for i := 0; i < 10; i++ {
		if err := appendOne(i%3 == 1); (err != nil) != (i%3 == 1) {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	s.Close()
	s = open(t, path)
	if err := appendOne(false); err != nil {
		t.Fatal(err)
	}
	var evs []OutboxEvent
	s.View(ctx, func(tx *Tx) error {
		var err error
		evs, err = tx.Pending(0, 100)
		return err
	})
	if len(evs) != 8 {
		t.Fatalf("%d events, want 8", len(evs))
	}
	for i, e := range evs {
		if e.Seq != int64(i+1) || string(e.Payload) != fmt.Sprintf(`{"seq":%d}`, i+1) {
			t.Fatalf("event %d = %d %s", i, e.Seq, e.Payload)
		}
	}
	// Acknowledged events leave the outbox; the counter never goes back.
	s.Update(ctx, func(tx *Tx) error { return tx.Ack(8) })
	s.Update(ctx, func(tx *Tx) error {
		seq, _, err := tx.AppendEvent("test", func(int64) ([]byte, error) { return []byte("{}"), nil })
		if seq != 9 {
			t.Errorf("seq after ack of the last = %d, want 9", seq)
		}
		return err
	})
	if v, _ := s.IntegrityCheck(ctx); v != "ok" {
		t.Fatalf("integrity_check = %s", v)
	}
}

func TestGrantRoundTripAndTombstone(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "l.db"))
	until := time.Date(2026, 11, 23, 10, 0, 0, 123, time.UTC)
	g := Grant{ID: "g-1", Version: 2, Action: "pickup", Compartment: 3, ParcelID: "P1", Actor: "134****8888",
		CodeHash: strings.Repeat("a", 64), ValidFrom: until.Add(-time.Hour), ValidUntil: until, UsesLeft: 1}
	err := s.Update(ctx, func(tx *Tx) error { return tx.PutGrant(g) })
	if err != nil {
		t.Fatal(err)
	}
	s.View(ctx, func(tx *Tx) error {
		got, err := tx.Grant("g-1")
		if err != nil || got != g {
			t.Fatalf("read back %+v, %v; want %+v", got, err, g)
		}
		byCode, _ := tx.GrantsByCode(g.CodeHash)
		if len(byCode) != 1 {
			t.Fatalf("by code: %d", len(byCode))
		}
		due, _ := tx.PickupsDue(until.Add(time.Nanosecond))
		if len(due) != 1 {
			t.Fatalf("due: %d", len(due))
		}
		return nil
	})
	s.Update(ctx, func(tx *Tx) error { return tx.Tombstone("g-1", 5, time.Time{}) })
	s.View(ctx, func(tx *Tx) error {
		got, _ := tx.Grant("g-1")
		if !got.Revoked || got.Version != 5 || got.CodeHash != "" {
			t.Fatalf("tombstone = %+v", got)
		}
		if byCode, _ := tx.GrantsByCode(g.CodeHash); len(byCode) != 0 {
			t.Fatal("a tombstone still matches its code")
		}
		return nil
	})
}

func TestRefusesCorruptAndNewerDatabases(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	os.WriteFile(junk, []byte(strings.Repeat("not a database ", 500)), 0o600)
	if _, err := Open(context.Background(), junk); err == nil || !strings.Contains(err.Error(), junk) {
		t.Fatalf("corrupt file: err = %v, want an error naming the file", err)
	}
	newer := filepath.Join(dir, "newer.db")
	s := open(t, newer)
	s.conn.ExecContext(context.Background(), "PRAGMA user_version = 99")
	s.Close()
	if _, err := Open(context.Background(), newer); err == nil || !strings.Contains(err.Error(), "newer than this software") {
		t.Fatalf("newer schema: err = %v", err)
	}
}

// The seq counter is written only when the outbox's highest event leaves
// it; whichever way the outbox empties (acknowledged one by one, in a
// batch, out of order, or dropped when full), no seq is taken twice.
func TestSeqNeverReusedWhenTheOutboxEmpties(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "l.db")
	s := open(t, path)
	var want int64
	appendN := func(n int) {
		t.Helper()
		for range n {
			want++
			err := s.Update(ctx, func(tx *Tx) error {
				seq, _, err := tx.AppendEvent("door_opened", func(seq int64) ([]byte, error) { return []byte("{}"), nil })
				if err == nil && seq != want {
					err = fmt.Errorf("seq %d, want %d", seq, want)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	update := func(fn func(tx *Tx) error) {
		t.Helper()
		if err := s.Update(ctx, fn); err != nil {
			t.Fatal(err)
		}
	}
	lastSeq := func() int64 {
		t.Helper()
		var last int64
		if err := s.View(ctx, func(tx *Tx) error { var err error; last, err = tx.LastSeq(); return err }); err != nil {
			t.Fatal(err)
		}
		return last
	}
	counter := func() int64 {
		t.Helper()
		var v int64
		if err := s.conn.QueryRowContext(context.Background(), "SELECT value FROM counters WHERE name = 'seq'").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	appendN(3)
	if c := counter(); c != 0 {
		t.Fatalf("the counter was written by appends: %d", c)
	}
	update(func(tx *Tx) error { return tx.AckMany([]int64{1, 2}) }) // not the highest: the counter stays
	if c := counter(); c != 0 {
		t.Fatalf("counter %d after acknowledging 1 and 2", c)
	}
	update(func(tx *Tx) error { return tx.AckMany([]int64{3}) }) // the outbox is empty
	if c, l := counter(), lastSeq(); c != 3 || l != 3 {
		t.Fatalf("counter %d, last seq %d, want 3", c, l)
	}
	appendN(3)                                      // 4, 5, 6
	update(func(tx *Tx) error { return tx.Ack(6) }) // the highest first, alone
	update(func(tx *Tx) error { return tx.Ack(4) })
	if l := lastSeq(); l != 6 {
		t.Fatalf("last seq %d, want 6", l)
	}
	appendN(2) // 7, 8 (5 still waits)
	update(func(tx *Tx) error {
		_, _, last, err := tx.DropOldest(10, []string{"door_opened"})
		if err == nil && last != 8 {
			err = fmt.Errorf("dropped up to %d, want 8", last)
		}
		return err
	})
	s.Close()
	s = open(t, path)
	if l := lastSeq(); l != 8 {
		t.Fatalf("last seq %d after reopening, want 8", l)
	}
	appendN(1) // 9
}

// Acknowledged events leave the outbox with the next transaction that
// writes anyway, or at a checkpoint or Close: meanwhile they are neither
// pending nor counted, a transaction that writes nothing does not write
// them, and a transaction that fails keeps them for the next.
func TestAcknowledgedEventsGoWithTheNextWrite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "l.db")
	s := open(t, path)
	appendOne := func(fail bool) error {
		return s.Update(ctx, func(tx *Tx) error {
			if _, _, err := tx.AppendEvent("door_opened", func(int64) ([]byte, error) { return []byte("{}"), nil }); err != nil {
				return err
			}
			if fail {
				return errors.New("boom")
			}
			return nil
		})
	}
	stored := func() (n int) {
		t.Helper()
		if err := s.conn.QueryRowContext(context.Background(), "SELECT COUNT(*) FROM outbox").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	pending := func() (seqs []int64, n int) {
		t.Helper()
		err := s.View(ctx, func(tx *Tx) error {
			evs, err := tx.Pending(0, 100)
			for _, e := range evs {
				seqs = append(seqs, e.Seq)
			}
			if err == nil {
				n, err = tx.OutboxLen()
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return seqs, n
	}
	for range 3 {
		if err := appendOne(false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AckLater(ctx, []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	if seqs, n := pending(); fmt.Sprint(seqs) != "[3]" || n != 1 {
		t.Fatalf("pending %v, outbox length %d; want [3], 1", seqs, n)
	}
	if err := s.Update(ctx, func(*Tx) error { return nil }); err != nil { // writes nothing
		t.Fatal(err)
	}
	if n := stored(); n != 3 {
		t.Fatalf("%d events stored after a transaction that wrote nothing, want 3", n)
	}
	if err := appendOne(true); err == nil {
		t.Fatal("the failing transaction committed")
	}
	if n := s.Held(); n != 2 {
		t.Fatalf("%d held after a failed transaction, want 2", n)
	}
	if err := appendOne(false); err != nil { // 4, with 1 and 2 deleted
		t.Fatal(err)
	}
	if n, h := stored(), s.Held(); n != 2 || h != 0 {
		t.Fatalf("%d stored, %d held after a write; want 2, 0", n, h)
	}
	if err := s.AckLater(ctx, []int64{3, 4}); err != nil {
		t.Fatal(err)
	}
	if err := s.TruncateWAL(ctx); err != nil { // a checkpoint deletes them first
		t.Fatal(err)
	}
	if n := stored(); n != 0 {
		t.Fatalf("%d stored after the checkpoint, want 0", n)
	}
	if err := appendOne(false); err != nil { // 5
		t.Fatal(err)
	}
	if err := s.AckLater(ctx, []int64{5}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path)
	if n := stored(); n != 0 {
		t.Fatalf("%d stored after Close, want 0", n)
	}
	var last int64
	if err := s.View(ctx, func(tx *Tx) error { var err error; last, err = tx.LastSeq(); return err }); err != nil || last != 5 {
		t.Fatalf("last seq %d (%v), want 5", last, err)
	}
}

// WALBytes follows the log through writes and checkpoints, though it asks
// the file system only after something was written: the size it returns
// is the file's at every step.
func TestWALBytesFollowsWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "l.db")
	s := open(t, path)
	onDisk := func() int64 {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	check := func(step string) int64 {
		t.Helper()
		if got, want := s.WALBytes(), onDisk(); got != want {
			t.Fatalf("%s: WALBytes %d, the file %d", step, got, want)
		}
		return s.WALBytes()
	}
	if err := s.TruncateWAL(ctx); err != nil {
		t.Fatal(err)
	}
	if n := check("truncated"); n != 0 {
		t.Fatalf("truncated: %d bytes", n)
	}
	before := check("again")
	for i := range 3 {
		if err := s.Update(ctx, func(tx *Tx) error {
			return tx.PutGrant(Grant{ID: fmt.Sprintf("g-%d", i), Version: 1, Action: "pickup", CodeHash: fmt.Sprintf("%064x", i), UsesLeft: 1})
		}); err != nil {
			t.Fatal(err)
		}
		if n := check(fmt.Sprintf("write %d", i)); n <= before {
			t.Fatalf("write %d: the log did not grow (%d bytes, %d before)", i, n, before)
		} else {
			before = n
		}
	}
	if err := s.View(ctx, func(tx *Tx) error { _, err := tx.Grant("g-1"); return err }); err != nil {
		t.Fatal(err)
	}
	check("a read")
	if err := s.TruncateWAL(ctx); err != nil {
		t.Fatal(err)
	}
	if n := check("checkpointed"); n != 0 {
		t.Fatalf("checkpointed: %d bytes", n)
	}
}

// GrantVersions finds every stored id it is asked for, tombstones included,
// across chunks (a short last chunk pads with its first id), and nothing
// for ids not stored.
func TestGrantVersionsAcrossChunks(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "l.db"))
	const stored = 2*versionsChunk + 7
	if err := s.Update(ctx, func(tx *Tx) error {
		for i := 0; i < stored; i++ {
			id := fmt.Sprintf("g-%d", i)
			if i%5 == 0 {
				if err := tx.Tombstone(id, int64(i+1), time.Now()); err != nil {
					return err
				}
				continue
			}
			if err := tx.PutGrant(Grant{ID: id, Version: int64(i + 1), Action: "deposit", CodeHash: fmt.Sprintf("%064x", i), UsesLeft: 1}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := stored + 9; i >= 0; i-- { // 10 not stored, in no order the table has
		ids = append(ids, fmt.Sprintf("g-%d", i))
	}
	var got map[string]int64
	if err := s.View(ctx, func(tx *Tx) error {
		var err error
		got, err = tx.GrantVersions(ids)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != stored {
		t.Fatalf("%d versions, want %d", len(got), stored)
	}
	for i := 0; i < stored; i++ {
		if v := got[fmt.Sprintf("g-%d", i)]; v != int64(i+1) {
			t.Fatalf("g-%d: version %d, want %d", i, v, i+1)
		}
	}
}

// OldestPending is the oldest event waiting, held ones left out.
func TestOldestPending(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "l.db"))
	read := func() (OutboxEvent, bool) {
		var e OutboxEvent
		var ok bool
		if err := s.View(ctx, func(tx *Tx) error {
			var err error
			e, ok, err = tx.OldestPending()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return e, ok
	}
	if _, ok := read(); ok {
		t.Fatal("an empty outbox has an oldest event")
	}
	for i := 0; i < 3; i++ {
		if err := s.Update(ctx, func(tx *Tx) error {
			_, _, err := tx.AppendEvent("test", func(seq int64) ([]byte, error) { return []byte(fmt.Sprintf(`{"seq":%d}`, seq)), nil })
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if e, ok := read(); !ok || e.Seq != 1 || string(e.Payload) != `{"seq":1}` {
		t.Fatalf("oldest = %d %s %v, want 1", e.Seq, e.Payload, ok)
	}
	if err := s.AckLater(ctx, []int64{1}); err != nil { // held, not yet deleted
		t.Fatal(err)
	}
	if e, ok := read(); !ok || e.Seq != 2 {
		t.Fatalf("oldest after acking 1 = %d %v, want 2", e.Seq, ok)
	}
}

// BenchmarkPendingLimits reads the outbox as the purge and the link do:
// the oldest event, then a batch. With one statement for both (a LIMIT of
// 1, then of more) SQLite planned the statement again at each switch.
func BenchmarkPendingLimits(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "l.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < b.N; i++ {
		if err := s.View(ctx, func(tx *Tx) error {
			if _, _, err := tx.OldestPending(); err != nil {
				return err
			}
			_, err := tx.Pending(5, 100)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// A transaction whose context ends midway, or whose fn fails, leaves
// nothing behind: not its writes, and no transaction open on the
// connection that the next Update would trip over (transactions are
// SQLite's own on the store's one connection).
func TestTransactionsEndCleanly(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "l.db"))
	put := func(ctx context.Context, id string, after func()) error {
		return s.Update(ctx, func(tx *Tx) error {
			if err := tx.PutGrant(Grant{ID: id, Version: 1, Action: "deposit", CodeHash: fmt.Sprintf("%064x", len(id)), UsesLeft: 1}); err != nil {
				return err
			}
			after()
			return tx.SetSetting("k", id)
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := put(ctx, "cancelled", cancel); err == nil {
		t.Fatal("an Update whose context ended committed")
	}
	if err := s.Update(context.Background(), func(tx *Tx) error {
		if err := tx.PutGrant(Grant{ID: "failed", Version: 1, Action: "deposit", CodeHash: fmt.Sprintf("%064x", 99), UsesLeft: 1}); err != nil {
			return err
		}
		return errors.New("boom")
	}); err == nil || err.Error() != "boom" {
		t.Fatalf("failed fn: %v", err)
	}
	if err := s.View(ctx, func(*Tx) error { return nil }); err == nil {
		t.Fatal("a View with an ended context ran")
	}
	// A panic inside fn leaves SQLite's transaction open: the next begin
	// rolls it back (its writes with it) and starts its own.
	func() {
		defer func() { _ = recover() }()
		put(context.Background(), "panicked", func() { panic("bug") })
	}()
	if err := put(context.Background(), "kept", func() {}); err != nil {
		t.Fatalf("the Update after them: %v", err)
	}
	if err := s.View(context.Background(), func(tx *Tx) error {
		for _, id := range []string{"cancelled", "failed", "panicked"} {
			if _, err := tx.Grant(id); !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("grant %s: %v, want not found", id, err)
			}
		}
		if _, err := tx.Grant("kept"); err != nil {
			return err
		}
		if v, _, _ := tx.Setting("k"); v != "kept" {
			return fmt.Errorf("setting k = %q", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A grant used up on a clock weeks behind (an estimate: the locker booted
// without a network clock) has an ended_at that looks old at the first
// purge on the true clock, while the envelope that put it, issued days ago,
// may still be alive: delivered again it would put the used-up grant back.
// It goes only once that envelope is surely dead too (issued before the
// cutoff, which is at least two envelope lifetimes back).
func TestPurgeKeepsAUsedUpGrantWhileItsEnvelopeMayLive(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "locker.db"))
	ctx := context.Background()
	at := func(v string) time.Time { return parseTime(v) }
	cutoff := at("2027-02-01T00:00:00Z")
	for _, tc := range []struct {
		issued string
		gone   bool
	}{{"2027-02-10T00:00:00Z", false}, {"2027-01-20T00:00:00Z", true}} {
		g := Grant{ID: "d1", Version: 1, Action: "deposit", Size: "M", CodeHash: fmt.Sprintf("%064x", 1),
			ValidUntil: at("2027-03-01T00:00:00Z"), IssuedAt: at(tc.issued), EndedAt: at("1970-01-03T00:00:00Z")}
		var purged int
		err := s.Update(ctx, func(tx *Tx) error {
			if err := tx.PutGrant(g); err != nil {
				return err
			}
			var err error
			purged, err = tx.Purge(cutoff, "2027-02-01", 10)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if (purged == 1) != tc.gone {
			t.Errorf("used up (ended_at 1970), issued %s, cutoff %s: purged %d, want gone %v", tc.issued, cutoff, purged, tc.gone)
		}
	}
}

// A database made readable by others (an older version, or a copy made by
// hand) is tightened to its owner at the next start, its log files too:
// its code hashes give the codes away.
func TestOpenTightensAReadableDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locker.db")
	s := open(t, path)
	s.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v after Open, want -rw-------", filepath.Base(p), fi.Mode().Perm())
		}
	}
}
