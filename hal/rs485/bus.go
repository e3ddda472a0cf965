// Package rs485 drives the lock-control boards of one RS485 bus: one Bus per
// serial port, one goroutine (Run) that owns the port and does one
// transaction at a time — an unlock, or a status query of one board — with
// a short gap between them.
//
// Unlocks go before status polls. An unlock is written once and never
// sent again by the bus: when its reply is lost (8A/80) or there is none
// (Kerong), the board's status is read next instead, and until a status of
// that board has been read after the unlock, another unlock of the same
// lock is refused with ErrUnresolved (resending an unlock whose outcome is
// unknown opened doors twice in the field). The boards are polled round
// robin between unlocks; BoardState gives the last status of each, and
// whether the board answers: a board that fails FailAfter transactions in a
// row (time-outs, bad checksums, replies from another address) is down
// until it answers again. A port that fails (an adapter unplugged) is
// closed and opened again every ReopenEvery.
//
// Config.Observe, when set, receives every frame the worker writes and
// every frame or stray byte it reads, with what was wrong with it: a frame
// view of the bus for a technician (locker-sim shows it for a real board
// on a USB-RS485 adapter). It is off by default and costs nothing then.
package rs485

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openlocker/locker/hal/rs485/proto"
)

// Sentinel errors.
var (
	// ErrTimeout: the board did not answer (in full) in time.
	ErrTimeout = errors.New("rs485: no reply")
	// ErrUnresolved: an unlock of this lock was sent and no status of its
	// board has been read since; it is not sent again until one is.
	ErrUnresolved = errors.New("rs485: outcome of the previous unlock unknown: not resent")
	// ErrNoBoard: the board or channel is not on this bus.
	ErrNoBoard = errors.New("rs485: no such board or channel")
	// ErrPort: the serial port cannot be opened or failed.
	ErrPort = errors.New("rs485: serial port")
	// ErrStopped: the bus worker is not running.
	ErrStopped = errors.New("rs485: bus stopped")
	// ErrStray: bytes that came outside a transaction (a late reply, an
	// unlock's optional echo, noise), dropped; only an Observer sees it.
	ErrStray = errors.New("rs485: bytes outside a transaction, dropped")
)

// Frame is one frame on the line as the bus worker saw it (Config.Observe).
type Frame struct {
	At time.Time
	// Sent: the worker wrote it; otherwise it was read from the line.
	Sent bool
	// Board is the address of the board of the transaction (-1 for bytes
	// outside one).
	Board int
	// Data are the bytes (the Observer may keep them): a whole frame, the
	// part of one that came before a time-out (maybe none), or stray bytes.
	Data []byte
	// Err says what was wrong with bytes read: ErrTimeout, a proto error
	// (a bad checksum, another board's address, a malformed frame) or
	// ErrStray. Nil for a good reply and for every frame sent.
	Err error
}

// Observer receives a bus's frames, in order, on the bus worker's
// goroutine: it must not block (the bus waits for it).
type Observer func(Frame)

// Opener opens the bus's serial port.
type Opener func() (io.ReadWriteCloser, error)

// Board is one board on the bus.
type Board struct {
	Address  int // Kerong 0–15, 8A/80 1–31
	Channels int // locks on the board (Kerong 16; 8A/80 8–24)
}

// Config describes one bus. Zero timings take the defaults below.
type Config struct {
	Name     string // "BUS1", for logs and fault sources
	Protocol proto.Protocol
	Baud     int // for the timings: how long frames take on the wire
	// OpenBit is the level of a lock/door feedback bit that means open.
	OpenBit bool
	Boards  []Board

	// Gap is the quiet time between two transactions (default 5ms).
	Gap time.Duration
	// ReplyTimeout is how long a status query waits for the first byte
	// of its reply, on top of the frames' wire time (default 50ms).
	ReplyTimeout time.Duration
	// UnlockReplyTimeout is how long an 8A/80 unlock waits for its reply,
	// which boards send ~500ms later (default 1s); a Kerong unlock waits
	// UnlockSettle for an optional echo and drops it (default 20ms).
	UnlockReplyTimeout time.Duration
	UnlockSettle       time.Duration
	// Silence is how long a quiet line ends a reply (an 8A/80 reply of
	// unknown length) or cuts one short, and how long the line must stay
	// quiet after a failed transaction before the next (default 25ms). It
	// must outlast the gaps between a USB adapter's bursts.
	Silence time.Duration
	// FailAfter failed transactions in a row put a board down (default 3).
	FailAfter int
	// ReopenEvery is how often a failed port is opened again (default 1s).
	ReopenEvery time.Duration
	Logger      *slog.Logger
	// Observe, if set, is told of every frame (see Frame); nil: off.
	Observe Observer
}

// Defaults of Config.
const (
	DefaultGap                = 5 * time.Millisecond
	DefaultReplyTimeout       = 50 * time.Millisecond
	DefaultUnlockReplyTimeout = time.Second
	DefaultUnlockSettle       = 20 * time.Millisecond
	DefaultFailAfter          = 3
	DefaultReopenEvery        = time.Second
	// ResolveWait is how long Unlock waits for an answering board's
	// status to resolve an earlier unlock of the same lock (a few polls:
	// more after failures, see boardRun.resolve) before ErrUnresolved.
	ResolveWait = time.Second
	// MaxQuiet bounds the wait for a quiet line after a failed transaction
	// (a board that never stops talking is down anyway).
	MaxQuiet = 500 * time.Millisecond
	// Silence is the default Config.Silence: it ends an 8A/80 reply
	// whose length is not known.
	Silence = proto.Silence8A80 * time.Millisecond
)

// BoardState is what the bus knows of one board.
type BoardState struct {
	Address int
	// Up: the board answered its last status query, or failed fewer than
	// FailAfter in a row since. Before its first answer it is down.
	Up bool
	// Err is the last failure (nil after a good status).
	Err error
	// Open and Parcel are the channels reading open (polarity applied)
	// and, for Kerong, the infrared sensors reading a parcel; bit i is
	// channel i+1. They keep the last good status while the board is down.
	Open, Parcel uint64
	// At is the time of the last good status; Polls counts them.
	At    time.Time
	Polls uint64
}

// Stats counts the bus's transactions.
type Stats struct {
	Polls, Unlocks, Timeouts, Checksums, WrongAddress, Malformed, PortErrors uint64
}

type unlockReq struct {
	board, ch int
	written   chan error // the frame was written (nil) or could not be
	// state: reqQueued, then reqTaken by the worker or reqAbandoned by
	// Unlock whose context ended first; an abandoned request is never
	// written (its release has ended: a lock fault).
	state atomic.Int32
}

const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

type boardRun struct {
	cfg      Board
	state    BoardState
	fails    int
	pending  uint64 // channels unlocked since the last good status: bit ch-1
	pollNext bool   // read my status next: an unlock's outcome is unknown
	// resolve is how many good statuses must still come before pending
	// is cleared: 1 + the board's failed transactions in a row before the
	// latest unlock, whose replies may still be on their way — a late
	// reply to a query from before the unlock is no status read after it.
	resolve int
}

// Bus is one serial port's worker; see the package comment.
type Bus struct {
	cfg     Config
	open    Opener
	log     *slog.Logger
	unlocks chan *unlockReq

	// mu guards boards (all fields of every boardRun), stats and
	// running. The worker holds it only between I/O, never across it.
	mu      sync.Mutex
	boards  []*boardRun
	index   map[int]int // address → boards index
	stats   Stats
	running bool
	stopped bool  // Run has returned
	primed  *port // opened by Prime, taken by Run
}

// New checks cfg and returns a Bus that Run will drive.
func New(cfg Config, open Opener) (*Bus, error) {
	if open == nil {
		return nil, errors.New("rs485: no opener")
	}
	if cfg.Protocol != proto.Kerong && cfg.Protocol != proto.P8A80 {
		return nil, fmt.Errorf("%w: %v", proto.ErrProtocol, cfg.Protocol)
	}
	if cfg.Baud <= 0 {
		cfg.Baud = cfg.Protocol.DefaultBaud()
	}
	cfg.Gap = orDefault(cfg.Gap, DefaultGap)
	cfg.ReplyTimeout = orDefault(cfg.ReplyTimeout, DefaultReplyTimeout)
	cfg.UnlockReplyTimeout = orDefault(cfg.UnlockReplyTimeout, DefaultUnlockReplyTimeout)
	cfg.UnlockSettle = orDefault(cfg.UnlockSettle, DefaultUnlockSettle)
	cfg.Silence = orDefault(cfg.Silence, Silence)
	cfg.ReopenEvery = orDefault(cfg.ReopenEvery, DefaultReopenEvery)
	if cfg.FailAfter <= 0 {
		cfg.FailAfter = DefaultFailAfter
	}
	b := &Bus{cfg: cfg, open: open, log: cfg.Logger, unlocks: make(chan *unlockReq, 64), index: map[int]int{}}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b.log = b.log.With("bus", cfg.Name)
	if len(cfg.Boards) == 0 {
		return nil, fmt.Errorf("rs485: bus %s has no boards", cfg.Name)
	}
	for _, bc := range cfg.Boards {
		if _, dup := b.index[bc.Address]; dup {
			return nil, fmt.Errorf("rs485: bus %s: board %d twice", cfg.Name, bc.Address)
		}
		if bc.Channels < 1 || bc.Channels > 64 {
			return nil, fmt.Errorf("%w: board %d: %d channels", ErrNoBoard, bc.Address, bc.Channels)
		}
		b.index[bc.Address] = len(b.boards)
		b.boards = append(b.boards, &boardRun{cfg: bc, state: BoardState{Address: bc.Address}})
	}
	return b, nil
}

func orDefault(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// Name is the bus's name.
func (b *Bus) Name() string { return b.cfg.Name }

// Config is the bus's configuration with the defaults filled in.
func (b *Bus) Config() Config { return b.cfg }

// BoardState returns what the bus knows of the board at addr.
func (b *Bus) BoardState(addr int) (BoardState, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.index[addr]
	if !ok {
		return BoardState{}, false
	}
	return b.boards[i].state, true
}

// Stats returns the transaction counters.
func (b *Bus) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Unlock may be called before Run starts (it waits for Run) but not after
// Run returned (ErrStopped).
//
// Unlock asks for one unlock of channel ch (1–Channels) of the board at
// addr and waits until its frame has been written to the port, ahead of
// any status poll not yet begun; it returns the error if it could not be.
// It does not wait for the lock to open: the board's next status tells.
// A lock whose previous unlock is unresolved gives ErrUnresolved: at once
// when its board does not answer, else once ResolveWait passed without the
// status that resolves it.
func (b *Bus) Unlock(ctx context.Context, addr, ch int) error {
	wait := time.NewTimer(ResolveWait)
	defer wait.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for {
		b.mu.Lock()
		i, ok := b.index[addr]
		ok = ok && ch >= 1 && ch <= b.boards[i].cfg.Channels
		pending := ok && b.boards[i].pending&(1<<(ch-1)) != 0
		up := ok && b.boards[i].state.Up
		stopped := b.stopped
		b.mu.Unlock()
		switch {
		case !ok:
			return fmt.Errorf("%w: bus %s board %d channel %d", ErrNoBoard, b.cfg.Name, addr, ch)
		case pending && !up:
			// Never sent blind to a board that does not answer.
			return fmt.Errorf("%w: bus %s board %d channel %d", ErrUnresolved, b.cfg.Name, addr, ch)
		case stopped && !pending:
			return ErrStopped
		}
		if !pending {
			break
		}
		// Unresolved on a board that answers: it is read first, and
		// resolves it within a few polls. Wait for that.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wait.C:
			return fmt.Errorf("%w: bus %s board %d channel %d", ErrUnresolved, b.cfg.Name, addr, ch)
		case <-poll.C:
		}
	}
	r := &unlockReq{board: addr, ch: ch, written: make(chan error, 1)}
	select {
	case b.unlocks <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.written:
		return err
	case <-ctx.Done():
		// Abandoned unless the worker took it: then it is being written,
		// and counts as pending. Never written otherwise: the caller ends
		// its release now (a lock fault), and a door that opened much
		// later would not be its.
		r.state.CompareAndSwap(reqQueued, reqAbandoned)
		return ctx.Err()
	}
}

// chunk is what the reader goroutine hands the worker.
type chunk struct {
	b   []byte
	err error
	at  time.Time
}

// port is an open serial port with its reader goroutine.
type port struct {
	rw   io.ReadWriteCloser
	in   chan chunk
	done chan struct{}
}

func startPort(rw io.ReadWriteCloser) *port {
	p := &port{rw: rw, in: make(chan chunk, 64), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			buf := make([]byte, 256)
			n, err := rw.Read(buf)
			if n > 0 {
				p.in <- chunk{b: buf[:n], at: time.Now()}
			}
			if err != nil {
				p.in <- chunk{err: err, at: time.Now()}
				return
			}
		}
	}()
	return p
}

func (p *port) close() {
	_ = p.rw.Close()
	for { // let the reader end: it may be blocked handing a chunk over
		select {
		case <-p.in:
		case <-p.done:
			return
		}
	}
}

// Prime opens the port and reads every board's status once, so that the
// first states are known before Run starts; Run goes on with the port. It
// fails only when the port cannot be opened (the boards' failures are in
// their states). Close closes a primed port that Run never took.
func (b *Bus) Prime(ctx context.Context) error {
	rw, err := b.open()
	if err != nil {
		err = fmt.Errorf("%w %s: %w", ErrPort, b.cfg.Name, err)
		b.portDown(err)
		return err
	}
	p := startPort(rw)
	for i := range b.boards {
		// A board is down only after FailAfter failures in a row, at
		// start as later: one reply cut short by a slow adapter (or a
		// loaded machine) must not leave its sensors unread.
		for try := 0; try < max(b.cfg.FailAfter, 1); try++ {
			if i > 0 || try > 0 {
				b.sleep(ctx, b.cfg.Gap, false)
			}
			if err := b.status(ctx, p, i); err != nil {
				p.close()
				b.portDown(err)
				return err
			}
			if st, _ := b.BoardState(b.boards[i].cfg.Address); st.Up || ctx.Err() != nil {
				break
			}
		}
	}
	b.mu.Lock()
	b.primed = p
	b.mu.Unlock()
	return nil
}

// Close closes the port Prime opened if Run has not taken it.
func (b *Bus) Close() {
	b.mu.Lock()
	p := b.primed
	b.primed = nil
	b.mu.Unlock()
	if p != nil {
		p.close()
	}
}

// Run drives the bus until ctx is done; it always returns nil then. It
// must be called once.
func (b *Bus) Run(ctx context.Context) error {
	b.mu.Lock()
	if b.running {
		b.mu.Unlock()
		return errors.New("rs485: Run called twice")
	}
	b.running = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		b.failQueued(ErrStopped)
	}()
	b.mu.Lock()
	p := b.primed
	b.primed = nil
	b.mu.Unlock()
	defer func() {
		if p != nil {
			p.close()
		}
	}()
	next := 0 // round robin of status polls
	for ctx.Err() == nil {
		if p == nil {
			rw, err := b.open()
			if err != nil {
				b.portDown(fmt.Errorf("%w: %w", ErrPort, err))
				if !b.sleep(ctx, b.cfg.ReopenEvery, true) {
					return nil
				}
				continue
			}
			p = startPort(rw)
			b.log.Info("serial port open")
		}
		var err error
		select {
		case r := <-b.unlocks:
			err = b.unlock(ctx, p, r)
		default:
			i := b.pollTarget(&next)
			err = b.status(ctx, p, i)
		}
		if errors.Is(err, ErrPort) {
			b.portDown(err)
			p.close()
			p = nil
			if !b.sleep(ctx, b.cfg.ReopenEvery, true) {
				return nil
			}
			continue
		}
		// The gap between transactions; an unlock that comes meanwhile
		// waits for it too.
		if !b.sleep(ctx, b.cfg.Gap, false) {
			return nil
		}
	}
	return nil
}

// sleep waits d or until ctx is done; with failUnlocks it answers queued
// unlocks with the port's failure meanwhile.
func (b *Bus) sleep(ctx context.Context, d time.Duration, failUnlocks bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		var unlocks chan *unlockReq
		if failUnlocks {
			unlocks = b.unlocks
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case r := <-unlocks:
			r.written <- fmt.Errorf("%w: bus %s is down", ErrPort, b.cfg.Name)
		}
	}
}

func (b *Bus) failQueued(err error) {
	for {
		select {
		case r := <-b.unlocks:
			r.written <- err
		default:
			return
		}
	}
}

// pollTarget picks the board to query: one whose unlock's outcome is
// unknown first, else the next in turn.
func (b *Bus) pollTarget(next *int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, br := range b.boards {
		if br.pollNext {
			return i
		}
	}
	i := *next % len(b.boards)
	*next = i + 1
	return i
}

// portDown marks every board down with err.
func (b *Bus) portDown(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.PortErrors++
	for _, br := range b.boards {
		if br.state.Up || br.state.Err == nil {
			b.log.Error("board down: serial port", "board", br.cfg.Address, "err", err)
		}
		br.state.Up, br.state.Err = false, err
		br.fails = b.cfg.FailAfter
	}
}

// drain drops bytes that came outside a transaction (a late reply).
func (b *Bus) drain(p *port) error {
	for {
		select {
		case c := <-p.in:
			if c.err != nil {
				return fmt.Errorf("%w: %w", ErrPort, c.err)
			}
			if len(c.b) > 0 {
				b.log.Debug("stray bytes dropped", "n", len(c.b))
				b.observe(false, -1, c.b, ErrStray)
			}
		default:
			return nil
		}
	}
}

func (b *Bus) write(p *port, f []byte, board int) error {
	if _, err := p.rw.Write(f); err != nil {
		return fmt.Errorf("%w: write: %w", ErrPort, err)
	}
	b.observe(true, board, f, nil)
	return nil
}

// observe tells Config.Observe of a frame, if set.
func (b *Bus) observe(sent bool, board int, data []byte, err error) {
	if b.cfg.Observe == nil {
		return
	}
	b.cfg.Observe(Frame{At: time.Now(), Sent: sent, Board: board, Data: data, Err: err})
}

// readFrame reads until the splitter gives a good frame, or an error frame,
// or the line stays silent: first wait for a byte until first, then, once
// bytes came, until silence passes without more. For 8A/80 replies of
// unknown length silence ends the frame.
func (b *Bus) readFrame(ctx context.Context, p *port, s *proto.Splitter, first, silence time.Duration) ([]byte, error) {
	t := time.NewTimer(first)
	defer t.Stop()
	got := false
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case c := <-p.in:
			if c.err != nil {
				return nil, fmt.Errorf("%w: read: %w", ErrPort, c.err)
			}
			s.Feed(c.b)
			got = true
			f, err := s.Next()
			if f != nil || err != nil {
				return f, err
			}
			if !t.Stop() {
				<-t.C
			}
			t.Reset(silence)
		case <-t.C:
			if !got {
				return nil, ErrTimeout
			}
			f, err := s.Silence()
			if errors.Is(err, proto.ErrShort) {
				err = fmt.Errorf("%w: %w", ErrTimeout, err)
			}
			return f, err
		}
	}
}

// unlock writes r's frame once and reports the write; then it waits for
// the reply (8A/80) or lets an optional echo pass (Kerong), and asks for
// the board's status next.
func (b *Bus) unlock(ctx context.Context, p *port, r *unlockReq) error {
	if !r.state.CompareAndSwap(reqQueued, reqTaken) {
		return nil // abandoned by its caller while it waited
	}
	var f []byte
	var err error
	if b.cfg.Protocol == proto.Kerong {
		f, err = proto.KerongUnlockFrame(r.board, r.ch)
	} else {
		f, err = proto.Unlock8A80Frame(r.board, r.ch)
	}
	if err == nil {
		err = b.drain(p)
	}
	if err != nil {
		r.written <- err
		return err
	}
	b.mu.Lock()
	i := b.index[r.board]
	br := b.boards[i]
	if br.pending&(1<<(r.ch-1)) != 0 { // raced with another unlock of it
		b.mu.Unlock()
		err := fmt.Errorf("%w: bus %s board %d channel %d", ErrUnresolved, b.cfg.Name, r.board, r.ch)
		r.written <- err
		return nil
	}
	// Pending from before the write: a write that fails half-way has an
	// unknown outcome too.
	br.pending |= 1 << (r.ch - 1)
	br.pollNext = true
	// Never lowered by a later unlock of another lock of the board: the
	// late replies the first is waiting out are still on their way.
	br.resolve = max(br.resolve, 1+min(br.fails, b.cfg.FailAfter))
	b.stats.Unlocks++
	b.mu.Unlock()
	err = b.write(p, f, r.board)
	r.written <- err
	if err != nil {
		return err
	}
	b.log.Info("unlock sent", "board", r.board, "channel", r.ch)
	wire := time.Duration(proto.FrameTime(len(f), b.cfg.Baud))
	if b.cfg.Protocol == proto.Kerong {
		// An optional echo (some boards answer with their status) may come
		// in bursts longer than the settle: the next query is written only
		// once the line is quiet, or its reply would be read one behind.
		echo := b.sleepDrain(ctx, p, wire+b.cfg.UnlockSettle)
		echo = append(echo, b.quiet(ctx, p)...)
		if len(echo) > 0 {
			b.observe(false, r.board, echo, fmt.Errorf("%w: an unlock's echo", ErrStray))
		}
		return nil
	}
	s := proto.NewSplitter(proto.P8A80, proto.Replies)
	rf, err := b.readFrame(ctx, p, s, wire+b.cfg.UnlockReplyTimeout, b.cfg.Silence)
	if errors.Is(err, ErrPort) {
		return err
	}
	var rep proto.UnlockReply8A80
	if err == nil {
		rep, err = proto.DecodeUnlockReply8A80(rf, r.board, r.ch)
	}
	if ctx.Err() == nil {
		b.observe(false, r.board, rf, err)
	}
	if err == nil {
		b.log.Info("unlock reply", "board", r.board, "channel", r.ch, "open", rep.Open)
		return nil
	}
	// Lost or garbled: never resent; the status query that comes next
	// tells what happened, once the line is quiet.
	b.observeStray(r.board, b.quiet(ctx, p))
	b.log.Warn("unlock reply lost: not resending, reading the status", "board", r.board, "channel", r.ch, "err", err)
	return nil
}

// observeStray tells the Observer of bytes dropped while the line quietened.
func (b *Bus) observeStray(board int, stray []byte) {
	if len(stray) > 0 {
		b.observe(false, board, stray, ErrStray)
	}
}

// sleepDrain waits d, dropping what arrives; it returns the bytes dropped
// when an Observer wants them.
func (b *Bus) sleepDrain(ctx context.Context, p *port, d time.Duration) (dropped []byte) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return dropped
		case <-t.C:
			return dropped
		case c := <-p.in:
			if c.err != nil {
				// Let the next transaction find it.
				go func() { p.in <- c }()
				return dropped
			}
			if b.cfg.Observe != nil {
				dropped = append(dropped, c.b...)
			}
		}
	}
}

// status queries board i and records the outcome.
func (b *Bus) status(ctx context.Context, p *port, i int) error {
	b.mu.Lock()
	br := b.boards[i]
	addr, channels := br.cfg.Address, br.cfg.Channels
	// A board that is up and answered before is cut at its known length;
	// its first reply, and its first after it was down (a board swapped
	// for another takes longer than FailAfter polls), is read to the end.
	answered := br.state.Polls > 0 && br.state.Up
	b.mu.Unlock()
	var q []byte
	var err error
	s := proto.NewSplitter(b.cfg.Protocol, proto.Replies)
	replyLen := proto.KerongReplyLen
	if b.cfg.Protocol == proto.Kerong {
		q, err = proto.KerongStatusFrame(addr)
	} else {
		q, err = proto.Query8A80Frame(addr)
		replyLen = proto.Reply8A80Len(channels)
		// An 8A/80 reply's length is the board's. Until the board answers
		// (at start, and again after it was down), its reply is read to
		// the end (silence) and its length checked against the wiring;
		// then it is cut at that length.
		if answered {
			s.SetGroups(proto.Groups8A80(channels))
		} else {
			s.ToSilence()
		}
	}
	if err != nil {
		return err
	}
	if err := b.drain(p); err != nil {
		return err
	}
	sent := time.Now()
	if err := b.write(p, q, addr); err != nil {
		return err
	}
	wire := time.Duration(proto.FrameTime(len(q)+replyLen, b.cfg.Baud))
	// Replies of a known length end with their last byte; the silence
	// only cuts a reply short, and must outlast the gaps between the
	// bursts of a USB adapter.
	f, err := b.readFrame(ctx, p, s, wire+b.cfg.ReplyTimeout, b.cfg.Silence)
	if ctx.Err() != nil {
		return nil
	}
	if errors.Is(err, ErrPort) {
		return err
	}
	var open, parcel uint64
	if err == nil {
		if b.cfg.Protocol == proto.Kerong {
			var st proto.KerongStatus
			if st, err = proto.DecodeKerongStatus(f, addr); err == nil {
				open, parcel = uint64(st.Locks), uint64(st.IR)
			}
		} else {
			var st proto.Status8A80
			st, err = proto.DecodeStatus8A80(f, addr)
			switch {
			case err != nil:
			case st.Groups != proto.Groups8A80(channels):
				// A 32-channel board wired with 24: its channels would be
				// read shifted, each door's bit another's.
				err = fmt.Errorf("%w: board %d answers %d status bytes (%d channels), the wiring gives it %d channels",
					proto.ErrFrame, addr, st.Groups, st.Groups*8, channels)
			case s.Buffered() > 0:
				// More came in the same read: the reply was longer than
				// the wiring's channels, cut where a byte looked like its
				// checksum. (Waiting a silence after every reply for more
				// would halve the poll rate; a board whose reply grows
				// was swapped, and went down meanwhile.)
				err = fmt.Errorf("%w: bytes after board %d's reply: does it have more than the wiring's %d channels?",
					proto.ErrFrame, addr, channels)
			default:
				open = st.Bits
			}
		}
	}
	if !b.cfg.OpenBit {
		open = ^open
	}
	mask := uint64(1)<<channels - 1
	if channels == 64 {
		mask = ^uint64(0)
	}
	b.observe(false, addr, f, err)
	b.record(i, sent, open&mask, parcel&mask, err)
	if err != nil {
		// A late, short or foreign reply may still be arriving: the next
		// query is written only once the line is quiet, so that no board
		// is ever read with another's (or its own previous) reply.
		b.observeStray(addr, b.quiet(ctx, p))
	}
	return nil
}

// quiet drops what arrives until the line has been silent for Config.Silence
// (at most MaxQuiet): after a failed or echoing transaction, the bus
// resynchronises on silence before it writes again. It returns the bytes
// dropped when an Observer wants them.
func (b *Bus) quiet(ctx context.Context, p *port) (dropped []byte) {
	deadline := time.NewTimer(MaxQuiet)
	defer deadline.Stop()
	t := time.NewTimer(b.cfg.Silence)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return dropped
		case <-deadline.C:
			return dropped
		case <-t.C:
			return dropped
		case c := <-p.in:
			if c.err != nil {
				go func() { p.in <- c }() // let the next transaction find it
				return dropped
			}
			if b.cfg.Observe != nil {
				dropped = append(dropped, c.b...)
			}
			if !t.Stop() {
				<-t.C
			}
			t.Reset(b.cfg.Silence)
		}
	}
}

// record files a status outcome of board i.
func (b *Bus) record(i int, at time.Time, open, parcel uint64, err error) {
	b.mu.Lock()
	br := b.boards[i]
	st := &br.state
	if err == nil {
		if !st.Up && st.Polls > 0 {
			b.log.Warn("board answers again", "board", br.cfg.Address)
		}
		st.Up, st.Err, st.Open, st.Parcel, st.At = true, nil, open, parcel, at
		st.Polls++
		b.stats.Polls++
		br.fails = 0
		if br.resolve > 1 {
			// Maybe the late reply to a query from before the unlock:
			// the next status of the board is read at once.
			br.resolve--
		} else {
			br.resolve, br.pending, br.pollNext = 0, 0, false
		}
	} else {
		switch {
		case errors.Is(err, ErrTimeout):
			b.stats.Timeouts++
		case errors.Is(err, proto.ErrChecksum):
			b.stats.Checksums++
		case errors.Is(err, proto.ErrAddress):
			b.stats.WrongAddress++
		default:
			b.stats.Malformed++
		}
		br.fails++
		// A board that does not answer goes back into the round robin:
		// read first after every failure, it kept every other board of
		// the bus from being read at all (their doors frozen at their
		// last status). Its unlock stays unresolved.
		br.pollNext = false
		st.Err = fmt.Errorf("bus %s board %d: %w", b.cfg.Name, br.cfg.Address, err)
		if st.Up && br.fails >= b.cfg.FailAfter {
			st.Up = false
			b.log.Error("board down", "board", br.cfg.Address, "err", err, "failures", br.fails)
		} else {
			b.log.Debug("status failed", "board", br.cfg.Address, "err", err)
		}
	}
	b.mu.Unlock()
}

// Boards lists the addresses on the bus in wiring order.
func (b *Bus) Boards() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]int, 0, len(b.boards))
	for _, br := range b.boards {
		out = append(out, br.cfg.Address)
	}
	return slices.Clip(out)
}
