package wiring

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// comps is a valid compartment list; its lines are 2..4 when it follows one
// line of other text.
const comps = `compartments:
  - {number: 1, size: S, lock: GPIO17, door: GPIO24}
  - {number: 2, size: M, lock: GPIO27, door: GPIO25, parcel: GPIO12}
`

const keypadOK = `keypad:
  rows: [GPIO16, GPIO20, GPIO21, GPIO26]
  cols: [GPIO19, GPIO18, GPIO14, GPIO15]
`

const displayOK = `display:
  rs: GPIO7
  e: GPIO8
  data: [GPIO9, GPIO10, GPIO11, GPIO4]
`

// errorCases are invalid wirings and the exact error Parse gives, with
// source "w.yaml". They also seed FuzzParse.
var errorCases = []struct {
	name, yaml, want string
}{
	{"empty", "", "w.yaml: empty wiring file"},
	{"blank", " \n\t\n", "w.yaml: empty wiring file"},
	{"only comments", "# nothing\n", "w.yaml: empty wiring file"},
	{"scalar", "hello\n", "w.yaml:1: not a wiring: want a mapping with name, locks, sensors, keypad, display and compartments"},
	{"list", "- 1\n- 2\n", "w.yaml:1: not a wiring: want a mapping with name, locks, sensors, keypad, display and compartments"},
	{"not yaml", "a: b: c\n", "w.yaml: not valid YAML: mapping values are not allowed in this context"},
	{"bad indent", "compartments:\n  - number: 1\n   size: S\n", "w.yaml:1: not valid YAML: did not find expected '-' indicator"},
	{"tab", "locks:\n\tpulse: 1s\n", "w.yaml:2: not valid YAML: found character that cannot start any token"},
	{"empty list item", "expanders:\n  -\ncompartments:\n  - {number: 1, size: M, lock: GPIO5, door: GPIO6}\n", "w.yaml:2: expanders: item 1 is empty"},
	{"unknown top field", "colour: red\n" + comps, `w.yaml:1: unknown field "colour" in wiring`},
	{"unknown locks field", "locks:\n  pulse_ms: 300\n" + comps, `w.yaml:2: unknown field "pulse_ms" in locks`},
	{"unknown compartment field", "compartments:\n  - {number: 1, size: S, lock: GPIO17, door: GPIO24, colour: red}\n", `w.yaml:2: unknown field "colour" in compartment`},
	{"two unknown fields", "a: 1\nb: 2\n" + comps, `w.yaml:1: unknown field "a" in wiring (and 1 more)`},
	{"duplicate key", "name: a\nname: b\n" + comps, `w.yaml:2: mapping key "name" already defined at line 1`},
	{"wrong type", "display:\n  cols: wide\n" + comps, "w.yaml:2: cannot unmarshal !!str `wide` into int"},

	{"max_energised zero", "locks:\n  max_energised: 0\n" + comps, "w.yaml:2: locks: max_energised 0 out of range 1..16"},
	{"cooldown negative", "locks:\n  cooldown: -1s\n" + comps, "w.yaml:2: locks: cooldown -1s out of range 0s..1m0s"},
	{"gap too long", "locks:\n  gap: 11s\n" + comps, "w.yaml:2: locks: gap 11s out of range 0s..10s"},
	{"confirm short", "locks:\n  confirm: 10ms\n" + comps, "w.yaml:2: locks: confirm 10ms out of range 50ms..30s"},
	{"confirm under debounce", "locks:\n  confirm: 60ms\nsensors:\n  debounce: 80ms\n" + comps, "w.yaml:2: locks: confirm 60ms not longer than sensors debounce 80ms"},
	{"chatter changes", "sensors:\n  chatter_changes: 1\n" + comps, "w.yaml:2: sensors: chatter_changes 1 out of range 2..1000"},
	{"chatter window", "sensors:\n  chatter_window: 10ms\n" + comps, "w.yaml:2: sensors: chatter_window 10ms out of range 100ms..1m0s"},
	{"expander no name", "expanders:\n  - {bus: \"1\", address: 0x20}\n" + comps, "w.yaml:2: expander (entry 1): name required"},
	{"expander bad name", "expanders:\n  - {name: X.1, bus: \"1\", address: 0x20}\n" + comps, `w.yaml:2: expander "X.1": name must be a letter then letters, digits, _ or -`},
	{"expander twice", "expanders:\n  - {name: X1, bus: \"1\", address: 0x20}\n  - {name: X1, bus: \"1\", address: 0x21}\n" + comps, "w.yaml:3: expander X1: name already used (line 2)"},
	{"expander address", "expanders:\n  - {name: X1, bus: \"1\", address: 0x28}\n" + comps, "w.yaml:2: expander X1: address 0x28 out of range 0x20..0x27"},
	{"expander same address", "expanders:\n  - {name: X1, bus: \"1\", address: 0x20}\n  - name: X2\n    bus: \"1\"\n    address: 0x20\n" + comps,
		`w.yaml:5: expander X2: address 0x20 on bus "1" already used by expander X1 (line 2)`},
	{"expander no bus", "expanders:\n  - {name: X1, address: 0x20}\n" + comps, "w.yaml:2: expander X1: bus required"},
	{"expander type", "expanders:\n  - {name: X1, type: pcf8575, bus: \"1\", address: 0x20}\n" + comps, `w.yaml:2: expander X1: type "pcf8575" not supported (want mcp23017)`},
	{"expander pin bad", "expanders:\n  - {name: X1, bus: \"1\", address: 0x20}\ncompartments:\n  - {number: 1, size: S, lock: X1.C0, door: X1.A1}\n",
		`w.yaml:4: compartment 1: lock pin "X1.C0": expander X1 has no pin "C0" (want A0..A7 or B0..B7)`},
	{"expander unknown", "compartments:\n  - {number: 1, size: S, lock: X9.A0, door: GPIO4}\n", `w.yaml:2: compartment 1: lock pin "X9.A0": no expander named "X9"`},
	{"expander pin twice", "expanders:\n  - {name: X1, bus: \"1\", address: 0x20}\ncompartments:\n  - {number: 1, size: S, lock: X1.A0, door: X1.A1}\n  - {number: 2, size: S, lock: X1.B0, door: X1.A0}\n",
		`w.yaml:5: compartment 2: door pin "X1.A0" already used as lock of compartment 1 (line 4)`},
	{"led twice", "compartments:\n  - {number: 1, size: S, lock: GPIO17, door: GPIO24, led: GPIO5}\n  - {number: 2, size: S, lock: GPIO27, door: GPIO25, led: GPIO5}\n",
		`w.yaml:3: compartment 2: led pin "GPIO5" already used as LED of compartment 1 (line 2)`},
	{"buzzer twice", keypadOK + "  buzzer: GPIO17\n" + comps, `w.yaml:6: compartment 1: lock pin "GPIO17" already used as keypad buzzer (line 4)`},
	{"display both", "display:\n  rs: GPIO7\n  i2c: {bus: \"1\", address: 0x27}\n" + comps, "w.yaml:3: display: both i2c and rs, e or data pins: wire it one way"},
	{"display i2c no bus", "display:\n  i2c: {address: 0x27}\n" + comps, "w.yaml:2: display: i2c bus required"},
	{"display i2c address", "display:\n  i2c: {bus: \"1\", address: 0x80}\n" + comps, "w.yaml:2: display: i2c address 0x80 out of range 0x03..0x77"},
	{"display on expander address", "expanders:\n  - {name: X1, bus: \"1\", address: 0x27}\ndisplay:\n  i2c:\n    bus: \"1\"\n    address: 0x27\n" + comps,
		`w.yaml:6: display: address 0x27 on bus "1" already used by expander X1 (line 2)`},
	{"no compartments", "name: x\n", "w.yaml:1: no compartments"},
	{"empty compartments", "compartments: []\n", "w.yaml:1: no compartments"},
	{"number missing", "compartments:\n  - {size: S, lock: GPIO17, door: GPIO24}\n", "w.yaml:2: compartment (entry 1): number required"},
	{"number zero", "compartments:\n  - {number: 0, size: S, lock: GPIO17, door: GPIO24}\n", "w.yaml:2: compartment number 0 out of range 1..1 (numbers are 1..N without gaps)"},
	{"gap", "compartments:\n  - {number: 1, size: S, lock: GPIO17, door: GPIO24}\n  - {number: 3, size: S, lock: GPIO27, door: GPIO25}\n",
		"w.yaml:3: compartment number 3 out of range 1..2 (numbers are 1..N without gaps)"},
	{"duplicate number", "compartments:\n  - {number: 1, size: S, lock: GPIO17, door: GPIO24}\n  - {number: 1, size: S, lock: GPIO27, door: GPIO25}\n",
		"w.yaml:3: compartment 1: number already used (line 2)"},
	{"size missing", "compartments:\n  - number: 1\n    lock: GPIO17\n    door: GPIO24\n", "w.yaml:2: compartment 1: size required (one of S, M, L, XL)"},
	{"size bad", "compartments:\n  - number: 1\n    size: XXL\n    lock: GPIO17\n    door: GPIO24\n", `w.yaml:3: compartment 1: size "XXL" not one of S, M, L, XL`},
	{"size lower case", "compartments:\n  - {number: 1, size: s, lock: GPIO17, door: GPIO24}\n", `w.yaml:2: compartment 1: size "s" not one of S, M, L, XL`},
	{"lock missing", "compartments:\n  - number: 1\n    size: S\n    door: GPIO24\n", "w.yaml:2: compartment 1: lock pin required"},
	{"door missing", "compartments:\n  - number: 1\n    size: S\n    lock: GPIO17\n", "w.yaml:2: compartment 1: door pin required"},
	{"pin twice", "compartments:\n  - number: 1\n    size: S\n    lock: GPIO17\n    door: GPIO24\n  - number: 2\n    size: S\n    lock: GPIO27\n    door: GPIO17\n",
		`w.yaml:9: compartment 2: door pin "GPIO17" already used as lock of compartment 1 (line 4)`},
	{"pin twice in one compartment", "compartments:\n  - {number: 1, size: S, lock: GPIO17, door: GPIO24, parcel: GPIO24}\n",
		`w.yaml:2: compartment 1: parcel pin "GPIO24" already used as door of compartment 1 (line 2)`},
	{"pin twice, keypad first", keypadOK + "compartments:\n  - {number: 1, size: S, lock: GPIO16, door: GPIO24}\n",
		`w.yaml:5: compartment 1: lock pin "GPIO16" already used as keypad row 1 (line 2)`},
	{"pin twice, keypad after", comps + "keypad:\n  rows: [GPIO16, GPIO20, GPIO21, GPIO26]\n  cols: [GPIO19, GPIO18, GPIO14, GPIO12]\n",
		`w.yaml:6: keypad: col 4 pin "GPIO12" already used as parcel of compartment 2 (line 3)`},
	{"pin twice in keypad", "keypad:\n  rows: [GPIO16, GPIO20, GPIO21, GPIO26]\n  cols: [GPIO19, GPIO18,\n     GPIO14, GPIO20]\n" + comps,
		`w.yaml:4: keypad: col 4 pin "GPIO20" already used as keypad row 2 (line 2)`},
	{"pin twice in display", "display:\n  rs: GPIO7\n  e: GPIO8\n  data: [GPIO9, GPIO10, GPIO11, GPIO7]\n" + comps,
		`w.yaml:4: display: d7 pin "GPIO7" already used as display rs (line 2)`},
	{"pin twice display and lock", comps + "display:\n  rs: GPIO7\n  e: GPIO27\n  data: [GPIO9, GPIO10, GPIO11, GPIO4]\n",
		`w.yaml:6: display: e pin "GPIO27" already used as lock of compartment 2 (line 3)`},

	{"pulse zero", "locks:\n  pulse: 0s\n" + comps, "w.yaml:2: locks: pulse 0s out of range (want more than 0 and at most 1s)"},
	{"pulse negative", "locks:\n  pulse: -5ms\n" + comps, "w.yaml:2: locks: pulse -5ms out of range (want more than 0 and at most 1s)"},
	{"pulse too long", "locks:\n  pulse: 1.5s\n" + comps, "w.yaml:2: locks: pulse 1.5s out of range (want more than 0 and at most 1s)"},
	{"pulse null", "locks:\n  pulse:\n" + comps, "w.yaml:2: locks: pulse 0s out of range (want more than 0 and at most 1s)"},
	{"pulse no unit", "locks:\n  pulse: 300\n" + comps, `w.yaml:2: invalid duration "300" (want e.g. "300ms")`},
	{"pulse bad unit", "locks:\n  pulse: 300 ms\n" + comps, `w.yaml:2: invalid duration "300 ms" (want e.g. "300ms")`},
	{"debounce short", "sensors:\n  debounce: 500us\n  poll: 1ms\n" + comps, "w.yaml:2: sensors: debounce 500µs out of range 1ms..1s"},
	{"debounce long", "sensors:\n  debounce: 2s\n" + comps, "w.yaml:2: sensors: debounce 2s out of range 1ms..1s"},
	{"poll short", "sensors:\n  poll: 0s\n" + comps, "w.yaml:2: sensors: poll 0s out of range 1ms..100ms"},
	{"poll long", "sensors:\n  debounce: 1s\n  poll: 101ms\n" + comps, "w.yaml:3: sensors: poll 101ms out of range 1ms..100ms"},
	{"poll over debounce", "sensors:\n  debounce: 10ms\n  poll: 20ms\n" + comps, "w.yaml:3: sensors: poll 20ms longer than debounce 10ms"},
	{"pull bad", "sensors:\n  pull: sideways\n" + comps, `w.yaml:2: sensors: pull "sideways" not one of up, down, none`},
	{"pull empty", "sensors:\n  pull: ''\n" + comps, `w.yaml:2: sensors: pull "" not one of up, down, none`},

	{"keypad 3 rows", "keypad:\n  rows: [GPIO16, GPIO20, GPIO21]\n  cols: [GPIO19, GPIO18, GPIO14, GPIO15]\n" + comps, "w.yaml:2: keypad: want 4 rows, got 3"},
	{"keypad no cols", "keypad:\n  rows: [GPIO16, GPIO20, GPIO21, GPIO26]\n" + comps, "w.yaml:1: keypad: want 4 cols, got 0"},
	{"keypad 5 cols", "keypad:\n  rows: [GPIO16, GPIO20, GPIO21, GPIO26]\n  cols: [GPIO19, GPIO18, GPIO14, GPIO15, GPIO2]\n" + comps, "w.yaml:3: keypad: want 4 cols, got 5"},
	{"keypad empty pin", "keypad:\n  rows: [GPIO16, '', GPIO21, GPIO26]\n  cols: [GPIO19, GPIO18, GPIO14, GPIO15]\n" + comps, "w.yaml:2: keypad: row 2 pin required"},
	{"layout 3 rows", keypadOK + "  layout: ['123A', '456B', '789C']\n" + comps, "w.yaml:4: keypad: layout wants 4 rows of 4 keys, got 3 rows"},
	{"layout empty", keypadOK + "  layout: []\n" + comps, "w.yaml:4: keypad: layout wants 4 rows of 4 keys, got 0 rows"},
	{"layout short row", keypadOK + "  layout:\n    - '123A'\n    - '456'\n    - '789C'\n    - '*0#D'\n" + comps, `w.yaml:6: keypad: layout row 2 "456": want 4 keys`},
	{"layout bad key", keypadOK + "  layout: ['123A', '456B', '789C', '*0#E']\n" + comps, `w.yaml:4: keypad: layout row 4: key 'E' not one of "0123456789*#ABCD"`},
	{"layout repeated key", keypadOK + "  layout: ['123A', '456B', '789C', '*0#1']\n" + comps, `w.yaml:4: keypad: layout row 4: key '1' appears twice`},

	{"display type", "display:\n  type: ssd1306\n  rs: GPIO7\n  e: GPIO8\n  data: [GPIO9, GPIO10, GPIO11, GPIO4]\n" + comps, `w.yaml:2: display: type "ssd1306" not supported (want hd44780 or st7920)`},
	{"st7920 cols", "display:\n  type: st7920\n  rs: GPIO7\n  e: GPIO8\n  data: [GPIO9, GPIO10, GPIO11, GPIO4]\n  cols: 20\n" + comps,
		"w.yaml:6: display: st7920 cols 20 not 16"},
	{"st7920 rows", "display: {type: st7920, rows: 3, i2c: {bus: \"1\", address: 0x27}}\n" + comps, "w.yaml:1: display: rows 3 not 2 or 4"},
	{"st7920 both", "display:\n  type: st7920\n  rows: 4\n  e: GPIO8\n  i2c: {bus: \"1\", address: 0x27}\n" + comps,
		"w.yaml:5: display: both i2c and rs, e or data pins: wire it one way"},
	{"st7920 3 data", "display:\n  type: st7920\n  rs: GPIO7\n  e: GPIO8\n  data: [GPIO9, GPIO10, GPIO11]\n" + comps, "w.yaml:5: display: want 4 data pins (D4..D7), got 3"},
	{"st7920 pin twice", "display:\n  type: st7920\n  rs: GPIO7\n  e: GPIO17\n  data: [GPIO9, GPIO10, GPIO11, GPIO4]\n" + comps,
		`w.yaml:7: compartment 1: lock pin "GPIO17" already used as display e (line 4)`},
	{"display cols", displayOK + "  cols: 24\n" + comps, "w.yaml:5: display: cols 24 not 16 or 20"},
	{"display rows", displayOK + "  rows: 1\n" + comps, "w.yaml:5: display: rows 1 not 2 or 4"},
	{"display rs missing", "display:\n  e: GPIO8\n  data: [GPIO9, GPIO10, GPIO11, GPIO4]\n" + comps, "w.yaml:1: display: rs pin required (or i2c for a PCF8574 back-pack)"},
	{"display e missing", "display:\n  rs: GPIO7\n  data: [GPIO9, GPIO10, GPIO11, GPIO4]\n" + comps, "w.yaml:1: display: e pin required"},
	{"display 3 data", "display:\n  rs: GPIO7\n  e: GPIO8\n  data: [GPIO9, GPIO10, GPIO11]\n" + comps, "w.yaml:4: display: want 4 data pins (D4..D7), got 3"},
	{"display empty data pin", "display:\n  rs: GPIO7\n  e: GPIO8\n  data: [GPIO9, GPIO10, '', GPIO4]\n" + comps, "w.yaml:4: display: d6 pin required"},
}

func TestParseErrors(t *testing.T) {
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Parse([]byte(tc.yaml), "w.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v\nwant error %q", w, tc.want)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("Parse error\n got %s\nwant %s", got, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	w, err := Parse([]byte(comps+keypadOK+displayOK), "w.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Wiring{
		Locks: Locks{Pulse: 300 * time.Millisecond, Cooldown: time.Second, MaxEnergised: 1,
			Gap: 100 * time.Millisecond, Confirm: 2 * time.Second},
		Sensors: Sensors{Pull: "up", Debounce: 30 * time.Millisecond, Poll: 5 * time.Millisecond,
			ChatterChanges: 8, ChatterWindow: 2 * time.Second},
		Keypad: &Keypad{
			Rows:   []string{"GPIO16", "GPIO20", "GPIO21", "GPIO26"},
			Cols:   []string{"GPIO19", "GPIO18", "GPIO14", "GPIO15"},
			Layout: []string{"123A", "456B", "789C", "*0#D"},
		},
		Display: &Display{Type: "hd44780", Cols: 16, Rows: 2, RS: "GPIO7", E: "GPIO8", Data: []string{"GPIO9", "GPIO10", "GPIO11", "GPIO4"}},
		Compartments: []Compartment{
			{Number: 1, Size: "S", Lock: "GPIO17", Door: "GPIO24"},
			{Number: 2, Size: "M", Lock: "GPIO27", Door: "GPIO25", Parcel: "GPIO12"},
		},
	}
	if !reflect.DeepEqual(w, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", w, want)
	}
	if err := w.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseSortsCompartments(t *testing.T) {
	w, err := Parse([]byte(`compartments:
  - {number: 3, size: L, lock: GPIO22, door: GPIO5}
  - {number: 1, size: S, lock: GPIO17, door: GPIO24}
  - {number: 2, size: XL, lock: GPIO27, door: GPIO25}
`), "w.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range w.Compartments {
		if c.Number != i+1 {
			t.Errorf("Compartments[%d].Number = %d", i, c.Number)
		}
	}
	if w.Keypad != nil || w.Display != nil {
		t.Errorf("keypad %v, display %v; want none", w.Keypad, w.Display)
	}
}

func TestParseExplicit(t *testing.T) {
	w, err := Parse([]byte(`name: big
locks: {active_low: true, pulse: 1s}
sensors: {door_open_low: true, parcel_present_low: true, pull: none, debounce: 1s, poll: 100ms}
keypad:
  rows: [R1, R2, R3, R4]
  cols: [C1, C2, C3, C4]
  layout: ["0123", "4567", "89*#", "ABCD"]
display: {type: hd44780, cols: 20, rows: 4, rs: RS, e: E, data: [D4, D5, D6, D7]}
`+comps), "w.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !w.Locks.ActiveLow || w.Locks.Pulse != time.Second || w.Sensors.Pull != "none" ||
		w.Sensors.Poll != 100*time.Millisecond || !w.Sensors.DoorOpenLow || !w.Sensors.ParcelPresentLow ||
		w.Display.Cols != 20 || w.Display.Rows != 4 || w.Keypad.Layout[2] != "89*#" || w.Name != "big" {
		t.Errorf("Parse = %+v", w)
	}
}

func TestParseST7920(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       Display
	}{
		{"pins, default cols and rows", "display:\n  type: st7920\n  rs: RS\n  e: E\n  data: [D4, D5, D6, D7]\n",
			Display{Type: "st7920", Cols: 16, Rows: 2, RS: "RS", E: "E", Data: []string{"D4", "D5", "D6", "D7"}}},
		{"back-pack, 4 rows", "display: {type: st7920, cols: 16, rows: 4, i2c: {bus: \"1\", address: 0x27}}\n",
			Display{Type: "st7920", Cols: 16, Rows: 4, I2C: &I2C{Bus: "1", Address: 0x27}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Parse([]byte(tc.yaml+comps), "w.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*w.Display, tc.want) {
				t.Errorf("Display = %+v, want %+v", *w.Display, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	w, err := Parse([]byte(comps), "w.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w.Compartments[1].Door = "GPIO17"
	err = w.Validate()
	if want := `compartment 2: door pin "GPIO17" already used as lock of compartment 1`; err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want %s", err, want)
	}
	if err := (&Wiring{Compartments: []Compartment{{Number: 1, Size: "S", Lock: "a", Door: "b"}}}).Validate(); err == nil {
		t.Errorf("Validate accepted a wiring without defaults")
	}
	var nilW *Wiring
	if nilW.Validate() == nil {
		t.Errorf("nil Validate = nil")
	}
}

func TestTestdata(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	wantErr := map[string]string{
		"bad-duplicate-pin.yaml": `bad-duplicate-pin.yaml:10: compartment 2: door pin "GPIO17" already used as lock of compartment 1 (line 5)`,
		"bad-gap.yaml":           "bad-gap.yaml:4: compartment number 3 out of range 1..2 (numbers are 1..N without gaps)",
		"bad-unknown-field.yaml": `bad-unknown-field.yaml:3: unknown field "pulse_ms" in locks`,
	}
	for _, f := range files {
		base := filepath.Base(f)
		w, err := Load(f)
		if want, bad := wantErr[base]; bad {
			if err == nil || err.Error() != want {
				t.Errorf("Load(%s) = %v, want %s", base, err, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("Load(%s): %v", base, err)
			continue
		}
		if base == "rpi-4.yaml" && (len(w.Compartments) != 4 || !w.Locks.ActiveLow || w.Display == nil || w.Keypad == nil) {
			t.Errorf("rpi-4.yaml = %+v", w)
		}
	}
	if _, err := Load("testdata/missing.yaml"); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

// FuzzParse checks that Parse never panics, that its errors are one line,
// and that an accepted wiring validates and survives a YAML round trip.
func FuzzParse(f *testing.F) {
	for _, tc := range errorCases {
		f.Add([]byte(tc.yaml))
	}
	f.Add([]byte(comps + keypadOK + displayOK))
	for _, dir := range []string{"testdata", "../../testdata/wiring"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, name := range files {
			if data, err := os.ReadFile(name); err == nil {
				f.Add(data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := Parse(data, "f.yaml")
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if err := w.Validate(); err != nil {
			t.Fatalf("accepted wiring does not validate: %v", err)
		}
		out, err := yaml.Marshal(w)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		w2, err := Parse(out, "round-trip.yaml")
		if err != nil {
			t.Fatalf("round trip: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(w, w2) {
			t.Fatalf("round trip changed the wiring:\n%+v\n%+v", w, w2)
		}
	})
}
