package scale

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's CPU times (100 on
// every Linux this runs on).
const clockTicks = 100

// usage is a process group's CPU time and memory: every process whose group is pgid
// (stack.Stack starts each program in a group of its own), and every child of pgid's
// leader (PostgreSQL's backends start sessions of their own).
type usage struct {
	CPU time.Duration // user + system
	RSS int64         // bytes, summed over the group
}

func groupUsage(pgid int) usage {
	var u usage
	entries, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, stat := range entries {
		b, err := os.ReadFile(stat)
		if err != nil {
			continue
		}
		// The fields after the command, which is in parentheses and may hold spaces.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		// f[0] is state (field 3): ppid is field 4, pgrp 5, utime 14, stime 15, rss 24.
		if len(f) < 22 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if pg, _ := strconv.Atoi(f[2]); pg != pgid && ppid != pgid {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		rss, _ := strconv.ParseInt(f[21], 10, 64)
		u.CPU += time.Duration(ut+st) * time.Second / clockTicks
		u.RSS += rss * int64(os.Getpagesize())
	}
	return u
}

// sampler follows process groups every second: CPU time used since it began and
// the highest RSS seen.
type sampler struct {
	mu    sync.Mutex
	first map[string]time.Duration
	last  map[string]usage
	peak  map[string]int64
	// gone keeps the CPU of a group that ended (a killed worker) to add to the
	// total of a later group of the same name.
	gone map[string]time.Duration
	pids map[string]int
	stop chan struct{}
	done chan struct{}
}

func newSampler() *sampler {
	s := &sampler{first: map[string]time.Duration{}, last: map[string]usage{}, peak: map[string]int64{},
		gone: map[string]time.Duration{}, pids: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				s.sample()
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// watch starts following a process group under name; a name already followed (a
// restarted worker) adds the earlier group's CPU.
func (s *sampler) watch(name string, pgid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pids[name]; ok {
		s.gone[name] += s.last[name].CPU - s.first[name]
	}
	s.pids[name] = pgid
	u := groupUsage(pgid)
	s.first[name], s.last[name] = u.CPU, u
}

func (s *sampler) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, pgid := range s.pids {
		u := groupUsage(pgid)
		if u.CPU == 0 && u.RSS == 0 {
			continue // ended: keep its last figures
		}
		s.last[name] = u
		s.peak[name] = max(s.peak[name], u.RSS)
	}
}

// result stops sampling and returns each group's CPU time and peak RSS.
func (s *sampler) result() map[string]usage {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]usage{}
	for name := range s.pids {
		out[name] = usage{CPU: s.last[name].CPU - s.first[name] + s.gone[name], RSS: s.peak[name]}
	}
	return out
}
