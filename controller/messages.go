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
	msgDoorBusy
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
		msgDoorBusy:     {"Door %s in use", "Try again later"},
		msgDoorFault:    {"Door %s fault", "Call service"},
	},
	// Simplified Chinese: at most 16 columns a line, a Chinese character
	// taking two, for displays with a Chinese font (ST7920). ASCII runs
	// before a Chinese character are of even length, so that it starts on
	// the display's word boundary without padding.
	"zh": {
		msgIdle:         {"请输入取件码", "按 #确认"},
		msgCode:         {"密码:%s", "# 确认 *清除"},
		msgWrong:        {"密码错误", "请重试"},
		msgLocked:       {"键盘已锁定", "请等待%s"},
		msgDepositOpen:  {"%s号柜门已开", "放入包裹后关门"},
		msgPickupOpen:   {"%s号柜门已开", "取出包裹后关门"},
		msgServiceOpen:  {"%s号柜门已开", "维护"},
		msgNoFree:       {"无合适空柜", "请联系客服"},
		msgNotValid:     {"此码当前无效", "请联系客服"},
		msgDeposited:    {"包裹已存入", "谢谢"},
		msgPickedUp:     {"包裹已取出", "谢谢"},
		msgCancelled:    {"柜门已关闭", "未存入包裹"},
		msgIncomplete:   {"包裹仍在柜内", "%s号柜门"},
		msgStorage:      {"暂停服务", "请稍后再试"},
		msgServiceMenu:  {"1 开门 2停用", "3 启用 4自检 *退"},
		msgNoSuchDoor:   {"无此柜门", "请重试"},
		msgDoorBusy:     {"%s号门使用中", "请稍后再试"},
		msgDoorFault:    {"%s号柜门故障", "请联系维护"},
		msgServiceDoor:  {"柜门号:%s", "# 确认 *返回"},
		msgDisabled:     {"%s号柜", "已停用"},
		msgEnabled:      {"%s号柜", "已启用"},
		msgSelfTest:     {"自检中", "%s"},
		msgSelfTestDone: {"自检完成", "%s"},
	},
}

// OutOfService is the display's "Out of service" in language lang, for a
// locker that cannot run its controller yet (its data folder cannot be
// written at start-up).
func OutOfService(lang string) (string, string) {
	m, ok := messages[lang]
	if !ok {
		m = messages["en"]
	}
	return m[msgStorage][0], m[msgStorage][1]
}

// Languages lists the display languages.
func Languages() []string { return []string{"en", "zh"} }

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
