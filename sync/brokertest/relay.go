package brokertest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Relay is a TCP relay between the link and the broker that a test can stall
// (hold all traffic) or cut (close every connection, as a pulled cable or a
// crash would, without an MQTT DISCONNECT).
type Relay struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   map[net.Conn]bool
	refuse  bool
	running chan struct{} // closed while traffic flows; replaced when stalled
}

func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln, target: target, conns: map[net.Conn]bool{}, running: make(chan struct{})}
	close(r.running)
	t.Cleanup(func() {
		ln.Close()
		r.Cut()
	})
	go r.accept()
	return r
}

// URL is the relay's address for paho.
func (r *Relay) URL() string { return "tcp://" + r.ln.Addr().String() }

func (r *Relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		refuse := r.refuse
		r.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		b, err := net.DialTimeout("tcp", r.target, time.Second)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		r.conns[c], r.conns[b] = true, true
		r.mu.Unlock()
		go r.pipe(c, b)
		go r.pipe(b, c)
	}
}

func (r *Relay) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			running := r.running
			r.mu.Unlock()
			<-running // a stalled relay holds the bytes
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // io.EOF or a closed connection
			return
		}
	}
}

// Stall holds all traffic (in both directions) until Resume or Cut.
func (r *Relay) Stall() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.running:
		r.running = make(chan struct{})
	default:
	}
}

// Resume lets traffic flow again.
func (r *Relay) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.running:
	default:
		close(r.running)
	}
}

// Refuse makes the relay close new connections at once (true) or relay them.
func (r *Relay) Refuse(refuse bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse = refuse
}

// Cut closes every relayed connection; bytes held by a stall are lost.
func (r *Relay) Cut() {
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	clear(r.conns)
	r.mu.Unlock()
	r.Resume() // let the pipes notice
}
