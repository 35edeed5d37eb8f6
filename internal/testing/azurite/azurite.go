// Package azurite starts Azurite, Microsoft's Azure Storage emulator, on
// loopback for tests: the queues and tables tests use are the real
// protocol, served by a real server. `make azurite` installs it under
// .tools/azurite (make test and .ci/run do so first).
package azurite

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Key is Azurite's well-known development account key.
const Key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// Binary finds the azurite command: $AZURITE, the copy `make azurite`
// installs under the module's .tools, or azurite on PATH.
func Binary() (string, error) {
	if p := os.Getenv("AZURITE"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	for err == nil {
		p := filepath.Join(dir, ".tools", "azurite", "node_modules", ".bin", "azurite")
		if _, serr := os.Stat(p); serr == nil {
			return p, nil
		}
		if _, serr := os.Stat(filepath.Join(dir, "go.mod")); serr == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return exec.LookPath("azurite")
}

// reservePort takes a free loopback port and holds it with a socket that
// is bound but does not listen: no other process (another test's Azurite
// picking a port the same way) can take it, and a connection to it is
// refused, as to storage that is down. release gives it up.
func reservePort(tb testing.TB) (port int, release func()) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0) // not inherited by the processes a test starts
	if err != nil {
		tb.Fatalf("azurite: no socket: %v", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		_ = syscall.Close(fd)
		tb.Fatalf("azurite: no free port: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		_ = syscall.Close(fd)
		tb.Fatalf("azurite: no free port: %v", err)
	}
	var once sync.Once
	release = func() { once.Do(func() { _ = syscall.Close(fd) }) }
	tb.Cleanup(release)
	return sa.(*syscall.SockaddrInet4).Port, release
}

// Start runs a fresh in-memory Azurite for the test and returns its
// connection string. The server stops when the test ends. An Azurite that
// does not come up (a port taken between its reservation and Azurite's
// bind, a loaded machine) is started again on other ports, twice at most.
func Start(tb testing.TB) string {
	tb.Helper()
	bin := binary(tb)
	var errs []string
	for range 3 {
		p := reserve(tb)
		if err := p.launch(tb, bin); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		return p.conn()
	}
	tb.Fatalf("azurite did not start: %s", strings.Join(errs, "; "))
	return ""
}

// Later picks Azurite's ports and returns its connection string and a
// function that starts it (and waits until it listens): a test can point
// a process at storage that is down, then bring it up. Until then the
// ports are held (connections to them are refused). The server stops
// when the test ends.
func Later(tb testing.TB) (conn string, start func()) {
	tb.Helper()
	bin := binary(tb)
	p := reserve(tb)
	return p.conn(), func() {
		tb.Helper()
		if err := p.launch(tb, bin); err != nil {
			tb.Fatalf("azurite did not start: %v", err)
		}
	}
}

func binary(tb testing.TB) string {
	bin, err := Binary()
	if err != nil {
		tb.Fatalf("azurite not found (run `make azurite`, or set AZURITE): %v", err)
	}
	return bin
}

// ports are an Azurite's blob, queue and table ports, held until it starts.
type ports struct {
	blob, queue, table int
	release            []func()
	dir                string
}

func reserve(tb testing.TB) *ports {
	p := &ports{dir: tb.TempDir()} // where Azurite writes its debug and extent files
	for _, dst := range []*int{&p.blob, &p.queue, &p.table} {
		port, release := reservePort(tb)
		*dst, p.release = port, append(p.release, release)
	}
	return p
}

func (p *ports) conn() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=%s;"+
		"QueueEndpoint=http://127.0.0.1:%d/devstoreaccount1;TableEndpoint=http://127.0.0.1:%d/devstoreaccount1;", Key, p.queue, p.table)
}

// launch starts Azurite on p and waits until it listens; an Azurite that
// exits or does not listen within 30 s is an error with its output.
func (p *ports) launch(tb testing.TB, bin string) error {
	cmd := exec.CommandContext(context.Background(), bin, "--inMemoryPersistence", "--silent", "--skipApiVersionCheck", "--loose", "--disableProductStyleUrl",
		"--blobHost", "127.0.0.1", "--blobPort", fmt.Sprint(p.blob),
		"--queueHost", "127.0.0.1", "--queuePort", fmt.Sprint(p.queue),
		"--tableHost", "127.0.0.1", "--tablePort", fmt.Sprint(p.table))
	cmd.Dir = p.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	for _, release := range p.release {
		release()
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, port := range []int{p.queue, p.table} {
		for {
			d := net.Dialer{Timeout: time.Second}
			c, err := d.DialContext(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				_ = c.Close()
				break
			}
			select {
			case <-exited:
				return fmt.Errorf("azurite exited before listening on %d: %s", port, strings.TrimSpace(out.String()))
			default:
			}
			if time.Now().After(deadline) {
				stop()
				return fmt.Errorf("azurite did not listen on %d within 30 s: %s", port, strings.TrimSpace(out.String()))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	tb.Cleanup(stop)
	return nil
}
