package rs485

import (
	"errors"
	"time"

	halrs485 "github.com/openlocker/locker/hal/rs485"
	"github.com/openlocker/locker/hal/rs485/proto"
)

// Monitor is the frame view of a real bus: the daemon's bus worker tells
// it every frame it writes and reads (Observe, a hal/rs485 Observer), and
// it keeps and publishes them as a simulated Bus does its own, decoded, so
// that the page shows what a board on the technician's bench says.
type Monitor struct {
	name    string
	proto   proto.Protocol
	openBit int
	log     frameLog
}

// NewMonitor returns the frame view of the real bus called name, whose
// lock feedback bit lockOpenBit (0 or 1) means open.
func NewMonitor(name string, p proto.Protocol, lockOpenBit int) *Monitor {
	return &Monitor{name: name, proto: p, openBit: lockOpenBit, log: frameLog{name: name, now: time.Now}}
}

// Name is the bus's name.
func (m *Monitor) Name() string { return m.name }

// Frames returns the last frames seen, oldest first.
func (m *Monitor) Frames() []Frame { return m.log.all() }

// Subscribe is Bus.Subscribe for the real bus.
func (m *Monitor) Subscribe() (<-chan Frame, func()) { return m.log.subscribe() }

// Observe records one frame of the daemon's bus worker; it does not block.
func (m *Monitor) Observe(f halrs485.Frame) {
	dir := FromBoard
	if f.Sent {
		dir = ToBoard
	}
	text := m.describe(f)
	errText := ""
	if f.Err != nil {
		errText = f.Err.Error()
	}
	m.log.addAt(f.At, dir, f.Data, text, errText)
}

// describe decodes a frame as the page shows it, "" when it cannot.
func (m *Monitor) describe(f halrs485.Frame) string {
	switch {
	case len(f.Data) == 0 || errors.Is(f.Err, halrs485.ErrStray):
		return ""
	case f.Sent && m.proto == proto.Kerong:
		if c, err := proto.DecodeKerongCommand(f.Data); err == nil {
			return kerongText(c)
		}
	case f.Sent:
		if c, err := proto.DecodeCommand8A80(f.Data); err == nil {
			return text8A80(c)
		}
	case m.proto == proto.Kerong:
		if st, err := proto.DecodeKerongStatus(f.Data, -1); err == nil {
			return kerongStatusText(st, m.openBit)
		}
	case f.Data[0] == proto.Head8A80Unlock:
		if r, err := proto.DecodeUnlockReply8A80(f.Data, 0, -1); err == nil {
			return unlockReply8A80Text(r)
		}
	default:
		if st, err := proto.DecodeStatus8A80(f.Data, 0); err == nil {
			return status8A80Text(st.Addr, st.Groups*8, st.Bits, m.openBit)
		}
	}
	return ""
}
