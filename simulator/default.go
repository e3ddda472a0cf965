package simulator

import (
	_ "embed"

	"github.com/openlocker/locker/hal/wiring"
)

// defaultCabinet is the wiring of the default cabinet of locker-sim.
//
//go:embed default-cabinet.yaml
var defaultCabinet []byte

// DefaultCabinetYAML returns the wiring file of the default cabinet.
func DefaultCabinetYAML() []byte { return append([]byte(nil), defaultCabinet...) }

// DefaultWiring returns the wiring of the default cabinet: 24 compartments
// (8 S, 8 M, 6 L, 2 XL) with lock, door and occupancy sensor pins LOCKnn,
// DOORnn and PARCELnn, a 4x4 keypad on KP_R1..KP_R4 and KP_C1..KP_C4, and a
// 20x2 HD44780 display on LCD_RS, LCD_E and LCD_D4..LCD_D7.
func DefaultWiring() (*wiring.Wiring, error) {
	return wiring.Parse(defaultCabinet, "default-cabinet.yaml")
}
