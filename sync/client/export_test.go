package client

import "net"

// NewWithDial is New with every connection opened by dial instead of the
// network: the tests run the link on an in-memory broker inside a
// testing/synctest bubble, at its real timings on the fake clock.
func NewWithDial(opts Options, dial func() (net.Conn, error)) (*Link, error) {
	l, err := New(opts)
	if err != nil {
		return nil, err
	}
	l.dial = dial
	return l, nil
}

// SetBackoffRandom sets the back-off's random source (rand.Int64N) of a
// link not yet running.
func SetBackoffRandom(l *Link, rnd func(n int64) int64) { l.rnd = rnd }
