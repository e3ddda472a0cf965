//go:build unix && !linux

package browsertest

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup starts Firefox (chromedp starts Chromium) in a process
// group of its own, so that its content processes can be killed with it.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killProcessGroup kills every process of p's group.
func killProcessGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
}
