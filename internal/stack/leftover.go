package stack

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A stack records its children in a PID file while they run, so that a stack whose
// supervisor died without stopping them (a closed terminal before SIGHUP was
// handled, a kill -9) can be found and stopped by the next one.

// record adds a started child to the PID file: its process group and program.
func (s *Stack) record(p *Proc, program string) {
	if s.PIDFile == "" {
		return
	}
	f, err := os.OpenFile(s.PIDFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%d %s\n", p.cmd.Process.Pid, program)
}

// StopLeftover stops the processes a previous stack recorded in pidFile and left
// running, and removes the file. A recorded process group whose leader no longer
// runs the recorded program (the PID was reused) is left alone. It returns the
// names of the programs it stopped.
func StopLeftover(pidFile string, grace time.Duration) ([]string, error) {
	f, err := os.Open(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	type child struct {
		pid     int
		program string
	}
	var children []child
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pidText, program, ok := strings.Cut(sc.Text(), " ")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 1 {
			continue
		}
		children = append(children, child{pid, program})
	}
	f.Close()
	var stopped []string
	// Last started first, as Stack.Stop does.
	for i := len(children) - 1; i >= 0; i-- {
		c := children[i]
		if !runs(c.pid, c.program) {
			continue
		}
		_ = syscall.Kill(-c.pid, syscall.SIGTERM)
		deadline := time.Now().Add(grace)
		for runs(c.pid, c.program) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if runs(c.pid, c.program) {
			_ = syscall.Kill(-c.pid, syscall.SIGKILL)
		}
		stopped = append(stopped, c.program)
	}
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return stopped, err
	}
	return stopped, nil
}

// runs reports whether pid is alive and runs program (by /proc/PID/exe, or its
// command line where exe cannot be read).
func runs(pid int, program string) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
		exe = strings.TrimSuffix(exe, " (deleted)")
		if resolved, err := filepath.EvalSymlinks(program); err == nil && resolved == exe {
			return true
		}
		return exe == program
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(cmdline), "\x00")
	return first == program
}
