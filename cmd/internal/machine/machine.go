// Package machine describes the machine a benchmark or torture table was
// measured on, for the table's last line.
package machine

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// Describe is `uname -m`, the CPU model, the number of cores, the host
// name and the Go version.
func Describe() string {
	arch := runtime.GOARCH
	if out, err := exec.Command("uname", "-m").Output(); err == nil {
		arch = strings.TrimSpace(string(out))
	}
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			k, v, ok := strings.Cut(line, ":")
			if ok && (strings.TrimSpace(k) == "model name" || strings.TrimSpace(k) == "Model") {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s, %s, %d cores, host %s, %s", arch, model, runtime.NumCPU(), host, runtime.Version())
}
