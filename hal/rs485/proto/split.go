package proto

import "fmt"

// Direction says which side of the bus a Splitter listens to.
type Direction int

const (
	// Commands: the board's side, reading what the controller sends.
	Commands Direction = iota + 1
	// Replies: the controller's side, reading what boards answer.
	Replies
)

// Silence8A80 is how long an 8A/80 line stays quiet after a reply: the
// end of a query reply, whose length depends on the board.
const Silence8A80 = 25 // milliseconds

// Splitter cuts a stream of bytes into frames of one protocol, wherever
// the bursts of a USB adapter happen to split them. It is not safe for
// concurrent use.
//
// Feed it bytes as they arrive, then call Next until it returns (nil,
// nil): a complete frame is returned with a nil error; bytes that are not
// a frame are returned with ErrFrame (junk before a start byte, a frame
// whose end byte is wrong: one byte is dropped and the rest scanned again)
// or with ErrChecksum (a whole frame with a bad checksum, dropped). When the
// line has been quiet for a frame gap, call Silence: what is still buffered
// ends there (an 8A/80 query reply of unknown length) or is reported as
// ErrShort.
type Splitter struct {
	p      Protocol
	dir    Direction
	groups int
	// toSilence: a query reply ends only when the line goes quiet.
	toSilence bool
	buf       []byte
}

// NewSplitter returns a splitter of p's frames as seen from dir.
func NewSplitter(p Protocol, dir Direction) *Splitter {
	return &Splitter{p: p, dir: dir}
}

// SetGroups tells an 8A/80 reply splitter how many status bytes the next
// query reply carries (Groups8A80 of the board asked); 0, the default,
// finds the end of a query reply by its trailer and checksum, or by
// silence.
func (s *Splitter) SetGroups(n int) {
	if n > Channels8A80Max/8 {
		n = 0 // no status reply is that long: fall back to its trailer
	}
	s.groups = n
}

// ToSilence makes an 8A/80 reply splitter end a query reply only at
// silence, never at the first trailer that checks out: a reply longer than
// expected is then read whole (and its length can be checked), not cut where
// a status byte happens to look like a trailer.
func (s *Splitter) ToSilence() { s.toSilence = true }

// Feed appends bytes read from the line.
func (s *Splitter) Feed(b []byte) { s.buf = append(s.buf, b...) }

// Buffered is the number of bytes waiting for the rest of their frame.
func (s *Splitter) Buffered() int { return len(s.buf) }

// Reset drops what is buffered.
func (s *Splitter) Reset() { s.buf = s.buf[:0] }

func (s *Splitter) take(n int) []byte {
	f := append([]byte(nil), s.buf[:n]...)
	s.buf = append(s.buf[:0], s.buf[n:]...)
	return f
}

func (s *Splitter) isStart(c byte) bool {
	if s.p == Kerong {
		return c == KerongSTX
	}
	return c == Head8A80Unlock || c == Head8A80Query
}

// Next returns the next frame, or bytes dropped with an error, or (nil,
// nil) when it needs more bytes.
func (s *Splitter) Next() ([]byte, error) {
	if len(s.buf) == 0 {
		return nil, nil
	}
	if !s.isStart(s.buf[0]) {
		n := 1
		for n < len(s.buf) && !s.isStart(s.buf[n]) {
			n++
		}
		return s.take(n), fmt.Errorf("%w: %d bytes before a start byte", ErrFrame, n)
	}
	if s.p == Kerong {
		return s.nextKerong()
	}
	return s.next8A80()
}

func (s *Splitter) nextKerong() ([]byte, error) {
	if len(s.buf) < 3 {
		return nil, nil
	}
	var n int
	switch s.buf[2] {
	case KerongStatusOne, KerongUnlock, KerongStatusBoard:
		n = KerongCommandLen
	case KerongStatusReply:
		n = KerongReplyLen
	default:
		err := fmt.Errorf("%w: kerong command %#02x", ErrFrame, s.buf[2])
		return s.take(1), err
	}
	if len(s.buf) < n {
		return nil, nil
	}
	if s.buf[n-2] != KerongETX {
		return s.take(1), fmt.Errorf("%w: kerong frame without ETX", ErrFrame)
	}
	f := s.take(n)
	if sum := Sum(f[:n-1]); sum != f[n-1] {
		return f, fmt.Errorf("%w: kerong sum %#02x, frame says %#02x", ErrChecksum, sum, f[n-1])
	}
	return f, nil
}

func (s *Splitter) next8A80() ([]byte, error) {
	if s.buf[0] == Head8A80Unlock || s.dir == Commands {
		return s.fixed8A80(Command8A80Len)
	}
	if s.groups > 0 {
		return s.fixed8A80(4 + s.groups)
	}
	if s.toSilence {
		if len(s.buf) > 4+Channels8A80Max/8 {
			return s.take(len(s.buf)), fmt.Errorf("%w: 8a80 query reply longer than any board's", ErrFrame)
		}
		return nil, nil
	}
	// A query reply of unknown length: the first trailer 33 BCC that
	// checks out ends it; silence ends it otherwise.
	for k := 4 + MinGroups8A80; k <= len(s.buf) && k <= 4+Channels8A80Max/8; k++ {
		if s.buf[k-2] == Fn8A80Query && s.buf[k-1] == XOR(s.buf[:k-1]) {
			return s.take(k), nil
		}
	}
	if len(s.buf) >= 4+Channels8A80Max/8 {
		return s.take(1), fmt.Errorf("%w: 8a80 query reply without a trailer", ErrFrame)
	}
	return nil, nil
}

func (s *Splitter) fixed8A80(n int) ([]byte, error) {
	if len(s.buf) < n {
		return nil, nil
	}
	want := byte(Fn8A80Query)
	if s.buf[0] == Head8A80Unlock {
		want = Fn8A80Unlock
	}
	// The function byte: an unlock command says 11, an unlock reply says
	// 11 or 00; a query says 33 just before the checksum.
	ok := s.buf[n-2] == want
	if s.buf[0] == Head8A80Unlock && s.dir == Replies {
		ok = s.buf[3] == St8A80Open || s.buf[3] == St8A80Closed
	}
	if !ok {
		err := fmt.Errorf("%w: 8a80 frame % x", ErrFrame, s.buf[:n])
		return s.take(1), err
	}
	f := s.take(n)
	if x := XOR(f[:n-1]); x != f[n-1] {
		return f, fmt.Errorf("%w: 8a80 xor %#02x, frame says %#02x", ErrChecksum, x, f[n-1])
	}
	return f, nil
}

// Silence tells the splitter the line has gone quiet: a buffered 8A/80
// query reply ends here (checked by DecodeStatus8A80's rules); anything
// else buffered is an incomplete frame, returned with ErrShort. The buffer
// is empty afterwards. It returns (nil, nil) when nothing was buffered.
func (s *Splitter) Silence() ([]byte, error) {
	if len(s.buf) == 0 {
		return nil, nil
	}
	f := s.take(len(s.buf))
	if s.p == P8A80 && s.dir == Replies && f[0] == Head8A80Query {
		if _, err := DecodeStatus8A80(f, 0); err != nil {
			return f, err
		}
		return f, nil
	}
	return f, fmt.Errorf("%w: %d bytes left at silence", ErrShort, len(f))
}
