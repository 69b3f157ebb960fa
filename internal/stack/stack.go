// Package stack runs mlrelease's local stack: the Temporal dev server, Prometheus and
// our own binaries as child processes, each logging to a file, all stopped together.
// `make run` and the end-to-end tests use it.
package stack

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mlrelease/mlrelease/internal/stack/devserver"
)

// Find returns the path of a program: bin/NAME under root first, then PATH.
func Find(root, name string) (string, error) { return devserver.Find(root, name) }

// Root finds the repository root (the folder with go.mod) from the working directory up.
func Root() (string, error) { return devserver.Root() }

// Stack is a set of child processes stopped together, last started first.
type Stack struct {
	// LogDir receives one NAME.log per process.
	LogDir string
	// PIDFile, when set, lists the running children (StopLeftover reads it); Stop
	// removes it.
	PIDFile string
	mu      sync.Mutex
	procs   []*Proc
}

// Proc is one child process.
type Proc struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs a program in its own process group, its output in LogDir/NAME.log.
func (s *Stack) Start(name, program string, args []string, env ...string) (*Proc, error) {
	return s.StartAs(nil, name, program, args, env...)
}

// StartAs is Start as another user (cred), for servers that refuse to run as root
// (PostgreSQL); nil is this process's user.
func (s *Stack) StartAs(cred *syscall.Credential, name, program string, args []string, env ...string) (*Proc, error) {
	if err := os.MkdirAll(s.LogDir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(s.LogDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(program, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Our own group: a Ctrl-C in the terminal reaches us, and we stop children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.record(p, cmd.Path)
	s.mu.Unlock()
	return p, nil
}

// PID is the process's ID (the leader of its process group).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited is closed when the process ends.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Err is the process's exit error, once Exited is closed.
func (p *Proc) Err() error { return p.err }

// Tail returns the end of the process's log, for error messages.
func (p *Proc) Tail() string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Stop ends the process: SIGTERM to its group, SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Kill ends the process at once, as a crash would: SIGKILL to its group.
func (p *Proc) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// PIDs are the running processes' IDs by name.
func (s *Stack) PIDs() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, p := range s.procs {
		out[p.Name] = p.PID()
	}
	return out
}

// Stop stops every process, last started first.
func (s *Stack) Stop() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(10 * time.Second)
	}
	if s.PIDFile != "" {
		_ = os.Remove(s.PIDFile)
	}
}

// WaitReady polls url until it answers 200, the process exits, or ctx ends. It is a
// readiness check with a deadline, not a fixed sleep.
func WaitReady(ctx context.Context, p *Proc, url string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w\n%s", p.Name, url, ctx.Err(), p.Tail())
		case <-p.Exited():
			return fmt.Errorf("%s exited before it was ready (%v); its log %s ends:\n%s", p.Name, p.Err(), p.Log, p.Tail())
		case <-tick.C:
		}
	}
}

// WaitPort polls until addr accepts TCP connections.
func WaitPort(ctx context.Context, p *Proc, addr string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not listening on %s: %w\n%s", p.Name, addr, ctx.Err(), p.Tail())
		case <-p.Exited():
			return fmt.Errorf("%s exited before listening on %s (%v); its log %s ends:\n%s", p.Name, addr, p.Err(), p.Log, p.Tail())
		case <-tick.C:
		}
	}
}

// FreePort returns a loopback address with a port free right now.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// InUse reports whether something listens on addr.
func InUse(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TemporalArgs are the dev server's arguments: a persistent database file, the Web
// UI, and the search attributes releases use.
func TemporalArgs(dbFile string, port, uiPort int) []string {
	args := []string{"server", "start-dev", "--db-filename", dbFile, "--ip", "127.0.0.1",
		"--port", fmt.Sprint(port), "--ui-port", fmt.Sprint(uiPort), "--log-level", "warn"}
	return append(args, devserver.SearchAttributeArgs()...)
}

// StartPrometheus runs Prometheus (from root's bin/ or PATH) on listen, its
// configuration and data in dir, scraping the targets (job name to host:port) every
// interval, and waits until it is ready.
func (s *Stack) StartPrometheus(ctx context.Context, root, dir, listen string, interval time.Duration, targets map[string]string) (*Proc, error) {
	bin, err := Find(root, "prometheus")
	if err != nil {
		return nil, fmt.Errorf("%w: run `make prometheus`", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(prometheusConfig(interval, targets)), 0o644); err != nil {
		return nil, err
	}
	p, err := s.Start("prometheus", bin, []string{"--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + listen, "--storage.tsdb.retention.time=1d", "--log.level=warn",
		// The latency judge reads the gateway's native histograms (Prometheus 2.40+;
		// Debian's 2.42 then keeps only the native form of a histogram that has
		// both, so latency queries read the native one).
		"--enable-feature=native-histograms"})
	if err != nil {
		return nil, err
	}
	return p, WaitReady(ctx, p, "http://"+listen+"/-/ready")
}

// prometheusConfig is a Prometheus configuration scraping the targets (job name to
// host:port) every interval.
func prometheusConfig(interval time.Duration, targets map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\nscrape_configs:\n", interval, interval)
	for _, job := range slices.Sorted(maps.Keys(targets)) {
		fmt.Fprintf(&b, "  - job_name: %q\n    static_configs:\n      - targets: [%q]\n", job, targets[job])
	}
	return b.String()
}
