package rs485

import (
	"sync"
	"time"
)

// frameLog keeps the last maxFrames frames of a line and publishes each to
// its subscribers. Its methods are safe for concurrent use.
type frameLog struct {
	name string
	now  func() time.Time

	// mu guards the fields below; nothing is called under it but
	// non-blocking sends to subscribers.
	mu     sync.Mutex
	frames []Frame
	seq    uint64
	subs   map[int]chan Frame
	nextID int
}

func (l *frameLog) add(dir string, data []byte, text, errText string) {
	l.addAt(l.now(), dir, data, text, errText)
}

func (l *frameLog) addAt(at time.Time, dir string, data []byte, text, errText string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	f := Frame{Seq: l.seq, At: at, Bus: l.name, Dir: dir, Hex: Hex(data), Text: text, Err: errText}
	if len(l.frames) == maxFrames {
		l.frames = append(l.frames[:0], l.frames[1:]...)
	}
	l.frames = append(l.frames, f)
	for _, ch := range l.subs {
		select {
		case ch <- f:
		default:
		}
	}
}

func (l *frameLog) all() []Frame {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Frame(nil), l.frames...)
}

func (l *frameLog) subscribe() (<-chan Frame, func()) {
	ch := make(chan Frame, 256)
	l.mu.Lock()
	if l.subs == nil {
		l.subs = map[int]chan Frame{}
	}
	id := l.nextID
	l.nextID++
	l.subs[id] = ch
	l.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.subs, id)
			l.mu.Unlock()
		})
	}
}
