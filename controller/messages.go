package controller

import (
	"fmt"
	"strings"
)

// message ids for the display. Lines fit a 16-column display.
type msgID int

const (
	msgIdle msgID = iota
	msgCode
	msgWrong
	msgLocked
	msgDepositOpen
	msgPickupOpen
	msgServiceOpen
	msgNoFree
	msgNotValid
	msgDeposited
	msgPickedUp
	msgCancelled
	msgIncomplete
	msgStorage
	msgServiceMenu
	msgNoSuchDoor
	msgDoorFault
	msgServiceDoor
	msgDisabled
	msgEnabled
	msgSelfTest
	msgSelfTestDone
)

// messages holds the display texts per language: two lines each, with one
// %s (a two-digit compartment, a code mask or a wait) where the line needs it.
var messages = map[string]map[msgID][2]string{
	"en": {
		msgIdle:         {"Enter code", "then press #"},
		msgCode:         {"Code: %s", "# ok   * clear"},
		msgWrong:        {"Wrong code", "Try again"},
		msgLocked:       {"Keypad locked", "Wait %s"},
		msgDepositOpen:  {"Door %s open", "Put parcel, close"},
		msgPickupOpen:   {"Door %s open", "Take parcel,close"},
		msgServiceOpen:  {"Door %s open", "Service"},
		msgNoFree:       {"No free door", "for this parcel"},
		msgNotValid:     {"Code not valid", "now"},
		msgDeposited:    {"Parcel stored", "Thank you"},
		msgPickedUp:     {"Parcel taken", "Thank you"},
		msgCancelled:    {"Door closed", "Nothing stored"},
		msgIncomplete:   {"Parcel still in", "door %s"},
		msgStorage:      {"Out of service", "Try again later"},
		msgServiceMenu:  {"1Open 2Off 3On", "4Test     *Exit"},
		msgServiceDoor:  {"Door no.: %s", "# ok  * back"},
		msgDisabled:     {"Door %s", "disabled"},
		msgEnabled:      {"Door %s", "enabled"},
		msgSelfTest:     {"Self-test", "%s"},
		msgSelfTestDone: {"Self-test done", "%s"},
		msgNoSuchDoor:   {"No such door", "Try again"},
		msgDoorFault:    {"Door %s fault", "Call service"},
	},
}

func (c *Controller) text(id msgID, arg string) (string, string) {
	m, ok := messages[c.opts.Language]
	if !ok {
		m = messages["en"]
	}
	l := m[id]
	format := func(s string) string {
		if strings.Contains(s, "%s") {
			return fmt.Sprintf(s, arg)
		}
		return s
	}
	return format(l[0]), format(l[1])
}

// two formats a compartment number as people see it: "07".
func two(n int) string { return fmt.Sprintf("%02d", n) }
