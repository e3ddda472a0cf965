package browsertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// conn is one DevTools WebSocket connection to the browser. Pages are
// reached through it with flattened sessions: a command or an event for a
// page carries its sessionId.
type conn struct {
	ws   *websocket.Conn
	done chan struct{} // closed when the read loop ends

	// mu guards next, pending, handlers and err.
	mu       sync.Mutex
	next     int64
	pending  map[int64]chan message
	handlers map[string]func(method string, params json.RawMessage) // by session id
	err      error                                                  // why the read loop ended
}

// message is a CDP message: a command, its answer, or an event.
type message struct {
	ID        int64           `json:"id,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *cdpError       `json:"error,omitempty"`
}

// cdpError is the error answer of a command.
type cdpError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    string `json:"data,omitempty"`
}

func (e *cdpError) Error() string {
	if e.Data != "" {
		return fmt.Sprintf("%s (%d): %s", e.Message, e.Code, e.Data)
	}
	return fmt.Sprintf("%s (%d)", e.Message, e.Code)
}

// writeTimeout bounds the sending of one command.
const writeTimeout = 10 * time.Second

// errClosed: the DevTools connection is closed.
var errClosed = errors.New("devtools connection closed")

func newConn(ws *websocket.Conn) *conn {
	ws.SetReadLimit(256 << 20) // screenshots are large
	c := &conn{ws: ws, done: make(chan struct{}), pending: map[int64]chan message{},
		handlers: map[string]func(string, json.RawMessage){}}
	go c.readLoop()
	return c
}

func (c *conn) readLoop() {
	defer close(c.done)
	var err error
	for {
		var data []byte
		_, data, err = c.ws.Read(context.Background())
		if err != nil {
			break
		}
		var m message
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		c.mu.Lock()
		if m.ID != 0 {
			ch := c.pending[m.ID]
			delete(c.pending, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m // buffered
			}
			continue
		}
		h := c.handlers[m.SessionID]
		c.mu.Unlock()
		if h != nil && m.Method != "" {
			h(m.Method, m.Params)
		}
	}
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %v", errClosed, err)
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// handle routes the events of session to h, which must not block; nil
// removes the route.
func (c *conn) handle(session string, h func(method string, params json.RawMessage)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h == nil {
		delete(c.handlers, session)
	} else {
		c.handlers[session] = h
	}
}

// call sends the command method with params to session ("" for the
// browser) and decodes its result into result (unless nil).
func (c *conn) call(ctx context.Context, session, method string, params, result any) error {
	var raw json.RawMessage
	if params != nil {
		var err error
		if raw, err = json.Marshal(params); err != nil {
			return err
		}
	}
	ch := make(chan message, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("%s: %w", method, err)
	}
	c.next++
	id := c.next
	c.pending[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}
	data, err := json.Marshal(message{ID: id, SessionID: session, Method: method, Params: raw})
	if err != nil {
		forget()
		return err
	}
	// A Write whose context ends closes the connection: give it its own.
	wctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	err = c.ws.Write(wctx, websocket.MessageText, data)
	cancel()
	if err != nil {
		forget()
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			return fmt.Errorf("%s: %w", method, err)
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %w", method, m.Error)
		}
		if result != nil && len(m.Result) > 0 {
			if err := json.Unmarshal(m.Result, result); err != nil {
				return fmt.Errorf("%s: decoding the result: %w", method, err)
			}
		}
		return nil
	case <-ctx.Done():
		forget()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// close closes the connection and waits for the read loop to end.
func (c *conn) close() {
	_ = c.ws.CloseNow()
	<-c.done
}
