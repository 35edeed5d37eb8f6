// Package procbench is what benchmarks need at the level of processes: the
// Intune simulator in a process of its own (`handler simulate`), so the
// memory a benchmark reports is remediator's alone, and this process's
// resident memory.
package procbench

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// StartSimulator builds the handler, runs `handler simulate` with args on a
// free loopback port until the benchmark ends, and returns the simulator's
// Graph base URL and its tenant's remediation script.
func StartSimulator(tb testing.TB, args ...string) (base, script string) {
	tb.Helper()
	root, err := moduleRoot()
	if err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(tb.TempDir(), "handler")
	build := exec.CommandContext(context.Background(), "go", "build", "-o", bin, "./handler")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("%v\n%s", err, out)
	}
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	_ = l.Close()
	cmd := exec.CommandContext(context.Background(), bin, append([]string{"simulate", "--port", port}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() && (base == "" || script == "") {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "Intune simulator: GRAPH_BASE_URL="); ok {
			base = strings.Fields(rest)[0]
		}
		if i := strings.Index(line, "remediation script "); i >= 0 {
			script = strings.TrimSpace(line[i+len("remediation script "):])
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if base == "" || script == "" {
		tb.Fatal("the simulator did not start")
	}
	return base, script
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	for err == nil {
		if _, serr := os.Stat(filepath.Join(dir, "go.mod")); serr == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if err == nil {
		err = os.ErrNotExist
	}
	return "", err
}

// PeakRSSMB is this process's peak resident memory (VmHWM) in MB.
func PeakRSSMB() float64 { return statusMB("VmHWM:") }

// RSSMB is this process's resident memory now.
func RSSMB() float64 { return statusMB("VmRSS:") }

func statusMB(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// ResetPeak returns memory to the OS and restarts the peak (VmHWM), so a
// benchmark measures its run and not its setup.
func ResetPeak() {
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}
