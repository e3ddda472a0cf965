// Package store keeps the locker's state in a SQLite file: compartments,
// grants (with tombstones), executed commands, keypad lockout state and the
// transactional outbox of trace events.
//
// Every change is made inside Update, one IMMEDIATE transaction on a single
// connection, with synchronous=FULL in WAL mode: when Update returns nil the
// change and the events it appended are durable, and after a power cut either
// all of a transaction is in force or none of it.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Sentinel errors.
var (
	// ErrNotFound: no row with that key.
	ErrNotFound = errors.New("store: not found")
	// ErrCorrupt: the database file failed its integrity check.
	ErrCorrupt = errors.New("store: database is corrupt")
)

// Store is an open locker database.
type Store struct {
	db   *sql.DB
	path string

	// conn is the database's one connection, held for the store's life.
	// Transactions are SQLite's own (BEGIN … COMMIT on conn), not
	// database/sql's, so that a statement is prepared once on conn and
	// runs in every transaction after: a database/sql Tx can only use a
	// statement prepared before it began, so a query's first use was
	// prepared twice (in its transaction, then for the store), and with
	// restarts that was a quarter of the model test's CPU. txMu lets one
	// transaction, or one statement outside them, use conn at a time.
	conn *sql.Conn
	txMu sync.Mutex

	// prepared holds the statements prepared on conn, by query. Only the
	// holder of txMu uses conn, so txMu guards it too (Open fills and
	// empties it before the store is shared).
	prepared map[string]*sql.Stmt

	updates atomic.Uint64 // write transactions begun (Updates)

	// held: events acknowledged and not yet deleted (AckLater). heldMu
	// guards it.
	heldMu sync.Mutex
	held   map[int64]bool

	// walWrites counts what may have changed the write-ahead log's size
	// (write transactions, checkpoints, vacuums), bumped after each;
	// walSeen is the count and the size at WALBytes' last look. walMu
	// guards walSeen.
	walWrites atomic.Uint64
	walMu     sync.Mutex
	walSeen   struct {
		valid  bool
		writes uint64
		size   int64
	}
}

// Updates counts the write transactions begun: for tests and benchmarks of
// what a locker writes at rest.
func (s *Store) Updates() uint64 { return s.updates.Load() }

// DSN is the connection string for path: WAL, synchronous=FULL (durable on
// power loss), foreign keys, a busy time-out and IMMEDIATE transactions.
// (The driver runs the pragmas in alphabetical order, so a page_size here
// would come after journal_mode, too late: Open sets PageSize.)
func DSN(path string) string {
	u := url.URL{Scheme: "file", Opaque: path}
	q := url.Values{}
	// auto_vacuum before journal_mode: switching to WAL writes the file
	// header, after which a new database ignores auto_vacuum.
	q.Add("_pragma", "auto_vacuum(2)")
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	// The controller checkpoints the write-ahead log in its idle time
	// (Checkpoint, every second); SQLite's own, inside whichever commit
	// crosses the threshold, is only a safety net far away.
	q.Add("_pragma", "wal_autocheckpoint(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_txlock", "immediate")
	return u.String() + "?" + q.Encode()
}

// ownerOnly makes the database readable by its owner only, created so or
// tightened if it was not: it holds the codes' hashes, and a 6-digit code
// falls to a million hashes of the locker's public id and the code — about
// a second. SQLite gives its -wal and -shm the database file's mode. On a
// folder that cannot be written, it changes nothing (Open says why).
func ownerOnly(path string) {
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o077 != 0 {
			_ = os.Chmod(p, fi.Mode().Perm()&^0o077)
		}
	}
}

// Open opens (creating if needed) the database at path, checks it and brings
// its schema up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("store: data folder: %w", err)
		}
	}
	ownerOnly(path)
	db, err := sql.Open("sqlite", DSN(path))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One connection: one writer, and reads see every committed write.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	conn, err := db.Conn(ctx)
	if err != nil {
		// Connecting runs the DSN's pragmas, the first reads of the
		// file: a file that is no database fails here, not in check.
		db.Close()
		if Unavailable(err) {
			return nil, fmt.Errorf("store: %s: %w", path, err)
		}
		return nil, fmt.Errorf("store: %s: %w: %v", path, ErrCorrupt, err)
	}
	s := &Store{db: db, conn: conn, path: path, prepared: map[string]*sql.Stmt{}, held: map[int64]bool{}}
	fail := func(err error) (*Store, error) {
		s.closePrepared()
		conn.Close()
		db.Close()
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return fail(err)
	}
	if err := s.usePageSize(ctx); err != nil {
		return fail(fmt.Errorf("store: %s: page size: %w", path, err))
	}
	if err := s.incrementalVacuumMode(ctx); err != nil {
		return fail(fmt.Errorf("store: %s: auto_vacuum: %w", path, err))
	}
	if err := s.migrate(ctx); err != nil {
		return fail(fmt.Errorf("store: %s: %w", path, err))
	}
	return s, nil
}

// check runs a quick integrity check so that a corrupt file is refused at
// start-up with a clear message instead of failing later.
func (s *Store) check(ctx context.Context) error {
	var res string
	if err := s.conn.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&res); err != nil {
		if Unavailable(err) {
			return fmt.Errorf("store: %s: %w", s.path, err)
		}
		return fmt.Errorf("store: %s: %w: %v", s.path, ErrCorrupt, err)
	}
	if res != "ok" {
		return fmt.Errorf("store: %s: %w: %s", s.path, ErrCorrupt, res)
	}
	return nil
}

// IntegrityCheck runs SQLite's full integrity check and returns its verdict
// ("ok" when the file is sound).
func (s *Store) IntegrityCheck(ctx context.Context) (string, error) {
	var res string
	defer s.exclusive()()
	err := s.conn.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res)
	return res, err
}

// Checkpoint copies the write-ahead log into the database file as far as
// no reader needs it (PRAGMA wal_checkpoint(PASSIVE)): done in idle time, it
// keeps the commits that open doors from paying for it. The acknowledged
// events held (AckLater) are deleted first (so does TruncateWAL), so that a
// locker at rest does not keep them until its next parcel.
func (s *Store) Checkpoint(ctx context.Context) error {
	s.FlushAcks(ctx) // (if it fails, they are sent again)
	defer s.wroteWAL()
	defer s.exclusive()()
	_, err := s.conn.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
	return err
}

// TruncateWAL checkpoints the whole write-ahead log into the database and
// truncates the log to nothing, so that the next commit must find new room
// on the disk: after a write failed for want of room, a commit that merely
// reused the log's old space would say nothing about the disk.
func (s *Store) TruncateWAL(ctx context.Context) error {
	s.FlushAcks(ctx) // (if it fails, they are sent again)
	defer s.wroteWAL()
	var busy, logPages, done int
	defer s.exclusive()()
	if err := s.conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done); err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	if busy != 0 {
		return errors.New("store: checkpoint: the log is in use")
	}
	return nil
}

// WALBytes is the size of the write-ahead log on disk (0 when absent).
// Only this store writes the log: when nothing was written since its last
// look, the size it saw then is returned without asking the file system
// again (housekeeping asks every second, at rest too).
func (s *Store) WALBytes() int64 {
	writes := s.walWrites.Load()
	s.walMu.Lock()
	defer s.walMu.Unlock()
	if s.walSeen.valid && s.walSeen.writes == writes {
		return s.walSeen.size
	}
	var size int64
	if fi, err := os.Stat(s.path + "-wal"); err == nil {
		size = fi.Size()
	}
	s.walSeen.valid, s.walSeen.writes, s.walSeen.size = true, writes, size
	return size
}

// wroteWAL says that the write-ahead log may have changed (after the
// change: a WALBytes that looked during it looks again).
func (s *Store) wroteWAL() { s.walWrites.Add(1) }

// Close deletes the acknowledged events still held (FlushAcks) and closes
// the database.
func (s *Store) Close() error {
	s.FlushAcks(context.Background()) // (if it fails, they are sent again)
	defer s.exclusive()()
	s.closePrepared()
	s.conn.Close()
	return s.db.Close()
}

// closePrepared closes the prepared statements; the caller holds txMu, or
// the store is not shared yet.
func (s *Store) closePrepared() {
	for q, st := range s.prepared {
		st.Close()
		delete(s.prepared, q)
	}
}

// exclusive takes the connection for one statement outside transactions;
// call the function it returns to give it back.
func (s *Store) exclusive() func() {
	s.txMu.Lock()
	return s.txMu.Unlock
}

// Update runs fn in one IMMEDIATE transaction and commits it if fn returns
// nil. fn must not keep tx after it returns.
func (s *Store) Update(ctx context.Context, fn func(tx *Tx) error) error {
	defer s.exclusive()()
	s.updates.Add(1)
	defer s.wroteWAL()
	if err := s.begin(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	tx := &Tx{ctx: ctx, store: s}
	if err := fn(tx); err != nil {
		s.rollback()
		return err
	}
	// The acknowledged events go in a transaction that writes anyway:
	// their pages are written once, with its own.
	var acked []int64
	if tx.wrote || tx.flush {
		acked = s.heldSeqs()
		if err := tx.AckMany(acked); err != nil {
			s.rollback()
			return err
		}
	}
	if err := s.commit(ctx); err != nil {
		s.rollback()
		return fmt.Errorf("store: commit: %w", err)
	}
	s.unhold(acked)
	return nil
}

// View runs fn in a transaction that is rolled back afterwards: for reads.
func (s *Store) View(ctx context.Context, fn func(tx *Tx) error) error {
	defer s.exclusive()()
	if err := s.begin(ctx, "BEGIN DEFERRED"); err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer s.rollback()
	return fn(&Tx{ctx: ctx, store: s})
}

// begin starts a transaction with stmt (BEGIN IMMEDIATE or DEFERRED). A
// transaction left open on the connection (a ROLLBACK that failed) is
// rolled back first: it was never committed.
func (s *Store) begin(ctx context.Context, stmt string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := s.stmt(ctx, stmt)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ctx)
	if err != nil && strings.Contains(err.Error(), "within a transaction") {
		s.rollback()
		_, err = st.ExecContext(ctx)
	}
	return err
}

// commit commits the transaction, unless ctx ended (as database/sql's
// Tx.Commit): COMMIT itself runs without ctx, so that no interrupt lands
// in its middle.
func (s *Store) commit(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := s.stmt(context.Background(), "COMMIT")
	if err != nil {
		return err
	}
	_, err = st.ExecContext(context.Background())
	return err
}

// rollback ends the transaction without its changes. SQLite may have
// rolled it back already (an interrupted or failed statement, a failed
// COMMIT): then there is nothing to do and the error says so.
func (s *Store) rollback() {
	if st, err := s.stmt(context.Background(), "ROLLBACK"); err == nil {
		st.ExecContext(context.Background()) // "no transaction is active" when SQLite did it
	}
}

// stmt returns q prepared on the connection, preparing it the first time;
// the caller holds txMu.
func (s *Store) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st := s.prepared[q]; st != nil {
		return st, nil
	}
	st, err := s.conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	s.prepared[q] = st
	return st, nil
}

// Tx is one transaction. Its statements are prepared once for the store's
// life (Store.stmt): applying a snapshot runs the same few statements per
// grant.
type Tx struct {
	ctx   context.Context
	store *Store
	wrote bool // a statement changed a row
	flush bool // delete the held acknowledged events even if nothing else is written
}

func (t *Tx) stmt(q string) (*sql.Stmt, error) { return t.store.stmt(t.ctx, q) }

func (t *Tx) exec(q string, args ...any) (sql.Result, error) {
	s, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	res, err := s.ExecContext(t.ctx, args...)
	if err == nil {
		if n, _ := res.RowsAffected(); n > 0 {
			t.wrote = true
		}
	}
	return res, err
}

func (t *Tx) query(q string, args ...any) (*sql.Rows, error) {
	s, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(t.ctx, args...)
}

// row is a single-row query; a failed prepare shows in Scan.
type row struct {
	r   *sql.Row
	err error
}

func (r row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	return r.r.Scan(dest...)
}

func (t *Tx) queryRow(q string, args ...any) row {
	s, err := t.stmt(q)
	if err != nil {
		return row{err: err}
	}
	return row{r: s.QueryRowContext(t.ctx, args...)}
}

// storedTime is how times are kept: RFC 3339 in UTC with a fixed number of
// fraction digits, so that comparing the text compares the times.
const storedTime = "2006-01-02T15:04:05.000000000Z"

// timeText formats t for storage; the zero time is "".
func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(storedTime)
}

func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Exec runs a statement in the transaction: for tests that need to shape
// the database (a trigger that makes writes fail, as a full disk does).
func (t *Tx) Exec(q string) error {
	_, err := t.store.conn.ExecContext(t.ctx, q)
	return err
}
