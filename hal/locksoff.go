package hal

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	"periph.io/x/conn/v3"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"

	"github.com/openlocker/locker/hal/wiring"
)

// Locks holds the lock outputs that LocksOff drove off. Its Halt drives
// them off again.
type Locks struct {
	coils []*Solenoid
}

var _ conn.Resource = (*Locks)(nil)

// LocksOff drives the lock output of every compartment of the wiring to its
// coil-off level, and touches nothing else: the first hardware step of a
// daemon, before anything that may fail (the database, the rest of the
// wiring's pins), so that no start-up failure leaves a lock output floating
// or at a level a previous process left. Board pins come from pins; the
// expanders that drive locks are initialised with their lock outputs
// latched off, and read back.
//
// It goes on past a pin it cannot drive (a missing pin, an expander that
// does not answer): it returns the outputs it drove, and the failures
// joined. New drives the same outputs off again and owns them from then
// on; Halt the returned Locks on any path that ends before New succeeds.
func LocksOff(w *wiring.Wiring, pins PinSource, opts Options) (*Locks, error) {
	if err := checkArgs(w, pins); err != nil {
		return nil, err
	}
	buses := opts.Buses
	if buses == nil {
		buses = func(name string) (i2c.Bus, error) { return i2creg.Open(name) }
	}
	presets := lockPresets(w)
	chips := map[string]*MCP23017{}
	failed := map[string]bool{} // expanders that did not answer
	l := &Locks{}
	var errs []error
	wcs := slices.Clone(w.Compartments)
	slices.SortFunc(wcs, func(a, b wiring.Compartment) int { return a.Number - b.Number })
	for _, c := range wcs {
		if c.Bus != "" {
			continue // an RS485 board times its own coils: nothing is on
		}
		name := "lock of compartment " + strconv.Itoa(c.Number)
		var pin gpio.PinOut
		if ep, ok := w.ExpanderPin(c.Lock); ok {
			e := ep.Expander
			chip := chips[e.Name]
			if chip == nil && !failed[e.Name] {
				b, err := buses(e.Bus)
				if err == nil {
					pre := presets[e.Name]
					chip, err = newMCP23017(e.Name, b, e.Address, pre.olat, pre.outs)
				}
				if err != nil {
					failed[e.Name] = true
					errs = append(errs, fmt.Errorf("hal: locks on expander %s: %w", e.Name, err))
				}
				chips[e.Name] = chip
			}
			if chip == nil {
				continue
			}
			pin = chip.Pin(ep.Index())
		} else if p := pins(c.Lock); p != nil {
			pin = p
		} else {
			errs = append(errs, fmt.Errorf("%w %q (%s)", ErrNoPin, c.Lock, name))
			continue
		}
		s, err := NewSolenoid(name, pin, w.Locks.ActiveLow)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l.coils = append(l.coils, s)
	}
	return l, errors.Join(errs...)
}

// String implements conn.Resource.
func (l *Locks) String() string { return "locks (" + strconv.Itoa(len(l.coils)) + " driven off)" }

// Len is the number of lock outputs driven off.
func (l *Locks) Len() int { return len(l.coils) }

// Halt drives every lock output off again. It implements conn.Resource
// and is safe to call on a nil *Locks.
func (l *Locks) Halt() error {
	if l == nil {
		return nil
	}
	var errs []error
	for _, s := range l.coils {
		errs = append(errs, s.Halt())
	}
	return errors.Join(errs...)
}
