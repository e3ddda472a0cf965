package fsm

import (
	"errors"
	"slices"
	"testing"
)

func types(r Result) []string {
	var out []string
	for _, t := range r.Traces {
		out = append(out, t.Type)
	}
	return out
}

func kinds(r Result) []EffectKind {
	var out []EffectKind
	for _, e := range r.Effects {
		out = append(out, e.Kind)
	}
	return out
}

// The transitions, one row each: from a compartment, an event, to the
// next state, the traces and the effects.
func TestStep(t *testing.T) {
	dep := Session{GrantID: "g", Action: Deposit, Actor: "134****8888", Parcel: "P"}
	pick := Session{GrantID: "p", Action: Pickup}
	free := Compartment{Number: 3, State: Free}
	occupied := Compartment{Number: 3, State: Occupied, ParcelID: "P", ParcelSeq: 7, ParcelPresent: true}
	with := func(c Compartment, f func(*Compartment)) Compartment { f(&c); return c }
	for _, tc := range []struct {
		name    string
		c       Compartment
		ev      Event
		err     error
		state   State
		traces  []string
		effects []EffectKind
		check   func(t *testing.T, r Result)
	}{
		{name: "deposit release", c: free, ev: Event{Kind: Release, Session: dep},
			state: Free, traces: []string{"lock_released"}, effects: []EffectKind{Pulse}},
		{name: "pickup release takes a use", c: occupied, ev: Event{Kind: Release, Session: pick, TakeUse: true},
			state: Occupied, traces: []string{"lock_released"}, effects: []EffectKind{TakeUse, Pulse}},
		{name: "a release never replaces a session", c: with(free, func(c *Compartment) { c.Session = dep }),
			ev: Event{Kind: Release, Session: Session{GrantID: "c-1", Action: Command}}, err: ErrBusy},
		{name: "no deposit into an occupied compartment", c: occupied, ev: Event{Kind: Release, Session: dep}, err: ErrNotEmpty},
		{name: "no deposit into a disabled one", c: with(free, func(c *Compartment) { c.Disabled = true }),
			ev: Event{Kind: Release, Session: dep}, err: ErrNotEmpty},
		{name: "no pickup from an empty one", c: free, ev: Event{Kind: Release, Session: pick}, err: ErrNoParcel},
		{name: "door opened for the session", c: with(free, func(c *Compartment) { c.Session = dep }),
			ev: Event{Kind: DoorOpen}, state: Free, traces: []string{"door_opened"},
			check: func(t *testing.T, r Result) {
				if !r.Next.Session.Opened || !r.Next.DoorOpen {
					t.Errorf("session %+v door %v", r.Next.Session, r.Next.DoorOpen)
				}
			}},
		{name: "door forced", c: free, ev: Event{Kind: DoorOpen}, state: Free, traces: []string{"door_opened", "door_forced"}},
		{name: "deposit done", c: with(free, func(c *Compartment) { c.Session, c.Session.Opened, c.DoorOpen = dep, true, true }),
			ev: Event{Kind: DoorClose, Present: true, HasOccupancy: true}, state: Occupied,
			traces: []string{"door_closed", "deposited"}, effects: []EffectKind{DepositDone},
			check: func(t *testing.T, r Result) {
				if r.Next.ParcelID != "P" || r.Next.Session.Active() || !r.Finished {
					t.Errorf("next %+v", r.Next)
				}
			}},
		{name: "deposit cancelled", c: with(free, func(c *Compartment) { c.Session, c.Session.Opened, c.DoorOpen = dep, true, true }),
			ev: Event{Kind: DoorClose, Present: false, HasOccupancy: true}, state: Free,
			traces: []string{"door_closed", "deposit_cancelled"}},
		{name: "picked up", c: with(occupied, func(c *Compartment) { c.Session, c.Session.Opened, c.DoorOpen = pick, true, true }),
			ev: Event{Kind: DoorClose, Present: false, HasOccupancy: true}, state: Free,
			traces: []string{"door_closed", "picked_up"}, effects: []EffectKind{ParcelGone},
			check: func(t *testing.T, r Result) {
				if r.Next.ParcelID != "" || r.Next.ParcelSeq != 0 || r.Effects[0].ParcelSeq != 7 {
					t.Errorf("next %+v effects %+v", r.Next, r.Effects)
				}
			}},
		{name: "pickup incomplete", c: with(occupied, func(c *Compartment) { c.Session, c.Session.Opened, c.DoorOpen = pick, true, true }),
			ev: Event{Kind: DoorClose, Present: true, HasOccupancy: true}, state: Occupied,
			traces: []string{"door_closed", "pickup_incomplete"}},
		{name: "parcel put through a forced door", c: free, ev: Event{Kind: ParcelChange, Present: true},
			state: Faulted, traces: []string{"parcel_found"}},
		{name: "parcel taken through a forced door", c: occupied, ev: Event{Kind: ParcelChange, Present: false},
			state: Occupied, traces: []string{"parcel_missing"}},
		{name: "lock fault gives a pickup's use back", c: with(occupied, func(c *Compartment) { c.Session = pick }),
			ev: Event{Kind: LockFailed, Reason: "jammed"}, state: Occupied, traces: []string{"lock_fault"},
			effects: []EffectKind{ReturnUse}},
		{name: "lock fault takes an empty compartment out of use", c: with(free, func(c *Compartment) { c.Session = dep }),
			ev: Event{Kind: LockFailed}, state: Faulted, traces: []string{"lock_fault"}},
		{name: "lock fault after the door opened is no fault",
			c: with(free, func(c *Compartment) { c.Session, c.DoorOpen = dep, true }), ev: Event{Kind: LockFailed}, state: Free},
		{name: "lock works again", c: with(free, func(c *Compartment) { c.State, c.Fault = Faulted, LockFault }),
			ev: Event{Kind: LockWorked}, state: Free},
		{name: "sensor fault", c: free, ev: Event{Kind: SensorFailed, Reason: "chatter"}, state: Faulted, traces: []string{"sensor_fault"}},
		{name: "sensor recovers", c: with(free, func(c *Compartment) { c.State, c.Fault = Faulted, SensorFault }),
			ev: Event{Kind: SensorOK}, state: Free, traces: []string{"sensor_recovered"}},
		{name: "a sensor's recovery does not clear a stray parcel",
			c:  with(free, func(c *Compartment) { c.State, c.Fault = Faulted, ParcelFault }),
			ev: Event{Kind: SensorOK}, state: Faulted, traces: []string{"sensor_recovered"}},
		{name: "enable clears a fault (the stray parcel is gone)", c: with(free, func(c *Compartment) { c.State, c.Fault = Faulted, ParcelFault }),
			ev: Event{Kind: Enable}, state: Free, traces: []string{"parcel_missing", "compartment_enabled"}},
		{name: "expire", c: occupied, ev: Event{Kind: Expire, ParcelID: "P", ParcelSeq: 7}, state: Expired, traces: []string{"pickup_expired"}},
		{name: "expire of another parcel", c: occupied, ev: Event{Kind: Expire, ParcelID: "P", ParcelSeq: 6}, state: Occupied},
		{name: "boot: release whose door never opened",
			c: with(occupied, func(c *Compartment) { c.Session = pick }), ev: Event{Kind: Boot, Present: true, HasOccupancy: true, Known: true},
			state: Occupied, traces: []string{"release_interrupted"}, effects: []EffectKind{ReturnUse}},
		{name: "boot: door used while down (hole 5)",
			c: with(occupied, func(c *Compartment) { c.Session = pick }), ev: Event{Kind: Boot, Present: false, HasOccupancy: true, Known: true},
			state: Free, traces: []string{"door_opened", "picked_up"}, effects: []EffectKind{ParcelGone}},
		{name: "boot: stray parcel", c: free, ev: Event{Kind: Boot, Present: true, HasOccupancy: true, Known: true},
			state: Faulted, traces: []string{"parcel_found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Step(tc.c, tc.ev)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				if r.Next != tc.c || len(r.Traces) > 0 || len(r.Effects) > 0 {
					t.Fatalf("a refused step changed something: %+v", r)
				}
				return
			}
			if r.Next.State != tc.state {
				t.Errorf("state = %v, want %v", r.Next.State, tc.state)
			}
			if got := types(r); !slices.Equal(got, tc.traces) {
				t.Errorf("traces = %v, want %v", got, tc.traces)
			}
			if got := kinds(r); !slices.Equal(got, tc.effects) {
				t.Errorf("effects = %v, want %v", got, tc.effects)
			}
			// Every step leaves the facts consistent with the state.
			n := r.Next
			if (n.State == Faulted) != (n.Fault != NoFault) || (n.ParcelID != "" && !n.State.HoldsParcel()) {
				t.Errorf("inconsistent: %+v", n)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// Every state, fault, action and event kind has a name.
func TestNames(t *testing.T) {
	for k := Release; k <= Boot; k++ {
		if s := k.String(); s == "" || s[0] == 'K' {
			t.Errorf("kind %d has no name", k)
		}
	}
	if NoFault.String() != "none" || NoAction.String() != "none" || Faulted.String() != "fault" {
		t.Error("names")
	}
}
