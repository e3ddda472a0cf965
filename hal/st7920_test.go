package hal

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"periph.io/x/conn/v3/gpio"

	"github.com/openlocker/locker/hal/wiring"
	"github.com/openlocker/locker/simulator"
)

// st7920Layouts are texts and the 16 DDRAM bytes the ST7920 driver writes
// for them (GB2312: 请 C7EB, 输 CAE4, 入 C8EB, 取 C8A1, 件 BCFE, 码 C2EB,
// 按 B0B4, 确 C8B7, 认 C8CF, 已 D2D1, 开 BFAA, ： A3BA).
var st7920Layouts = []struct {
	name, text, want string
}{
	{"chinese", "请输入取件码", "\xc7\xeb\xca\xe4\xc8\xeb\xc8\xa1\xbc\xfe\xc2\xeb    "},
	{"odd ascii run pads", "按#确认", "\xb0\xb4# \xc8\xb7\xc8\xcf        "},
	{"even ascii run", "Door 07 已开", "Door 07 \xd2\xd1\xbf\xaa    "},
	{"odd ascii run", "Door 7 已开", "Door 7  \xd2\xd1\xbf\xaa    "},
	{"full-width colon", "码：12", "\xc2\xeb\xa3\xba12          "},
	{"ascii", "Enter code", "Enter code      "},
	{"blank", "", "                "},
	{"truncated ascii", "A line longer than sixteen", "A line longer th"},
	{"truncated chinese", "请输入取件码请输入", "\xc7\xeb\xca\xe4\xc8\xeb\xc8\xa1\xbc\xfe\xc2\xeb\xc7\xeb\xca\xe4"},
	{"character fits after pad", "1234567890123 请", "1234567890123 \xc7\xeb"},
	{"character would not fit after pad", "12345678901234 请", "12345678901234  "},
	{"character at the end does not fit", "abc请输入取件码请", "abc \xc7\xeb\xca\xe4\xc8\xeb\xc8\xa1\xbc\xfe\xc2\xeb"},
	{"no ascii after a cut", "123456789012345请x", "123456789012345 "},
	{"unencodable", "€😀\t\x7f", "????            "},
	{"not in the GB2312 font", "镕體", "??              "},
	{"invalid utf-8", "a\xffb", "a?b             "},
}

func TestST7920Layout(t *testing.T) {
	for _, tc := range st7920Layouts {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(st7920Cells(tc.text)); got != tc.want {
				t.Errorf("st7920Cells(%q)\n got % x\nwant % x", tc.text, got, tc.want)
			}
		})
	}
}

func FuzzST7920Layout(f *testing.F) {
	for _, tc := range st7920Layouts {
		f.Add(tc.text)
	}
	f.Fuzz(func(t *testing.T, text string) {
		b := st7920Cells(text)
		if len(b) != ST7920Cols {
			t.Fatalf("%d bytes", len(b))
		}
		for i := 0; i < len(b); i++ { // every two-byte code on a word
			if b[i] >= 0x80 {
				if i%2 != 0 || i+1 == len(b) || b[i+1] < 0xa1 {
					t.Fatalf("% x: a code at byte %d", b, i)
				}
				i++
			}
		}
	})
}

func TestST7920Init(t *testing.T) {
	pins := newPinSet()
	names := [4]string{"DB4", "DB5", "DB6", "DB7"}
	var data [4]gpio.PinOut
	for i, n := range names {
		data[i] = pins.get(n)
	}
	d, err := NewST7920(pins.get("RS"), pins.get("E"), data, 16, 4, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Show("a", "b"); err != nil {
		t.Fatal(err)
	}
	l := decodeLCD(t, pins.bus.records(), "RS", "E", names)
	if got := fmt.Sprintf("% x", l.init); got != "03 03 03 02" {
		t.Errorf("init nibbles %s, want 03 03 03 02", got)
	}
	// Function set (4-bit, basic set) twice, display on, clear, entry mode;
	// then Show: one set-DDRAM per row and no clear.
	if got := fmt.Sprintf("% x", l.commands); got != "20 20 0c 01 06 80 90 88 98" {
		t.Errorf("commands %s, want 20 20 0c 01 06 80 90 88 98", got)
	}

	for _, size := range [][2]int{{20, 4}, {16, 1}, {16, 3}, {8, 2}} {
		if _, err := NewST7920(pins.get("RS"), pins.get("E"), data, size[0], size[1], false); err == nil {
			t.Errorf("NewST7920 accepted %dx%d", size[0], size[1])
		}
	}
}

// newSimDisplay is hal.New over a simulated cabinet whose wiring has the
// given display section; it returns both.
func newSimDisplay(t *testing.T, display string) (*Hardware, *simulator.Cabinet) {
	t.Helper()
	w, err := wiring.Parse([]byte(display+`
compartments:
  - {number: 1, size: S, lock: LOCK1, door: DOOR1}
`), "zh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cab, err := simulator.New(w, simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hw, err := New(w, cab.ByName, Options{Buses: cab.Bus, NoDisplayDelays: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hw.Halt() })
	return hw, cab
}

var st7920Wirings = []struct{ name, display string }{
	{"pins", "display: {type: st7920, rows: 4, rs: RS, e: E, data: [D4, D5, D6, D7]}"},
	{"pcf8574", `display: {type: st7920, rows: 4, i2c: {bus: "1", address: 0x27}}`},
}

// TestST7920Simulator drives the simulator's ST7920 model through hal.New,
// as the daemon does, and reads what a technician sees.
func TestST7920Simulator(t *testing.T) {
	for _, wc := range st7920Wirings {
		t.Run(wc.name, func(t *testing.T) {
			hw, cab := newSimDisplay(t, wc.display)
			if got := cab.Display(); !slices.Equal(got, []string{"", "", "", ""}) {
				t.Fatalf("display after init %q, want blank", got)
			}
			for _, tc := range []struct {
				lines, want []string
			}{
				{[]string{"请输入取件码", "按#确认"}, []string{"请输入取件码", "按# 确认", "", ""}},
				{[]string{"07号柜门已开", "放入包裹后关门"}, []string{"07号柜门已开", "放入包裹后关门", "", ""}},
				{[]string{"1开门 2停用", "3启用 4自检 *退"}, []string{"1 开门 2停用", "3 启用 4自检 *退", "", ""}},
				{[]string{"Door 7 已开", "密码:****", "row three", "第四行"}, []string{"Door 7  已开", "密码:****", "row three", "第四行"}},
				{[]string{"请输入取件码请输入", "Größe: 5€"}, []string{"请输入取件码请输", "Gr??e: 5?", "", ""}},
				{[]string{"Enter code", "then press #"}, []string{"Enter code", "then press #", "", ""}},
				{nil, []string{"", "", "", ""}},
			} {
				if err := hw.Show(tc.lines...); err != nil {
					t.Fatal(err)
				}
				if got := cab.Display(); !slices.Equal(got, tc.want) {
					t.Errorf("Show(%q): display %q, want %q", tc.lines, got, tc.want)
				}
			}
		})
	}
}

func TestST7920Concurrent(t *testing.T) {
	hw, cab := newSimDisplay(t, st7920Wirings[0].display)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 10 {
				line := fmt.Sprintf("%d号柜门 #%02d", g, i)
				if err := hw.Show(line, line); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	// Each Show wrote its rows whole: they come from the same call.
	if got := cab.Display(); got[0] != got[1] || !strings.Contains(got[0], "号柜门 #") {
		t.Errorf("rows %q: interleaved writes", got)
	}
}
