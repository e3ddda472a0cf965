package browsertest

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup starts Firefox (chromedp starts Chromium) in a process
// group of its own, so that its content processes can be killed with it and
// has the kernel kill it should the test binary die first (a test timeout
// skips the cleanups).
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killProcessGroup kills every process of p's group.
func killProcessGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
}
