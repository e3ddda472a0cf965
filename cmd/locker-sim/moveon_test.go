package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openlocker/locker/sync/brokertest"
	"github.com/openlocker/locker/sync/protocol"
)

// POST /api/keypad answers once the locker is done with the code: a deposit
// code whose first door is jammed answers with the door it moved on to, and
// that door is open when the answer comes, with no waiting by the caller.
func TestKeypadAnswersAfterTheDepositMovesOn(t *testing.T) {
	t.Parallel()
	b := brokertest.Start(t, brokertest.Options{})
	data := t.TempDir()
	const locker = "SIM01"
	prefix := "lockers/v1/" + locker + "/"
	c := newCentral(t, b.URL(), "central-moveon", prefix+"#")
	s := startSim(t, b.URL(), data)
	c.wait("online status", func(m msg) bool {
		return m.Topic == prefix+"status" && strings.Contains(string(m.Payload), `"online"`)
	})
	kp, err := protocol.LoadKeyPair(filepath.Join(data, "central-dev.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ms []int
	for _, cm := range s.cabinet().Compartments {
		if cm.Size == "M" {
			ms = append(ms, cm.Number)
		}
	}
	if len(ms) < 2 {
		t.Fatalf("the default cabinet has %d M compartments", len(ms))
	}
	s.do(ms[0], "fault", map[string]string{"fault": "jammed_lock"})
	now := time.Now().UTC()
	c.publish(prefix+"grants", sealWith(t, kp.KeyID, kp.Private,
		grantsBody(locker, now, depositWithPickup(locker, "g-1", "123456", "654321", now))))
	c.wait("grants ack", func(m msg) bool { return m.Topic == prefix+"grants/ack" })

	display := s.keys("123456#")
	want := fmt.Sprintf("%02d", ms[1])
	if !strings.Contains(strings.Join(display, " "), want) {
		t.Errorf("keypad answered %q, want it to name door %s (door %02d is jammed)", display, want, ms[0])
	}
	for _, cm := range s.cabinet().Compartments {
		switch {
		case cm.Number == ms[1] && cm.Door != "open":
			t.Errorf("door %02d is %s when the keypad answered, want open", cm.Number, cm.Door)
		case cm.Number != ms[1] && cm.Door == "open":
			t.Errorf("door %02d is open", cm.Number)
		}
	}
	c.waitTrace("lock_fault", nil)
}
