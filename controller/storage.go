package controller

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openlocker/locker/controller/fsm"
	"github.com/openlocker/locker/controller/store"
	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/hal"
)

// When the data folder cannot be written — the disk is full, the file
// system went read-only, the card gives I/O errors — the locker cannot
// record a release, so it opens no door: every release is written before
// its coil fires, and that write fails. On top of that the controller
// notices the failure once (storageFailed): it logs it, shows "Out of
// service" instead of the idle prompt, answers '#' with the same without
// looking anything up, and reports it in the status (storage_fault).
//
// Each housekeeping tick then checks that the disk has room (store.MinFree),
// empties the write-ahead log into the database and tries to record a
// storage_fault trace that says how long the storage
// was out; the first that commits ends the outage. (Emptying the log first
// makes the trace need new room on the disk: a commit into the log's old
// space would prove nothing.) What the sensors did meanwhile was not
// recorded, so the controller then compares every compartment's stored
// door and parcel with its sensors and replays the differences as events,
// and records the sensor faults and recoveries hal reported meanwhile.

// storageFailed notes a write that failed because the storage did.
func (c *Controller) storageFailed(err error) {
	if c.storeErr != nil {
		c.storeErrs++
		return
	}
	c.storeErr, c.storeDownAt, c.storeErrs = err, c.now(), 1
	c.storeFault.Store(err.Error())
	c.log.Error("storage cannot be written: doors stay shut until it can", "err", err)
	signal(c.changed) // the status says so
	if len(c.entry) == 0 && c.service == nil {
		c.msgUntil = time.Time{} // whatever the last message said no longer holds
		c.showIdle()
	}
}

// StorageFault is why the storage cannot be written just now ("" when it
// can). It may be called from any goroutine.
func (c *Controller) StorageFault() string {
	s, _ := c.storeFault.Load().(string)
	return s
}

// retryStorage runs on each tick while the storage is failing: it tries to
// record the outage; once that commits, the storage is back.
func (c *Controller) retryStorage(ctx context.Context) {
	down, cause, fails := c.storeDownAt, c.storeErr, c.storeErrs
	if free, err := c.st.FreeBytes(); err == nil && free < store.MinFree {
		return // the disk is still (nearly) full
	}
	if err := c.st.TruncateWAL(ctx); err != nil {
		return // the database cannot take the log's pages yet
	}
	err := c.update(ctx, func(tx *store.Tx) error {
		return c.record(tx, wire.Trace{Type: fsm.StorageFaulted.String(), Reason: cause.Error(),
			Content: "Storage could not be written for " + waitText(c.now().Sub(down), "en") +
				" (" + strconv.Itoa(fails) + " failed writes); doors were refused meanwhile"})
	})
	if err != nil {
		c.storeErrs = fails // a retry is not one more refused write
		return
	}
	c.storeErr = nil
	c.storeFault.Store("")
	c.log.Info("storage can be written again", "after", c.now().Sub(down).Round(time.Millisecond), "failed_writes", fails)
	signal(c.changed)
	c.resync(ctx)
	if len(c.entry) == 0 && c.service == nil {
		c.msgUntil = time.Time{} // the last message was "Out of service"
		c.showIdle()
	}
}

// sensorLater keeps a sensor fault (cause set) or recovery (nil) of
// compartment n's source (door, parcel, lock) for the end of the outage. A
// sensor keeps at most two,
// alternating: a fault that came and went is recorded as both, and a later
// report of the same kind replaces the last one.
func (c *Controller) sensorLater(n int, source string, cause error) {
	if c.sensorPending == nil {
		c.sensorPending = map[sensorKey][]error{}
	}
	k := sensorKey{n, source}
	rs := c.sensorPending[k]
	switch {
	case len(rs) > 0 && (rs[len(rs)-1] == nil) == (cause == nil):
		rs[len(rs)-1] = cause
	case len(rs) == 2: // fault, recovery, fault again (or the reverse)
		rs = append(rs[:0], cause)
	default:
		rs = append(rs, cause)
	}
	c.sensorPending[k] = rs
}

// sensorKey is one sensor: a compartment's door, occupancy sensor or coil.
type sensorKey struct {
	n      int
	source string
}

// resync replays, as events, the door and parcel changes the sensors saw
// while nothing could be recorded, then the sensor faults hal reported.
func (c *Controller) resync(ctx context.Context) {
	defer c.replaySensors(ctx)
	var stored []store.Compartment
	if err := c.st.View(ctx, func(tx *store.Tx) error {
		var err error
		stored, err = tx.Compartments()
		return err
	}); err != nil {
		c.log.Error("resync after storage outage", "err", err)
		return
	}
	for _, sc := range stored {
		if _, wired := c.hw[sc.Number]; !wired || c.unread[sc.Number] {
			continue // (an unread one is judged when it is read: bootLate)
		}
		n := sc.Number
		open, err := c.cab.DoorOpen(n)
		if err != nil {
			continue
		}
		present, hasSensor, err := c.cab.ParcelPresent(n)
		if err != nil {
			hasSensor = false
		}
		parcelMoved := hasSensor && present != sc.ParcelPresent
		s := sc.Session
		switch {
		case open != sc.DoorOpen:
			c.door(ctx, n, open, time.Time{})
		case !open && s.Active() && !s.Opened && parcelMoved:
			// Released before the outage, opened and closed during it: the
			// parcel moved, so the door did open.
			c.door(ctx, n, true, time.Time{})
			c.door(ctx, n, false, time.Time{})
			continue
		}
		if parcelMoved {
			c.handle(ctx, hal.Event{Kind: hal.ParcelChanged, Compartment: n, On: present})
		}
	}
}

// replaySensors records the sensor faults and recoveries kept during the
// outage, in compartment order.
func (c *Controller) replaySensors(ctx context.Context) {
	pending := c.sensorPending
	c.sensorPending = nil
	keys := slices.SortedFunc(maps.Keys(pending), func(a, b sensorKey) int {
		if a.n != b.n {
			return a.n - b.n
		}
		return strings.Compare(a.source, b.source)
	})
	for _, k := range keys {
		for _, cause := range pending[k] {
			c.sensorFault(ctx, k.n, k.source, cause)
		}
	}
}
