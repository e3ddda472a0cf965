package fsm

import (
	"slices"
	"testing"
)

// TestLateOpen: a door opening credited to a release hal gave up on
// (LateOpen) goes on as that release's session when the compartment still
// fits it, and is a forced door's otherwise.
func TestLateOpen(t *testing.T) {
	dep := Session{GrantID: "g", Action: Deposit, Actor: "134****8888", Parcel: "P"}
	pick := Session{GrantID: "p", Action: Pickup}
	for _, tc := range []struct {
		name    string
		c       Compartment
		ev      Event
		state   State
		traces  []string
		effects []EffectKind
		session bool // the session goes on, opened
	}{
		{"a deposit's lock fault is cleared", Compartment{Number: 3, State: Faulted, Fault: LockFault}, Event{Kind: LateOpen, Session: dep},
			Free, []string{"door_opened"}, nil, true},
		{"a pickup takes its use again", Compartment{Number: 3, State: Occupied, ParcelID: "P", ParcelPresent: true}, Event{Kind: LateOpen, Session: pick},
			Occupied, []string{"door_opened"}, []EffectKind{TakeUse}, true},
		{"a pickup of a parcel gone meanwhile: forced", Compartment{Number: 3, State: Free}, Event{Kind: LateOpen, Session: pick},
			Free, []string{"door_opened", "door_forced"}, nil, false},
		{"a deposit into a compartment that holds a parcel: forced", Compartment{Number: 3, State: Occupied, ParcelID: "Q"}, Event{Kind: LateOpen, Session: dep},
			Occupied, []string{"door_opened", "door_forced"}, nil, false},
		{"a disabled compartment: forced", Compartment{Number: 3, State: Faulted, Fault: LockFault, Disabled: true}, Event{Kind: LateOpen, Session: dep},
			Faulted, []string{"door_opened", "door_forced"}, nil, false},
		{"another session in progress: its opening", Compartment{Number: 3, State: Free, Session: Session{GrantID: "c", Action: Command}}, Event{Kind: LateOpen, Session: dep},
			Free, []string{"door_opened"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Step(tc.c, tc.ev)
			if err != nil {
				t.Fatal(err)
			}
			if r.Next.State != tc.state || !slices.Equal(types(r), tc.traces) || !slices.Equal(kinds(r), tc.effects) {
				t.Errorf("state %s traces %v effects %v, want %s %v %v", r.Next.State, types(r), kinds(r), tc.state, tc.traces, tc.effects)
			}
			if !r.Next.DoorOpen || r.Next.Session.Active() != tc.session || (tc.session && !r.Next.Session.Opened) {
				t.Errorf("door open %v, session %+v", r.Next.DoorOpen, r.Next.Session)
			}
			if tc.session && !tc.c.Session.Active() && r.Traces[0].GrantID != tc.ev.Session.GrantID {
				t.Errorf("door_opened names grant %q, want %q", r.Traces[0].GrantID, tc.ev.Session.GrantID)
			}
		})
	}
}
