package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuUsage is a process's CPU time so far (user + system) and its peak
// resident set size.
type cpuUsage struct {
	CPU     time.Duration
	PeakRSS int64 // bytes
}

// procUsage reads /proc/PID/stat and /proc/PID/status: the CPU time of
// every thread of the process and its high-water RSS (VmHWM).
func procUsage(pid int) (cpuUsage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuUsage{}, err
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return cpuUsage{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return cpuUsage{}, err
	}
	rss, err := parseStatusKB(status, "VmHWM:")
	if err != nil {
		return cpuUsage{}, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return cpuUsage{CPU: cpu, PeakRSS: rss * 1024}, nil
}

// parseStatCPU returns utime+stime from the contents of /proc/PID/stat. The
// command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no ')' closing the command name")
	}
	// Fields after ')' start with field 3 (state); utime and stime are
	// fields 14 and 15.
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, k := range []int{11, 12} {
		n, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("field %d %q: not a tick count", k+3, f[k])
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// parseStatusKB returns the value, in kB, of the line of /proc/PID/status
// that starts with key.
func parseStatusKB(status []byte, key string) (int64, error) {
	for line := range strings.Lines(string(status)) {
		rest, ok := strings.CutPrefix(line, key)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s %q: want a number and kB", key, strings.TrimSpace(rest))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%s %q: not a size", key, f[0])
		}
		return n, nil
	}
	return 0, fmt.Errorf("no %s line", key)
}

// selfUsage is this whole process's usage, from getrusage: what the bench
// reports when the verifier shares the process with the load generator.
func selfUsage() (cpuUsage, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuUsage{}, err
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return cpuUsage{CPU: cpu, PeakRSS: ru.Maxrss * 1024}, nil
}
