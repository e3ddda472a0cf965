// Package fsm is the compartment state machine: the locker's states,
// faults, actions and trace types, and Step, the one pure function that
// computes what a compartment becomes when something happens to it —
// its next state, the traces to record and the effects on grants and
// hardware. Every handler of the controller goes through Step, so that
// which doors may open when, and what is recorded for every parcel, can be
// read here, in one place (docs/invariants.md names the promises).
//
// Step does no I/O and reads no clock: the controller reads the facts
// (stored compartment, sensors, the time), calls Step, and then writes
// the result, its traces and its effects in one transaction, and fires a
// coil only after that transaction committed.
package fsm

import (
	"errors"
	"fmt"
	"time"

	"github.com/openlocker/locker/controller/wire"
)

// State is a compartment's state as docs/protocol.md names it ("disabled" is a
// flag on top: see Compartment.Disabled).
type State string

// The states.
const (
	Free     State = "free"     // empty, and no deposit grant in force names it
	Reserved State = "reserved" // empty, and a deposit grant in force names it
	Occupied State = "occupied" // holds a deposited parcel
	Expired  State = "expired"  // holds a parcel whose pickup grant ended
	Faulted  State = "fault"    // out of use until the cause is gone (Fault says which)
)

func (s State) String() string { return string(s) }

// Empty says whether s is one of the states of an empty compartment.
func (s State) Empty() bool { return s == Free || s == Reserved }

// HoldsParcel says whether s is one of the states of a compartment that
// holds a deposited parcel.
func (s State) HoldsParcel() bool { return s == Occupied || s == Expired }

// Fault is why a compartment is in state Faulted.
type Fault string

// The faults.
const (
	NoFault     Fault = ""
	LockFault   Fault = "lock"   // its door did not open after a release
	SensorFault Fault = "sensor" // a sensor of it cannot be trusted
	ParcelFault Fault = "parcel" // a parcel is in it that no deposit put there
)

func (f Fault) String() string {
	if f == NoFault {
		return "none"
	}
	return string(f)
}

// Action is what a release is for.
type Action string

// The actions.
const (
	NoAction Action = ""
	Deposit  Action = "deposit"
	Pickup   Action = "pickup"
	Reclaim  Action = "reclaim"
	Service  Action = "service"  // a technician's service code or menu
	Command  Action = "command"  // a signed command from the central
	SelfTest Action = "selftest" // the self-test
)

func (a Action) String() string {
	if a == NoAction {
		return "none"
	}
	return string(a)
}

// TakesParcel says whether a release for a is meant to empty the compartment.
func (a Action) TakesParcel() bool { return a == Pickup || a == Reclaim }

// UseAtRelease says whether a release for a takes its grant's use (given
// back when the door never opened): a pickup, a reclaim, and a service
// code, one use per door it opens.
func (a Action) UseAtRelease() bool { return a.TakesParcel() || a == Service }

// TraceType is the type of a recorded trace.
type TraceType string

// The trace types the state machine records (the controller records a few
// more that concern no compartment: started, keypad_lockout, …).
const (
	LockReleased       TraceType = "lock_released"
	DoorOpened         TraceType = "door_opened"
	DoorClosed         TraceType = "door_closed"
	DoorForced         TraceType = "door_forced"
	Deposited          TraceType = "deposited"
	DepositCancelled   TraceType = "deposit_cancelled"
	PickedUp           TraceType = "picked_up"
	Reclaimed          TraceType = "reclaimed"
	PickupIncomplete   TraceType = "pickup_incomplete"
	PickupExpired      TraceType = "pickup_expired"
	ParcelFound        TraceType = "parcel_found"
	ParcelMissing      TraceType = "parcel_missing"
	LockFaulted        TraceType = "lock_fault"
	SensorFaulted      TraceType = "sensor_fault"
	SensorRecovered    TraceType = "sensor_recovered"
	ReleaseInterrupted TraceType = "release_interrupted"
	Disabled           TraceType = "compartment_disabled"
	Enabled            TraceType = "compartment_enabled"

	// The controller's own, of no one compartment's state.
	Started          TraceType = "started"
	GrantRejected    TraceType = "grant_rejected"
	KeypadLockout    TraceType = "keypad_lockout"
	EnvelopeRejected TraceType = "envelope_rejected"
	DoorLeftOpen     TraceType = "door_left_open"
	StorageFaulted   TraceType = "storage_fault"
	OutboxOverflow   TraceType = "outbox_overflow"
	SelfTestDone     TraceType = "selftest"
)

func (t TraceType) String() string { return string(t) }

// Session is the release in progress on a compartment: recorded before the
// coil fires, ended when the door is closed again (or the release failed).
type Session struct {
	GrantID string // the grant, command id or "" (self-test)
	Action  Action // NoAction when there is no session
	Actor   string // masked
	Parcel  string
	At      time.Time
	Opened  bool // the door was seen open since the release
}

// Active says whether a session is in progress.
func (s Session) Active() bool { return s.Action != NoAction }

// Compartment is everything the locker keeps of one compartment.
type Compartment struct {
	Number        int
	Size          string
	State         State
	Disabled      bool
	DoorOpen      bool // last debounced reading
	ParcelPresent bool // last debounced reading (false without a sensor)
	ParcelID      string
	Fault         Fault
	ParcelSeq     int64 // the seq of the trace that put the parcel there (deposited); 0: none
	Missing       bool  // parcel_missing was recorded for the parcel it holds, and not its return
	Session       Session
}

// PublicState is the state as docs/protocol.md names it.
func (c Compartment) PublicState() string {
	if c.Disabled {
		return "disabled"
	}
	return c.State.String()
}

// Kind is what happened.
type Kind int

// The kinds of event.
const (
	// Release: a lock is to be released for Event.Session (the intent, to
	// be recorded before the coil fires).
	Release Kind = iota + 1
	// DoorOpen, DoorClose: the door sensor's debounced reading changed.
	// DoorClose carries the occupancy sensor's reading at the close.
	DoorOpen
	DoorClose
	// DoorDoubted: the door read closed too soon after it opened for a
	// release: the sensor contradicts the lock and is not believed.
	DoorDoubted
	// ParcelChange: the occupancy sensor's reading changed.
	ParcelChange
	// LockWorked, LockFailed: the hardware's verdict on a release.
	LockWorked
	LockFailed
	// SensorFailed, SensorOK: a sensor cannot be trusted, or reads sanely again.
	SensorFailed
	SensorOK
	// Enable, Disable: a technician or the central says so.
	Enable
	Disable
	// Expire: the pickup grant of the parcel in the compartment ended.
	Expire
	// Reserve, Unreserve: a deposit grant in force names the compartment,
	// or no longer does.
	Reserve
	Unreserve
	// Boot: the sensors' readings at start-up, to be reconciled with what
	// was stored before the power went.
	Boot
	// Judge: compare the occupancy reading noted quietly with what the
	// compartment should hold, and report the difference.
	Judge
	// LateOpen: the door opened after its release had ended in a lock
	// fault whose outcome the hardware could not see (a lock board's reply
	// lost, its status read too late): Event.Session is that release's
	// session, which the opening belongs to (not a forced door).
	LateOpen
)

var kindNames = [...]string{Release: "release", DoorOpen: "door open", DoorClose: "door close",
	DoorDoubted: "door doubted", ParcelChange: "parcel change", LockWorked: "lock worked", LockFailed: "lock failed",
	SensorFailed: "sensor failed", SensorOK: "sensor ok", Enable: "enable", Disable: "disable", Expire: "expire",
	Reserve: "reserve", Unreserve: "unreserve", Boot: "boot", Judge: "judge", LateOpen: "late open"}

func (k Kind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Event is one thing that happened to a compartment.
type Event struct {
	Kind    Kind
	Session Session // Release; LateOpen: the release that failed
	// Open, Present: the sensors' readings (Boot: both; DoorClose and
	// ParcelChange: Present). HasOccupancy: the compartment has an
	// occupancy sensor at all.
	Open, Present, HasOccupancy bool
	// Known: Boot only: the compartment was stored before (not new in the wiring).
	Known bool
	// Reason: LockFailed, SensorFailed, DoorDoubted, Enable, Disable.
	Reason string
	// Who: Enable, Disable, Expire: the grant or command and actor to name
	// in the trace.
	GrantID, Actor, CommandID string
	// ByTechnician: Enable, Disable from the service menu (else the central).
	ByTechnician bool
	// ParcelID: Expire: the parcel the ended pickup grant was for.
	ParcelID string
	// ParcelSeq: Expire: the parcel the ended pickup grant was bound to
	// (0: any parcel with ParcelID).
	ParcelSeq int64
	// AtStart: ParcelChange found at start-up rather than seen happen.
	AtStart bool
	// TakeUse: Release: the release takes one use of its grant.
	TakeUse bool
	// Source: SensorFailed, SensorOK: which sensor ("door", "parcel" for
	// the occupancy sensor, "lock" for the coil; "" as "door"). Still:
	// SensorOK: another source of the compartment is still faulty.
	Source string
	Still  bool
	// Quiet: ParcelChange: note the reading but do not judge it yet (a
	// sensor changing faster than reports are allowed; Judge follows).
	Quiet bool
}

// EffectKind is something a step asks of the grants or the hardware.
type EffectKind int

// The effects.
const (
	// TakeUse: a release takes one use of Effect.GrantID (unlimited grants
	// are not written).
	TakeUse EffectKind = iota + 1
	// ReturnUse: a pickup or reclaim whose door never opened gives its use back.
	ReturnUse
	// DepositDone: a deposit of Effect.GrantID put a parcel in: count the
	// use, and bring its nested pickup grant into force for this
	// compartment, bound to the parcel (the compartment's ParcelSeq, set by
	// the controller from the seq of the `deposited` trace).
	DepositDone
	// ParcelGone: the parcel the compartment held was taken out (picked up
	// or reclaimed): the grant that took it (Effect.GrantID) ends. Other
	// rights issued for that parcel open nothing any more either: they are
	// bound to its parcel id or its ParcelSeq, which the compartment no
	// longer holds.
	ParcelGone
	// Pulse: fire the coil, after the transaction committed.
	Pulse
)

// Effect is one effect of a step.
type Effect struct {
	Kind    EffectKind
	GrantID string
	// ParcelID, ParcelSeq: ParcelGone: the parcel that was taken out.
	ParcelID  string
	ParcelSeq int64
}

// Result is what a step decided.
type Result struct {
	Next    Compartment
	Traces  []wire.Trace // to record in order (seq and time are the recorder's)
	Effects []Effect
	// Finished: the step ended a session whose door was opened (a deposit,
	// pickup, …): Ended is that session, for the display.
	Finished bool
	Ended    Session
}

// Why a release is refused.
var (
	// ErrBusy: a session is in progress on the compartment: a release would
	// erase it (and with it the deposit or pickup it is recording).
	ErrBusy = errors.New("a session is in progress on the compartment")
	// ErrNotEmpty: a deposit may open only an empty compartment in use.
	ErrNotEmpty = errors.New("compartment not ready for a deposit")
	// ErrNoParcel: a pickup or reclaim may open only a compartment that holds a parcel.
	ErrNoParcel = errors.New("no parcel in the compartment")
)

// Step computes what compartment c becomes when ev happens to it. It never
// fails except for a Release that must not happen (ErrBusy, ErrNotEmpty,
// ErrNoParcel): then c is unchanged and nothing is recorded.
func Step(c Compartment, ev Event) (Result, error) {
	m := machine{c: c}
	if err := m.step(ev); err != nil {
		return Result{Next: c}, err
	}
	return Result{Next: m.c, Traces: m.traces, Effects: m.effects, Finished: m.finished, Ended: m.ended}, nil
}

type machine struct {
	c        Compartment
	traces   []wire.Trace
	effects  []Effect
	finished bool
	ended    Session
}

func (m *machine) trace(t wire.Trace) {
	if t.Compartment == 0 {
		t.Compartment = m.c.Number
	}
	m.traces = append(m.traces, t)
}

func (m *machine) effect(e Effect) { m.effects = append(m.effects, e) }

func (m *machine) step(ev Event) error {
	c := &m.c
	s := c.Session
	switch ev.Kind {
	case Release:
		return m.release(ev.Session, ev.TakeUse)
	case DoorOpen:
		if c.DoorOpen {
			return nil
		}
		c.DoorOpen = true
		m.trace(wire.Trace{Type: string(DoorOpened), GrantID: s.GrantID, Actor: s.Actor, Content: "Door " + Two(c.Number) + " opened"})
		if !s.Active() {
			m.trace(wire.Trace{Type: string(DoorForced), Content: "Door " + Two(c.Number) + " opened without a release"})
		}
		c.Session.Opened = s.Active()
	case LateOpen:
		if c.DoorOpen {
			return nil
		}
		if !m.lateOpen(ev.Session) {
			return m.step(Event{Kind: DoorOpen})
		}
	case DoorDoubted:
		m.trace(wire.Trace{Type: string(SensorFaulted), GrantID: s.GrantID, Actor: s.Actor, Reason: ev.Reason,
			Content: "Door sensor " + Two(c.Number) + " contradicts the lock"})
	case DoorClose:
		if !c.DoorOpen {
			return nil
		}
		if ev.HasOccupancy {
			c.ParcelPresent = ev.Present
		}
		c.DoorOpen = false
		m.trace(wire.Trace{Type: string(DoorClosed), GrantID: s.GrantID, Actor: s.Actor, Content: "Door " + Two(c.Number) + " closed"})
		switch {
		case s.Active() && s.Opened:
			m.finish(ev.HasOccupancy)
		case !s.Active() && ev.HasOccupancy:
			// A door nobody was let through (forced, or found open at
			// start-up) closed: what is inside now is what it holds.
			m.stray(false)
		}
	case ParcelChange:
		changed := c.ParcelPresent != ev.Present
		c.ParcelPresent = ev.Present
		if changed && !s.Active() && !ev.Quiet {
			// Nobody was let in: a parcel came or went through a forced door.
			m.stray(ev.AtStart)
		}
	case Judge:
		if !s.Active() {
			m.stray(false)
		}
	case LockWorked:
		if c.State == Faulted && c.Fault == LockFault {
			m.clearFault()
		}
	case LockFailed:
		if c.DoorOpen || !s.Active() {
			return nil // opened after all, or already handled
		}
		if s.Action.UseAtRelease() {
			m.effect(Effect{Kind: ReturnUse, GrantID: s.GrantID})
		}
		c.Session = Session{}
		if c.State.Empty() {
			c.State, c.Fault = Faulted, LockFault
		}
		m.trace(wire.Trace{Type: string(LockFaulted), GrantID: s.GrantID, Actor: s.Actor, Reason: ev.Reason,
			Content: "Door " + Two(c.Number) + " did not open after a release"})
	case SensorFailed, SensorOK:
		what := sourceText(ev.Source) + " " + Two(c.Number)
		tr := wire.Trace{Type: string(SensorFaulted), Reason: ev.Reason, Content: what + " fault: " + ev.Reason}
		if ev.Kind == SensorOK {
			tr = wire.Trace{Type: string(SensorRecovered), Content: what + " reads sanely again"}
		}
		switch {
		case ev.Kind == SensorFailed && c.State.Empty() && !s.Active():
			c.State, c.Fault = Faulted, SensorFault
		case ev.Kind == SensorOK && !ev.Still && c.State == Faulted && c.Fault == SensorFault:
			m.clearFault()
		}
		m.trace(tr)
	case Enable, Disable:
		c.Disabled = ev.Kind == Disable
		if ev.Kind == Enable && c.State == Faulted { // the technician vouches for it
			m.clearFault()
		}
		typ, verb := Enabled, " enabled"
		if ev.Kind == Disable {
			typ, verb = Disabled, " disabled"
		}
		content := "Compartment " + Two(c.Number) + verb + " by a technician"
		if !ev.ByTechnician {
			why := ev.Reason
			if why == "" {
				why = "remote command"
			}
			content = "Compartment " + Two(c.Number) + verb + ": " + why
		}
		m.trace(wire.Trace{Type: string(typ), GrantID: ev.GrantID, Actor: ev.Actor, CommandID: ev.CommandID,
			Reason: ev.Reason, Content: content})
	case Expire:
		if c.State != Occupied || c.ParcelID != ev.ParcelID || (ev.ParcelSeq != 0 && c.ParcelSeq != ev.ParcelSeq) || s.Active() {
			return nil
		}
		c.State = Expired
		m.trace(wire.Trace{Type: string(PickupExpired), GrantID: ev.GrantID, Actor: ev.Actor, ParcelID: ev.ParcelID,
			Content: ParcelText(ev.ParcelID) + " not picked up in time from compartment " + Two(c.Number)})
	case Reserve:
		if c.State == Free {
			c.State = Reserved
		}
	case Unreserve:
		if c.State == Reserved {
			c.State = Free
		}
	case Boot:
		m.boot(ev)
	default:
		return fmt.Errorf("fsm: unknown event %v", ev.Kind)
	}
	return nil
}

// lateOpen credits the door's opening to failed, the session of a release
// that ended in a lock fault before its door was seen open: the lock did
// open, later than the hardware could tell (I15: an unlock whose reply was
// lost is not sent again; its effect is read from the board's next
// status). The session goes on as if the release had been confirmed: a
// lock fault it left is cleared, a pickup takes its use again (the lock
// fault gave it back), and the door's close records the deposit or pickup.
// It reports false, changing nothing, when the compartment is no longer
// fit for that session (another session, a parcel state that changed, a
// technician's disable): the opening is then a forced door's.
func (m *machine) lateOpen(failed Session) bool {
	c := &m.c
	if c.Session.Active() || !failed.Active() || c.Disabled {
		return false
	}
	next := *c
	if next.State == Faulted && next.Fault == LockFault {
		switch {
		case next.ParcelID != "":
			next.State, next.Fault = Occupied, NoFault
		case !next.ParcelPresent:
			next.State, next.Fault = Free, NoFault
		}
	}
	switch {
	case failed.Action == Deposit && (!next.State.Empty() || next.ParcelPresent):
		return false
	case failed.Action.TakesParcel() && !next.State.HoldsParcel():
		return false
	}
	*c = next
	c.DoorOpen = true
	failed.Opened = true
	c.Session = failed
	if failed.Action.UseAtRelease() {
		m.effect(Effect{Kind: TakeUse, GrantID: failed.GrantID})
	}
	m.trace(wire.Trace{Type: string(DoorOpened), GrantID: failed.GrantID, Actor: failed.Actor,
		Content: "Door " + Two(c.Number) + " opened late, for its release (after its lock_fault)"})
	return true
}

// release records the intent to open the compartment for s. A session in
// progress is never replaced: its close is what records the deposit or
// pickup it is for.
func (m *machine) release(s Session, takeUse bool) error {
	c := &m.c
	if c.Session.Active() {
		return ErrBusy
	}
	switch {
	case s.Action == Deposit && (!c.State.Empty() || c.Disabled || c.ParcelPresent):
		// (A parcel the sensor reads in an empty compartment is a
		// stranger's, not yet judged: no deposit records it as its own.)
		return ErrNotEmpty
	case s.Action.TakesParcel() && (!c.State.HoldsParcel() || c.Disabled):
		return ErrNoParcel
	}
	// A door that is open already (forced, or a sensor that says so) is
	// open for this session: its close ends it.
	s.Opened = c.DoorOpen
	c.Session = s
	if takeUse {
		m.effect(Effect{Kind: TakeUse, GrantID: s.GrantID})
	}
	m.trace(wire.Trace{Type: string(LockReleased), GrantID: s.GrantID, Actor: s.Actor, ParcelID: s.Parcel,
		Content: "Lock " + Two(c.Number) + " released for " + string(s.Action)})
	m.effect(Effect{Kind: Pulse})
	return nil
}

// finish ends the session of a compartment whose door was opened by a
// release and has now been closed: the heart of deposit and pickup.
// Without an occupancy sensor, a deposit closed again counts as done, and
// a pickup opened and closed again as emptied.
func (m *machine) finish(hasSensor bool) {
	c := &m.c
	s := c.Session
	n := c.Number
	c.Session = Session{}
	m.finished, m.ended = true, s
	switch s.Action {
	case Service, Command, SelfTest:
		// These openings move no parcel on record: one that moved all the
		// same (put in or taken out by whoever stood there) is reported.
		if hasSensor {
			m.stray(false)
		}
	case Deposit:
		if hasSensor && !c.ParcelPresent {
			m.trace(wire.Trace{Type: string(DepositCancelled), GrantID: s.GrantID, Actor: s.Actor, ParcelID: s.Parcel,
				Content: "Door " + Two(n) + " closed with nothing inside"})
			c.State = Free // the reservations make it reserved again where a grant names it
			return
		}
		c.State, c.ParcelID, c.Missing = Occupied, s.Parcel, false
		if !hasSensor {
			c.ParcelPresent = false
		}
		m.effect(Effect{Kind: DepositDone, GrantID: s.GrantID})
		m.trace(wire.Trace{Type: string(Deposited), GrantID: s.GrantID, Actor: s.Actor, ParcelID: s.Parcel,
			Content: ParcelText(s.Parcel) + " deposited in compartment " + Two(n)})
	case Pickup, Reclaim:
		if hasSensor && c.ParcelPresent {
			m.trace(wire.Trace{Type: string(PickupIncomplete), GrantID: s.GrantID, Actor: s.Actor, ParcelID: c.ParcelID,
				Content: "Door " + Two(n) + " closed with the parcel still inside"})
			return
		}
		typ, verb := PickedUp, " picked up from compartment "
		if s.Action == Reclaim {
			typ, verb = Reclaimed, " reclaimed from compartment "
		}
		m.effect(Effect{Kind: ParcelGone, GrantID: s.GrantID, ParcelID: c.ParcelID, ParcelSeq: c.ParcelSeq})
		parcel := c.ParcelID
		c.State, c.ParcelID, c.ParcelSeq, c.Missing = Free, "", 0, false
		m.trace(wire.Trace{Type: string(typ), GrantID: s.GrantID, Actor: s.Actor, ParcelID: parcel,
			Content: ParcelText(parcel) + verb + Two(n)})
	}
}

// clearFault ends state Faulted: the compartment is occupied again if it
// holds a deposited parcel, free if it is empty, and out of use for a
// parcel that no deposit put there if its sensor reads one (an enable does
// not turn a stranger's parcel into a free compartment).
func (m *machine) clearFault() {
	c := &m.c
	switch {
	case c.ParcelID != "":
		c.State, c.Fault = Occupied, NoFault
	case c.ParcelPresent:
		if c.Fault != ParcelFault {
			m.trace(wire.Trace{Type: string(ParcelFound),
				Content: "A parcel is in compartment " + Two(c.Number) + ", which should be empty"})
		}
		c.State, c.Fault = Faulted, ParcelFault
	default:
		if c.Fault == ParcelFault {
			m.trace(wire.Trace{Type: string(ParcelMissing),
				Content: "The parcel found in compartment " + Two(c.Number) + " is gone"})
		}
		c.State, c.Fault = Free, NoFault
	}
}

// stray reports a parcel where none should be — put in through a forced
// door, or there when the locker started — and takes the compartment out
// of use (fault "parcel") until it is gone or a technician enables it: no
// deposit may open it and record someone else's parcel as its own. Such a
// parcel taken out again is reported gone, and the compartment is free.
// A parcel gone from a compartment that should hold one is reported too;
// the compartment stays occupied (a sensor may be wrong, and no other
// parcel can be put in it), and the parcel's own pickup code still opens
// it. It is reported missing once (Missing), and its return is reported.
func (m *machine) stray(atStart bool) {
	c := &m.c
	switch {
	case c.ParcelPresent && (c.State.Empty() || (c.State == Faulted && c.Fault != ParcelFault && c.ParcelID == "")):
		// (A stray parcel outranks a lock or sensor fault: once it is gone
		// the compartment is free, and a faulty lock shows again at its
		// next release.)
		when := "appeared, without a deposit,"
		if atStart {
			when = "found at start-up"
		}
		c.State, c.Fault = Faulted, ParcelFault
		m.trace(wire.Trace{Type: string(ParcelFound),
			Content: "A parcel " + when + " in compartment " + Two(c.Number) + ", which should be empty"})
	case !c.ParcelPresent && c.State == Faulted && c.Fault == ParcelFault:
		c.State, c.Fault = Free, NoFault
		m.trace(wire.Trace{Type: string(ParcelMissing),
			Content: "The parcel found in compartment " + Two(c.Number) + " is gone"})
	case !c.ParcelPresent && c.State.HoldsParcel() && !c.Missing:
		c.Missing = true
		when := "gone, without a pickup,"
		if atStart {
			when = "missing at start-up"
		}
		m.trace(wire.Trace{Type: string(ParcelMissing), ParcelID: c.ParcelID,
			Content: ParcelText(c.ParcelID) + " " + when + " from compartment " + Two(c.Number)})
	case c.ParcelPresent && c.State.HoldsParcel() && c.Missing:
		c.Missing = false
		m.trace(wire.Trace{Type: string(ParcelFound), ParcelID: c.ParcelID,
			Content: ParcelText(c.ParcelID) + " is back in compartment " + Two(c.Number)})
	}
}

// boot reconciles the stored compartment with its sensors at start-up,
// without opening anything.
func (m *machine) boot(ev Event) {
	c := &m.c
	s := c.Session
	parcelMoved := ev.HasOccupancy && ev.Present != c.ParcelPresent
	if ev.HasOccupancy {
		c.ParcelPresent = ev.Present
		if !ev.Open && !s.Active() {
			m.stray(true) // a session in progress explains it; its close decides
		}
	}
	if ev.Known && ev.Open != c.DoorOpen {
		typ, what := DoorClosed, "closed"
		if ev.Open {
			typ, what = DoorOpened, "open"
		}
		m.trace(wire.Trace{Type: string(typ), Content: "Door " + Two(c.Number) + " found " + what + " at start-up"})
		if ev.Open {
			c.Session.Opened = s.Active()
			if !s.Active() {
				m.trace(wire.Trace{Type: string(DoorForced), Content: "Door " + Two(c.Number) + " was opened without a release while the locker was down"})
			}
		}
	}
	c.DoorOpen = ev.Open
	if !s.Active() || ev.Open {
		return
	}
	switch {
	case s.Opened:
		// The door was opened and closed while the daemon was down:
		// finish the flow as if the close had been seen.
		m.finish(ev.HasOccupancy)
	case parcelMoved:
		// The power went between the coil and the door-open record, and
		// the person used the door meanwhile: the parcel moved, so the
		// door did open. Finish the flow on what the sensor says.
		m.trace(wire.Trace{Type: string(DoorOpened), GrantID: s.GrantID, Actor: s.Actor,
			Content: "Door " + Two(c.Number) + " was opened while the locker was down"})
		c.Session.Opened = true
		m.finish(true)
	default:
		// A release was recorded but the door never opened (as far as the
		// sensors can tell): the power went before or during the pulse.
		// Give back a pickup's use and end the session.
		if s.Action.UseAtRelease() {
			m.effect(Effect{Kind: ReturnUse, GrantID: s.GrantID})
		}
		c.Session = Session{}
		m.trace(wire.Trace{Type: string(ReleaseInterrupted), GrantID: s.GrantID, Actor: s.Actor,
			Content: "The release of door " + Two(c.Number) + " was cut short by a restart; nothing was opened"})
	}
}

// sourceText names the sensor of a sensor fault in a trace's content.
func sourceText(source string) string {
	switch source {
	case "parcel":
		return "Occupancy sensor"
	case "lock":
		return "Lock coil"
	case "board":
		return "Lock board of compartment"
	}
	return "Door sensor"
}

// Two is a compartment number in two digits, as the display shows it.
func Two(n int) string { return fmt.Sprintf("%02d", n) }

// ParcelText names a parcel in a trace's content.
func ParcelText(id string) string {
	if id == "" {
		return "Parcel"
	}
	return "Parcel " + id
}
