package controller

import (
	"context"
	"strings"
	"testing"

	"github.com/openlocker/locker/controller/clocktest"
	"github.com/openlocker/locker/controller/store"
)

// BenchmarkHousekeepingIdle times one housekeeping tick of an idle locker
// with 24 compartments: the cost every locker pays every second, which is
// what limits a fleet (locker-sim -fleet) on one machine.
func BenchmarkHousekeepingIdle(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, b.TempDir()+"/l.db")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cab := newFakeCabinet(strings.Repeat("S M L ", 8))
	c, err := New(Options{LockerID: lockerID, Store: st, Cabinet: cab, Clock: clocktest.New(t0), Tick: 1 << 62})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case err := <-done:
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := c.do(ctx, func() { c.housekeeping(ctx) }); err != nil {
			b.Fatal(err)
		}
	}
}
