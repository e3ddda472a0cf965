package wiring

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults and limits applied by Parse.
const (
	DefaultPulse    = 300 * time.Millisecond
	DefaultDebounce = 30 * time.Millisecond
	DefaultPoll     = 5 * time.Millisecond
	DefaultPull     = "up"
	DefaultDisplay  = DisplayHD44780

	DefaultCooldown       = time.Second
	DefaultMaxEnergised   = 1
	DefaultGap            = 100 * time.Millisecond
	DefaultConfirm        = 2 * time.Second
	DefaultChatterChanges = 8
	DefaultChatterWindow  = 2 * time.Second
	DefaultExpander       = "mcp23017"

	MaxCooldown       = time.Minute
	MaxMaxEnergised   = 16
	MaxGap            = 10 * time.Second
	MinConfirm        = 50 * time.Millisecond
	MaxConfirm        = 30 * time.Second
	MinChatterChanges = 2
	MaxChatterChanges = 1000
	MinChatterWindow  = 100 * time.Millisecond
	MaxChatterWindow  = time.Minute

	MinDebounce = time.Millisecond
	MaxDebounce = time.Second
	MinPoll     = time.Millisecond
	MaxPoll     = 100 * time.Millisecond
)

// DefaultLayout is the key layout of a common 4x4 membrane keypad, by row.
var DefaultLayout = []string{"123A", "456B", "789C", "*0#D"}

// Keys are the keys a keypad layout may contain.
const Keys = "0123456789*#ABCD"

// Sizes are the compartment sizes, ascending.
var Sizes = []string{"S", "M", "L", "XL"}

// Load reads and parses the wiring file at path; errors name the file by its
// base name and line.
func Load(path string) (*Wiring, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, filepath.Base(path))
}

// Parse decodes a YAML wiring, fills in the defaults and validates it.
// source names the data in errors ("cabinet.yaml"). Every error is one line
// of the form "source:LINE: problem".
func Parse(data []byte, source string) (*Wiring, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s: empty wiring file", source)
	}
	// The node tree gives line numbers; the strict decoder the values.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(source, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, fmt.Errorf("%s: empty wiring file", source)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: not a wiring: want a mapping with name, locks, sensors, keypad, display and compartments", source, root.Line)
	}
	// The decoder drops an empty list item ("-" and nothing else) without
	// a word: a technician who left one meant something.
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, seq := root.Content[i].Value, root.Content[i+1]
		if seq.Kind != yaml.SequenceNode {
			continue
		}
		for n, it := range seq.Content {
			if it.Kind == yaml.ScalarNode && it.Tag == "!!null" {
				return nil, fmt.Errorf("%s:%d: %s: item %d is empty", source, it.Line, key, n+1)
			}
		}
	}
	w := new(Wiring)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(w); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(source, err)
	}
	v := &validator{source: source, root: root}
	v.defaults(w)
	if err := v.validate(w); err != nil {
		return nil, err
	}
	sortCompartments(w)
	return w, nil
}

// Validate checks a complete wiring, such as one returned by Parse or built
// in code with every default filled in. Its errors carry no line numbers.
func (w *Wiring) Validate() error {
	if w == nil {
		return errors.New("no wiring")
	}
	return (&validator{}).validate(w)
}

// validator checks a decoded wiring. root, when set, is the YAML mapping the
// wiring came from and gives the errors their line numbers.
type validator struct {
	source string
	root   *yaml.Node
}

// errf formats an error at the line of the node at path (mapping keys as
// strings, sequence indexes as ints), or of its nearest existing ancestor.
func (v *validator) errf(path []any, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	line := v.line(path...)
	switch {
	case v.source != "" && line > 0:
		return fmt.Errorf("%s:%d: %s", v.source, line, msg)
	case v.source != "":
		return fmt.Errorf("%s: %s", v.source, msg)
	}
	return errors.New(msg)
}

// line returns the line of the node at path: for a mapping entry the line of
// its key, for a sequence item the item's line. A missing node falls back to
// its nearest ancestor; 0 without a node tree.
func (v *validator) line(path ...any) int {
	line, _ := v.lookup(path)
	return line
}

// has reports whether the node at path is written in the file.
func (v *validator) has(path ...any) bool {
	_, found := v.lookup(path)
	return found
}

// lookup walks path from the root (mapping keys as strings, sequence indexes
// as ints) and returns the line of the deepest node reached and whether
// the whole path was found.
func (v *validator) lookup(path []any) (line int, found bool) {
	n := v.root
	if n == nil {
		return 0, false
	}
	line = n.Line
	for _, p := range path {
		var next *yaml.Node
		switch p := p.(type) {
		case string:
			for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					line, next = n.Content[i].Line, n.Content[i+1]
					break
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && p >= 0 && p < len(n.Content) {
				next = n.Content[p]
				line = next.Line
			}
		}
		if next == nil {
			return line, false
		}
		n = next
	}
	return line, true
}

// defaults fills in what the file leaves out. A duration written as zero
// stays zero (and fails validation); only a missing one gets its default.
func (v *validator) defaults(w *Wiring) {
	if w.Locks.Pulse == 0 && !v.has("locks", "pulse") {
		w.Locks.Pulse = DefaultPulse
	}
	if w.Locks.Cooldown == 0 && !v.has("locks", "cooldown") {
		w.Locks.Cooldown = DefaultCooldown
	}
	if w.Locks.MaxEnergised == 0 && !v.has("locks", "max_energised") {
		w.Locks.MaxEnergised = DefaultMaxEnergised
	}
	if w.Locks.Gap == 0 && !v.has("locks", "gap") {
		w.Locks.Gap = DefaultGap
	}
	if w.Locks.Confirm == 0 && !v.has("locks", "confirm") {
		w.Locks.Confirm = DefaultConfirm
	}
	if w.Sensors.ChatterChanges == 0 && !v.has("sensors", "chatter_changes") {
		w.Sensors.ChatterChanges = DefaultChatterChanges
	}
	if w.Sensors.ChatterWindow == 0 && !v.has("sensors", "chatter_window") {
		w.Sensors.ChatterWindow = DefaultChatterWindow
	}
	for i := range w.Expanders {
		if e := &w.Expanders[i]; e.Type == "" && !v.has("expanders", i, "type") {
			e.Type = DefaultExpander
		}
	}
	if w.Sensors.Debounce == 0 && !v.has("sensors", "debounce") {
		w.Sensors.Debounce = DefaultDebounce
	}
	if w.Sensors.Poll == 0 && !v.has("sensors", "poll") {
		w.Sensors.Poll = DefaultPoll
	}
	if w.Sensors.Pull == "" && !v.has("sensors", "pull") {
		w.Sensors.Pull = DefaultPull
	}
	if k := w.Keypad; k != nil && len(k.Layout) == 0 && !v.has("keypad", "layout") {
		k.Layout = slices.Clone(DefaultLayout)
	}
	if d := w.Display; d != nil {
		if d.Type == "" && !v.has("display", "type") {
			d.Type = DefaultDisplay
		}
		if d.Cols == 0 && !v.has("display", "cols") {
			d.Cols = 16
		}
		if d.Rows == 0 && !v.has("display", "rows") {
			d.Rows = 2
		}
	}
}

// pinUse is one use of a pin name, for the duplicate check.
type pinUse struct {
	name string
	role string // "lock of compartment 1", "keypad row 2", …
	ctx  string // where an error is reported: "compartment 1", "keypad", …
	what string // the field, as the error says it: "lock pin", "row 2 pin", …
	path []any
	line int
}

func (v *validator) validate(w *Wiring) error {
	if err := v.locks(w.Locks); err != nil {
		return err
	}
	if err := v.sensors(w.Sensors); err != nil {
		return err
	}
	if w.Locks.Confirm <= w.Sensors.Debounce {
		return v.errf([]any{"locks", "confirm"}, "locks: confirm %v not longer than sensors debounce %v", w.Locks.Confirm, w.Sensors.Debounce)
	}
	if err := v.expanders(w); err != nil {
		return err
	}
	var uses []pinUse
	use := func(name, role, ctx, what string, path ...any) {
		uses = append(uses, pinUse{name: name, role: role, ctx: ctx, what: what, path: path, line: v.line(path...)})
	}
	if err := v.rs485(w); err != nil {
		return err
	}
	if err := v.compartments(w, use); err != nil {
		return err
	}
	if w.Keypad != nil {
		if err := v.keypad(w.Keypad, use); err != nil {
			return err
		}
	}
	if w.Display != nil {
		if err := v.display(w.Display, use); err != nil {
			return err
		}
	}
	// Report the later of two uses of a pin, naming the earlier one.
	slices.SortStableFunc(uses, func(a, b pinUse) int { return a.line - b.line })
	first := make(map[string]pinUse, len(uses))
	for _, u := range uses {
		if err := v.pinName(w, u); err != nil {
			return err
		}
		if prev, ok := first[u.name]; ok {
			at := ""
			if prev.line > 0 {
				at = fmt.Sprintf(" (line %d)", prev.line)
			}
			return v.errf(u.path, "%s: %s %q already used as %s%s", u.ctx, u.what, u.name, prev.role, at)
		}
		first[u.name] = u
	}
	return nil
}

func (v *validator) locks(l Locks) error {
	switch {
	case l.Pulse <= 0 || l.Pulse > MaxPulse:
		return v.errf([]any{"locks", "pulse"}, "locks: pulse %v out of range (want more than 0 and at most %v)", l.Pulse, MaxPulse)
	case l.Cooldown < 0 || l.Cooldown > MaxCooldown:
		return v.errf([]any{"locks", "cooldown"}, "locks: cooldown %v out of range 0s..%v", l.Cooldown, MaxCooldown)
	case l.MaxEnergised < 1 || l.MaxEnergised > MaxMaxEnergised:
		return v.errf([]any{"locks", "max_energised"}, "locks: max_energised %d out of range 1..%d", l.MaxEnergised, MaxMaxEnergised)
	case l.Gap < 0 || l.Gap > MaxGap:
		return v.errf([]any{"locks", "gap"}, "locks: gap %v out of range 0s..%v", l.Gap, MaxGap)
	case l.Confirm < MinConfirm || l.Confirm > MaxConfirm:
		return v.errf([]any{"locks", "confirm"}, "locks: confirm %v out of range %v..%v", l.Confirm, MinConfirm, MaxConfirm)
	}
	return nil
}

func (v *validator) sensors(s Sensors) error {
	switch s.Pull {
	case "up", "down", "none":
	default:
		return v.errf([]any{"sensors", "pull"}, "sensors: pull %q not one of up, down, none", s.Pull)
	}
	if s.Debounce < MinDebounce || s.Debounce > MaxDebounce {
		return v.errf([]any{"sensors", "debounce"}, "sensors: debounce %v out of range %v..%v", s.Debounce, MinDebounce, MaxDebounce)
	}
	if s.Poll < MinPoll || s.Poll > MaxPoll {
		return v.errf([]any{"sensors", "poll"}, "sensors: poll %v out of range %v..%v", s.Poll, MinPoll, MaxPoll)
	}
	if s.Poll > s.Debounce {
		return v.errf([]any{"sensors", "poll"}, "sensors: poll %v longer than debounce %v", s.Poll, s.Debounce)
	}
	if s.ChatterChanges < MinChatterChanges || s.ChatterChanges > MaxChatterChanges {
		return v.errf([]any{"sensors", "chatter_changes"}, "sensors: chatter_changes %d out of range %d..%d", s.ChatterChanges, MinChatterChanges, MaxChatterChanges)
	}
	if s.ChatterWindow < MinChatterWindow || s.ChatterWindow > MaxChatterWindow {
		return v.errf([]any{"sensors", "chatter_window"}, "sensors: chatter_window %v out of range %v..%v", s.ChatterWindow, MinChatterWindow, MaxChatterWindow)
	}
	return nil
}

func (v *validator) compartments(w *Wiring, use func(name, role, ctx, what string, path ...any)) error {
	cs := w.Compartments
	type channel struct {
		bus            string
		board, channel int
	}
	chans := map[channel]int{} // → compartment number
	if len(cs) == 0 {
		return v.errf([]any{"compartments"}, "no compartments")
	}
	seen := make(map[int]int, len(cs)) // number → index
	for i, c := range cs {
		at := func(field string) []any { return []any{"compartments", i, field} }
		if c.Number == 0 && !v.has("compartments", i, "number") {
			return v.errf(at("number"), "compartment (entry %d): number required", i+1)
		}
		if c.Number < 1 || c.Number > len(cs) {
			return v.errf(at("number"), "compartment number %d out of range 1..%d (numbers are 1..N without gaps)", c.Number, len(cs))
		}
		ctx := "compartment " + strconv.Itoa(c.Number)
		if j, ok := seen[c.Number]; ok {
			prev := ""
			if l := v.line("compartments", j, "number"); l > 0 {
				prev = fmt.Sprintf(" (line %d)", l)
			}
			return v.errf(at("number"), "%s: number already used%s", ctx, prev)
		}
		seen[c.Number] = i
		if c.Bus != "" {
			if err := v.busCompartment(w, i, ctx, c); err != nil {
				return err
			}
			k := channel{c.Bus, c.Board, c.Channel}
			if n, dup := chans[k]; dup {
				return v.errf(at("channel"), "%s: bus %s board %d channel %d already used by compartment %d", ctx, c.Bus, c.Board, c.Channel, n)
			}
			chans[k] = c.Number
			if c.LED != "" {
				use(c.LED, "LED of "+ctx, ctx, "led pin", at("led")...)
			}
			continue
		}
		switch {
		case c.Board != 0 || v.has("compartments", i, "board"):
			return v.errf(at("board"), "%s: board without a bus", ctx)
		case c.Channel != 0 || v.has("compartments", i, "channel"):
			return v.errf(at("channel"), "%s: channel without a bus", ctx)
		}
		switch {
		case c.Size == "":
			return v.errf(at("size"), "%s: size required (one of S, M, L, XL)", ctx)
		case !slices.Contains(Sizes, c.Size):
			return v.errf(at("size"), "%s: size %q not one of S, M, L, XL", ctx, c.Size)
		case c.Lock == "":
			return v.errf(at("lock"), "%s: lock pin required", ctx)
		case c.Door == "":
			return v.errf(at("door"), "%s: door pin required", ctx)
		}
		use(c.Lock, "lock of "+ctx, ctx, "lock pin", at("lock")...)
		use(c.Door, "door of "+ctx, ctx, "door pin", at("door")...)
		if c.Parcel != "" {
			use(c.Parcel, "parcel of "+ctx, ctx, "parcel pin", at("parcel")...)
		}
		if c.LED != "" {
			use(c.LED, "LED of "+ctx, ctx, "led pin", at("led")...)
		}
	}
	// With N distinct numbers in 1..N there is no gap.
	return nil
}

// busCompartment checks compartment i, wired to an RS485 board.
func (v *validator) busCompartment(w *Wiring, i int, ctx string, c Compartment) error {
	at := func(field string) []any { return []any{"compartments", i, field} }
	b, ok := w.Bus(c.Bus)
	if !ok {
		return v.errf(at("bus"), "%s: no rs485 bus named %q", ctx, c.Bus)
	}
	for _, f := range []struct{ field, pin string }{{"lock", c.Lock}, {"door", c.Door}, {"parcel", c.Parcel}} {
		if f.pin != "" {
			return v.errf(at(f.field), "%s: %s pin %q on a bus compartment (the board's channel is its lock, door and occupancy)", ctx, f.field, f.pin)
		}
	}
	for _, bd := range b.Boards {
		if bd.Address != c.Board {
			continue
		}
		if c.Channel < 1 || c.Channel > bd.Channels {
			return v.errf(at("channel"), "%s: channel %d out of range 1..%d of board %d on bus %s", ctx, c.Channel, bd.Channels, c.Board, c.Bus)
		}
		return nil
	}
	return v.errf(at("board"), "%s: bus %s has no board %d", ctx, c.Bus, c.Board)
}

// MaxReplyWait bounds an RS485 bus's reply_timeout and reply_silence.
const MaxReplyWait = 5 * time.Second

// RS485Bauds are the speeds a bus may run at.
var RS485Bauds = []int{1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200}

// rs485 fills the buses' defaults and checks them.
func (v *validator) rs485(w *Wiring) error {
	names := map[string]int{}
	devices := map[string]int{}
	for i := range w.RS485 {
		b := &w.RS485[i]
		at := func(f ...any) []any { return append([]any{"rs485", i}, f...) }
		ctx := "rs485 bus " + b.Name
		switch {
		case b.Name == "":
			return v.errf(at("name"), "rs485 (entry %d): name required", i+1)
		case b.Device == "":
			return v.errf(at("device"), "%s: device required (\"/dev/ttyUSB0\")", ctx)
		}
		if j, dup := names[b.Name]; dup {
			return v.errf(at("name"), "%s: name already used%s", ctx, v.lineRef("rs485", j, "name"))
		}
		names[b.Name] = i
		// One port spelt two ways ("/dev//ttyUSB0", "/dev/./ttyUSB0") is
		// one port: two buses on it would hold two conversations at once,
		// and two compartments could name one lock. (A symlink to it is
		// caught when the second bus opens it: serial.Open locks the port.)
		dev := filepath.Clean(b.Device)
		if j, dup := devices[dev]; dup {
			return v.errf(at("device"), "%s: device %s already used by bus %s%s", ctx, b.Device, w.RS485[j].Name, v.lineRef("rs485", j, "device"))
		}
		devices[dev] = i
		maxAddr, minAddr, maxCh := 15, 0, 16
		switch b.Protocol {
		case ProtocolKerong:
		case Protocol8A80:
			minAddr, maxAddr, maxCh = 1, 31, 64
		case "":
			return v.errf(at("protocol"), "%s: protocol required (kerong or 8a80)", ctx)
		default:
			return v.errf(at("protocol"), "%s: protocol %q not one of kerong, 8a80", ctx, b.Protocol)
		}
		if b.Baud == 0 && !v.has("rs485", i, "baud") {
			b.Baud = map[string]int{ProtocolKerong: 19200, Protocol8A80: 9600}[b.Protocol]
		}
		if !slices.Contains(RS485Bauds, b.Baud) {
			return v.errf(at("baud"), "%s: baud %d not one of %v", ctx, b.Baud, RS485Bauds)
		}
		if b.LockOpenBit == nil {
			one := 1
			b.LockOpenBit = &one
		} else if *b.LockOpenBit != 0 && *b.LockOpenBit != 1 {
			return v.errf(at("lock_open_bit"), "%s: lock_open_bit %d not 0 or 1", ctx, *b.LockOpenBit)
		}
		if b.IR != nil && *b.IR && b.Protocol != ProtocolKerong {
			return v.errf(at("ir"), "%s: ir: %s boards have no infrared sensors", ctx, b.Protocol)
		}
		for _, d := range []struct {
			field string
			v     time.Duration
		}{{"reply_timeout", b.ReplyTimeout}, {"reply_silence", b.ReplySilence}} {
			if d.v < 0 || d.v > MaxReplyWait {
				return v.errf(at(d.field), "%s: %s %v out of range 0..%v", ctx, d.field, d.v, MaxReplyWait)
			}
		}
		if len(b.Boards) == 0 {
			return v.errf(at("boards"), "%s: no boards", ctx)
		}
		addrs := map[int]int{}
		for j := range b.Boards {
			bd := &b.Boards[j]
			if bd.Channels == 0 && !v.has("rs485", i, "boards", j, "channels") && b.Protocol == ProtocolKerong {
				bd.Channels = 16
			}
			if !v.has("rs485", i, "boards", j, "address") && v.root != nil {
				return v.errf(at("boards", j), "%s: board (entry %d): address required", ctx, j+1)
			}
			if bd.Address < minAddr || bd.Address > maxAddr {
				return v.errf(at("boards", j, "address"), "%s: board address %d out of range %d..%d", ctx, bd.Address, minAddr, maxAddr)
			}
			if k, dup := addrs[bd.Address]; dup {
				return v.errf(at("boards", j, "address"), "%s: board address %d already used%s", ctx, bd.Address, v.lineRef("rs485", i, "boards", k, "address"))
			}
			addrs[bd.Address] = j
			if bd.Channels < 1 || bd.Channels > maxCh {
				return v.errf(at("boards", j, "channels"), "%s: board %d: channels %d out of range 1..%d", ctx, bd.Address, bd.Channels, maxCh)
			}
		}
	}
	return nil
}

func (v *validator) keypad(k *Keypad, use func(name, role, ctx, what string, path ...any)) error {
	for _, f := range []struct {
		field string
		pins  []string
	}{{"rows", k.Rows}, {"cols", k.Cols}} {
		if len(f.pins) != 4 {
			return v.errf([]any{"keypad", f.field}, "keypad: want 4 %s, got %d", f.field, len(f.pins))
		}
		for i, p := range f.pins {
			what := fmt.Sprintf("%s %d", strings.TrimSuffix(f.field, "s"), i+1)
			if p == "" {
				return v.errf([]any{"keypad", f.field, i}, "keypad: %s pin required", what)
			}
			use(p, "keypad "+what, "keypad", what+" pin", "keypad", f.field, i)
		}
	}
	if k.Buzzer != "" {
		use(k.Buzzer, "keypad buzzer", "keypad", "buzzer pin", "keypad", "buzzer")
	}
	if len(k.Layout) != 4 {
		return v.errf([]any{"keypad", "layout"}, "keypad: layout wants 4 rows of 4 keys, got %d rows", len(k.Layout))
	}
	seen := make(map[rune]bool, 16)
	for i, row := range k.Layout {
		at := []any{"keypad", "layout", i}
		if len([]rune(row)) != 4 {
			return v.errf(at, "keypad: layout row %d %q: want 4 keys", i+1, row)
		}
		for _, r := range row {
			if !strings.ContainsRune(Keys, r) {
				return v.errf(at, "keypad: layout row %d: key %q not one of %q", i+1, r, Keys)
			}
			if seen[r] {
				return v.errf(at, "keypad: layout row %d: key %q appears twice", i+1, r)
			}
			seen[r] = true
		}
	}
	return nil
}

func (v *validator) display(d *Display, use func(name, role, ctx, what string, path ...any)) error {
	switch d.Type {
	case DisplayHD44780:
		if d.Cols != 16 && d.Cols != 20 {
			return v.errf([]any{"display", "cols"}, "display: cols %d not 16 or 20", d.Cols)
		}
	case DisplayST7920:
		if d.Cols != 16 {
			return v.errf([]any{"display", "cols"}, "display: st7920 cols %d not 16", d.Cols)
		}
	default:
		return v.errf([]any{"display", "type"}, "display: type %q not supported (want hd44780 or st7920)", d.Type)
	}
	if d.Rows != 2 && d.Rows != 4 {
		return v.errf([]any{"display", "rows"}, "display: rows %d not 2 or 4", d.Rows)
	}
	if d.I2C != nil {
		switch {
		case d.RS != "" || d.E != "" || len(d.Data) > 0:
			return v.errf([]any{"display", "i2c"}, "display: both i2c and rs, e or data pins: wire it one way")
		case d.I2C.Bus == "":
			return v.errf([]any{"display", "i2c", "bus"}, "display: i2c bus required")
		case d.I2C.Address < 0x03 || d.I2C.Address > 0x77:
			return v.errf([]any{"display", "i2c", "address"}, "display: i2c address %#x out of range 0x03..0x77", d.I2C.Address)
		}
		return nil
	}
	if d.RS == "" {
		return v.errf([]any{"display", "rs"}, "display: rs pin required (or i2c for a PCF8574 back-pack)")
	}
	use(d.RS, "display rs", "display", "rs pin", "display", "rs")
	if d.E == "" {
		return v.errf([]any{"display", "e"}, "display: e pin required")
	}
	use(d.E, "display e", "display", "e pin", "display", "e")
	if len(d.Data) != 4 {
		return v.errf([]any{"display", "data"}, "display: want 4 data pins (D4..D7), got %d", len(d.Data))
	}
	for i, p := range d.Data {
		what := fmt.Sprintf("d%d", i+4)
		if p == "" {
			return v.errf([]any{"display", "data", i}, "display: %s pin required", what)
		}
		use(p, "display "+what, "display", what+" pin", "display", "data", i)
	}
	return nil
}

// reExpanderName is what an expander may be called: its pins are NAME.A0…
var reExpanderName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

// expanders checks the expanders and that no two devices share an address
// on a bus (the display's back-pack included).
func (v *validator) expanders(w *Wiring) error {
	type busAddr struct {
		bus  string
		addr uint16
	}
	names := map[string]int{}       // name → index
	devices := map[busAddr]string{} // → what is there, for the error
	devLine := map[busAddr]int{}
	for i, e := range w.Expanders {
		at := func(field string) []any { return []any{"expanders", i, field} }
		switch {
		case e.Name == "":
			return v.errf(at("name"), "expander (entry %d): name required", i+1)
		case !reExpanderName.MatchString(e.Name):
			return v.errf(at("name"), "expander %q: name must be a letter then letters, digits, _ or -", e.Name)
		}
		if j, ok := names[e.Name]; ok {
			return v.errf(at("name"), "expander %s: name already used%s", e.Name, v.lineRef("expanders", j, "name"))
		}
		names[e.Name] = i
		ctx := "expander " + e.Name
		switch {
		case e.Type != DefaultExpander:
			return v.errf(at("type"), "%s: type %q not supported (want mcp23017)", ctx, e.Type)
		case e.Bus == "":
			return v.errf(at("bus"), "%s: bus required", ctx)
		case e.Address < MinExpanderAddress || e.Address > MaxExpanderAddress:
			return v.errf(at("address"), "%s: address %#x out of range 0x20..0x27", ctx, e.Address)
		}
		k := busAddr{e.Bus, e.Address}
		if prev, ok := devices[k]; ok {
			return v.errf(at("address"), "%s: address %#x on bus %q already used by %s%s", ctx, e.Address, e.Bus, prev, lineSuffix(devLine[k]))
		}
		devices[k], devLine[k] = ctx, v.line("expanders", i, "address")
	}
	if d := w.Display; d != nil && d.I2C != nil {
		k := busAddr{d.I2C.Bus, d.I2C.Address}
		if prev, ok := devices[k]; ok {
			return v.errf([]any{"display", "i2c", "address"}, "display: address %#x on bus %q already used by %s%s", d.I2C.Address, d.I2C.Bus, prev, lineSuffix(devLine[k]))
		}
	}
	return nil
}

// pinName checks a pin name that refers to an expander.
func (v *validator) pinName(w *Wiring, u pinUse) error {
	prefix, suffix, ok := strings.Cut(u.name, ".")
	if !ok {
		return nil
	}
	if _, ok := w.ExpanderPin(u.name); ok {
		return nil
	}
	for _, e := range w.Expanders {
		if e.Name == prefix {
			return v.errf(u.path, "%s: %s %q: expander %s has no pin %q (want A0..A7 or B0..B7)", u.ctx, u.what, u.name, prefix, suffix)
		}
	}
	if _, _, ok := expanderSuffix(suffix); ok {
		return v.errf(u.path, "%s: %s %q: no expander named %q", u.ctx, u.what, u.name, prefix)
	}
	return nil
}

// lineRef is " (line N)" for the node at path, or "".
func (v *validator) lineRef(path ...any) string { return lineSuffix(v.line(path...)) }

func lineSuffix(line int) string {
	if line > 0 {
		return fmt.Sprintf(" (line %d)", line)
	}
	return ""
}

func sortCompartments(w *Wiring) {
	slices.SortFunc(w.Compartments, func(a, b Compartment) int { return a.Number - b.Number })
}

var (
	// "line 12: field foo not found in type wiring.Compartment"
	reUnknown = regexp.MustCompile(`^line (\d+): field (.*) not found in type (?:\S+\.)?(\w+)$`)
	// "line 3: cannot unmarshal !!int `300` into time.Duration"
	reDuration = regexp.MustCompile("^line (\\d+): cannot unmarshal !!\\w+ `(.*)` into time.Duration$")
	// "line 3: anything"
	reLine = regexp.MustCompile(`^line (\d+): (.*)$`)
)

// yamlError turns a yaml error into one "source:LINE: problem" line.
func yamlError(source string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg := te.Errors[0]
		if m := reUnknown.FindStringSubmatch(msg); m != nil {
			msg = fmt.Sprintf("line %s: unknown field %q in %s", m[1], m[2], strings.ToLower(m[3]))
		} else if m := reDuration.FindStringSubmatch(msg); m != nil {
			msg = fmt.Sprintf("line %s: invalid duration %q (want e.g. \"300ms\")", m[1], m[2])
		}
		if n := len(te.Errors) - 1; n > 0 {
			msg += fmt.Sprintf(" (and %d more)", n)
		}
		return lineError(source, msg)
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	return lineError(source, "not valid YAML: "+msg)
}

// lineError moves a leading "line N: " into the "source:N: " position and
// keeps the message on one line.
func lineError(source, msg string) error {
	msg = strings.Join(strings.Fields(msg), " ")
	prefix := ""
	if strings.HasPrefix(msg, "not valid YAML: ") {
		prefix, msg = "not valid YAML: ", strings.TrimPrefix(msg, "not valid YAML: ")
	}
	if m := reLine.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: %s%s", source, m[1], prefix, m[2])
	}
	return fmt.Errorf("%s: %s%s", source, prefix, msg)
}
