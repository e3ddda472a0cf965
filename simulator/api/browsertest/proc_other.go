//go:build !unix

package browsertest

import (
	"os"
	"os/exec"
)

func setProcessGroup(*exec.Cmd) {}

// killProcessGroup kills p; its children end when they see it gone.
func killProcessGroup(p *os.Process) {
	_ = p.Kill()
}
