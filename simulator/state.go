package simulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// stateFile is the JSON of the state file.
type stateFile struct {
	Version      int              `json:"version"`
	Compartments []stateFileEntry `json:"compartments"`
}

type stateFileEntry struct {
	Number  int    `json:"number"`
	Door    string `json:"door"`
	Latched bool   `json:"latched"`
	Parcel  bool   `json:"parcel"`
	Fault   Fault  `json:"fault"`
}

const stateVersion = 1

// load reads the state file into the compartments; a missing file leaves
// them as they are.
func (c *Cabinet) load() error {
	data, err := os.ReadFile(c.statePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("simulator: reading state file: %w", err)
	}
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s", ErrCorruptState, c.statePath, fmt.Sprintf(format, args...))
	}
	var sf stateFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sf); err != nil {
		return corrupt("%v", err)
	}
	if dec.More() {
		return corrupt("data after the JSON object")
	}
	if sf.Version != stateVersion {
		return corrupt("version %d, want %d", sf.Version, stateVersion)
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range sf.Compartments {
		if _, err := ParseFault(string(e.Fault)); err != nil {
			return corrupt("compartment %d: %v", e.Number, err)
		}
		if e.Door != DoorOpen && e.Door != DoorClosed {
			return corrupt("compartment %d: door %q", e.Number, e.Door)
		}
		k, err := c.compLocked(e.Number)
		if err != nil {
			c.log.Warn("simulator: the state file has a compartment the wiring has not", "compartment", e.Number, "file", c.statePath)
			continue
		}
		k.open = e.Door == DoorOpen
		// No coil is energised at start: a closed door is latched, an open
		// one is not.
		k.latched = !k.open
		k.hasParcel = e.Parcel
		k.fault = e.Fault
		k.movedAt = now.Add(-bounceWindow)
	}
	return nil
}

// persist writes the state file if the state changed since it was last
// written. It must be called without holding mu.
func (c *Cabinet) persist() error {
	if c.statePath == "" {
		return nil
	}
	c.persistMu.Lock()
	defer c.persistMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.saveLocked()
}

// saveLocked writes the physical state if it changed since the last write.
// c.persistMu and c.mu are held: while the file is written no pin can be
// read, so nothing the daemon sees is newer than what a restart finds.
func (c *Cabinet) saveLocked() error {
	gen := c.stateGen
	if c.statePath == "" || gen == c.savedGen {
		return nil
	}
	sf := stateFile{Version: stateVersion}
	for _, k := range c.comps {
		s := k.stateLocked()
		sf.Compartments = append(sf.Compartments, stateFileEntry{Number: s.Number, Door: s.Door, Latched: s.Latched, Parcel: s.Parcel, Fault: s.Fault})
	}
	data, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return fmt.Errorf("simulator: encoding state: %w", err)
	}
	if err := writeFileAtomic(c.statePath, append(data, '\n')); err != nil {
		return fmt.Errorf("simulator: writing state file %s: %w", c.statePath, err)
	}
	c.savedGen = gen
	return nil
}

// writeFileAtomic replaces path with data: a temporary file in the same
// folder, then a rename. A crash of the process leaves either the old or
// the new file.
//
// There is no fsync: the simulated cabinet must outlive a kill -9 of
// locker-sim, which the page cache survives, not a power cut of the laptop.
// The write happens with mu held (no pin shows a change before it is
// written), and two fsyncs there stalled every pin for as long as the disk
// took — over a second on a busy machine — so that the simulator itself
// saw a coil energised past its cap and a keypad left unscanned.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
