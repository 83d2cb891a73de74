// Package proc builds and runs the server processes the benchmarks measure:
// it starts a binary, waits for its "listening on ADDR" line, pins it to
// CPUs, and reads its CPU time and memory from /proc.
package proc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Build runs `go build -o out pkg` in dir.
func Build(ctx context.Context, dir, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, stderr.String())
	}
	return nil
}

// RepoRoot walks up from the working directory to the directory holding
// the Gatehouse go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/gatehouse-proxy/gatehouse\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("gatehouse repository root not found above the working directory")
		}
		dir = parent
	}
}

// Process is a running server.
type Process struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	tail   []string // last lines of stderr, for error messages
}

// Options configure Start.
type Options struct {
	// CPUs pins the process (taskset when present, else sched_setaffinity
	// on every thread right after start). Empty: not pinned.
	CPUs []int
	// Ready matches the stdout or stderr line saying the server listens;
	// its "on ADDR" parts are returned. Default: a line containing " on ".
	Ready *regexp.Regexp
	// Env is added to the environment.
	Env []string
	// Dir is the working directory.
	Dir string
	// Timeout bounds the wait for Ready. Default 60s.
	Timeout time.Duration
	// NoWait returns as soon as the process started, for servers that
	// announce nothing; the caller polls their port.
	NoWait bool
}

var onAddr = regexp.MustCompile(` on (\[?[0-9a-zA-Z.:\]-]+:\d+)`)

// Start runs bin with args and waits until it reports where it listens. The
// addresses named ("on ADDR") are returned in order.
func Start(ctx context.Context, bin string, args []string, o Options) (*Process, []string, error) {
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	ready := o.Ready
	if ready == nil {
		ready = regexp.MustCompile(` on `)
	}
	ctx, cancel := context.WithCancel(ctx)
	name, argv := bin, args
	taskset, _ := exec.LookPath("taskset")
	if len(o.CPUs) > 0 && taskset != "" {
		name, argv = taskset, append([]string{"-c", cpuList(o.CPUs), bin}, args...)
	}
	p := &Process{cmd: exec.CommandContext(ctx, name, argv...), cancel: cancel, done: make(chan struct{})}
	p.cmd.Cancel = func() error { return p.cmd.Process.Signal(os.Interrupt) }
	p.cmd.WaitDelay = 10 * time.Second
	p.cmd.Env = append(os.Environ(), o.Env...)
	p.cmd.Dir = o.Dir
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if err := p.cmd.Start(); err != nil {
		cancel()
		return nil, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	addrs := make(chan []string, 2)
	scan := func(r io.Reader) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			if len(p.tail) == 20 {
				p.tail = p.tail[1:]
			}
			p.tail = append(p.tail, line)
			p.mu.Unlock()
			if ready.MatchString(line) {
				var as []string
				for _, m := range onAddr.FindAllStringSubmatch(line, -1) {
					as = append(as, m[1])
				}
				select {
				case addrs <- as:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}
	go scan(stdout)
	go scan(stderr)
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	if o.NoWait {
		if len(o.CPUs) > 0 && taskset == "" {
			if err := PinAll(p.Pid(), o.CPUs); err != nil {
				p.Stop()
				return nil, nil, err
			}
		}
		return p, nil, nil
	}
	select {
	case as := <-addrs:
		if len(o.CPUs) > 0 && taskset == "" {
			if err := PinAll(p.Pid(), o.CPUs); err != nil {
				p.Stop()
				return nil, nil, err
			}
		}
		return p, as, nil
	case <-p.done:
		p.Stop()
		return nil, nil, fmt.Errorf("%s exited before listening:\n%s", bin, p.Tail())
	case <-time.After(o.Timeout):
		p.Stop()
		return nil, nil, fmt.Errorf("%s did not report listening within %s:\n%s", bin, o.Timeout, p.Tail())
	}
}

// Pid is the server's process id (the binary itself: taskset execs it).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Tail returns the last lines the process wrote.
func (p *Process) Tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop interrupts the process and waits for it to exit.
func (p *Process) Stop() {
	p.cancel()
	<-p.done
}

// Stats are a process's counters at one moment.
type Stats struct {
	// CPU is user+system time consumed so far.
	CPU time.Duration
	// RSS and PeakRSS (VmHWM) in bytes.
	RSS, PeakRSS int64
	// AnonRSS (heap, stacks) and FileRSS (pages of the binary and other
	// mapped files, shared and reclaimable) split RSS, in bytes.
	AnonRSS, FileRSS int64
	// Threads is the number of OS threads.
	Threads int
}

// clockTick is USER_HZ; 100 on every Linux architecture Go supports.
const clockTick = 100

// ReadStats reads /proc/<pid>/stat and /proc/<pid>/status.
func ReadStats(pid int) (Stats, error) {
	var s Stats
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.CPU = time.Duration(ut+st) * time.Second / clockTick
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "VmRSS":
			s.RSS = kb(v)
		case "VmHWM":
			s.PeakRSS = kb(v)
		case "RssAnon":
			s.AnonRSS = kb(v)
		case "RssFile":
			s.FileRSS = kb(v)
		case "Threads":
			s.Threads, _ = strconv.Atoi(v)
		}
	}
	return s, nil
}

func kb(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	return n << 10
}

// PinAll sets the CPU affinity of every thread of pid.
func PinAll(pid int, cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("sched_setaffinity(%d): %w", tid, err)
		}
	}
	return nil
}

// PinSelf pins the calling process to cpus and sets GOMAXPROCS to match.
func PinSelf(cpus []int) error {
	if err := PinAll(os.Getpid(), cpus); err != nil {
		return err
	}
	runtime.GOMAXPROCS(len(cpus))
	return nil
}

// SplitCPUs returns the CPUs for the load generator and for the server:
// half each, or nil, nil when there are fewer than two.
func SplitCPUs() (client, server []int) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, nil
	}
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		return nil, nil
	}
	half := len(cpus) / 2
	return cpus[:half], cpus[half:]
}

func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}
