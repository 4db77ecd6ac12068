package bench

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// startReplicas starts opts.Replicas verifier child processes over the
// shared store opts.Store, each on a loopback port chosen in advance so that
// it can advertise it (`vigil bench verifier-process --listen --advertise
// --replica-id`, as `vigil verifier --advertise --replica-id` runs one). Their
// CPU is summed and their peak RSS is the largest; their own verdict times
// are merged.
func startReplicas(ctx context.Context, d *deployment, opts Options, base VerifierConfig) error {
	n := opts.Replicas
	hs := make([]*verifierHandle, 0, n)
	stopAll := func() {
		for _, h := range hs {
			h.stop()
		}
	}
	d.replicaNames = map[string]string{}
	for i := range n {
		addr, err := freeLoopbackAddr()
		if err != nil {
			stopAll()
			return err
		}
		cfg := base
		cfg.DataDir = filepath.Join(base.DataDir, fmt.Sprintf("r%d", i+1))
		cfg.Listen = addr
		cfg.ReplicaURL = "https://" + addr
		cfg.ReplicaID = fmt.Sprintf("bench-r%d", i+1)
		h, err := startChildVerifier(ctx, opts.VerifierExe, cfg)
		if err != nil {
			stopAll()
			return fmt.Errorf("replica %s: %w", cfg.ReplicaID, err)
		}
		hs = append(hs, h)
		d.verifierURLs = append(d.verifierURLs, h.URL)
		d.replicaNames[h.URL] = cfg.ReplicaID
	}
	d.mode = "child"
	d.verifierURL = d.verifierURLs[0]
	d.close = stopAll

	rm := &replicaMeter{hs: hs, last: make([]cpuUsage, n), dead: make([]bool, n)}
	var pids, names []string
	for _, h := range hs {
		pids = append(pids, fmt.Sprint(h.pid))
		names = append(names, fmt.Sprintf("%s %s (pid %d)", d.replicaNames[h.URL], h.URL, h.pid))
	}
	d.meter = meter{
		cpuSource: fmt.Sprintf("sum over the %d verifier replica child processes (pids %s), utime+stime from /proc/PID/stat; a killed replica's CPU up to its kill",
			n, strings.Join(pids, ", ")),
		rssSource: "the largest VmHWM of the replicas from /proc/PID/status (each one's peak over its whole life)",
		read:      func(context.Context) (cpuUsage, error) { return rm.read() },
	}
	d.serverSource = fmt.Sprintf("the %d replicas' own clocks, evidence received to verdict stored, every verdict in the window merged "+
		"(a killed replica's times are collected just before it is killed)", n)
	d.serverTimes = rm.serverTimes
	d.killReplica = rm.killFirst
	d.describe = fmt.Sprintf("registrar %s (in this process), %d verifier replicas (child processes over PostgreSQL): %s",
		d.registrarURL, n, strings.Join(names, ", "))
	return nil
}

// freeLoopbackAddr picks a free loopback port for a child to listen on.
// The port is free when chosen; nothing else on this machine is expected to
// take it in the moment before the child does.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// replicaMeter reads the replicas' usage and verdict times, and keeps the
// last ones of a replica that was killed.
type replicaMeter struct {
	mu   sync.Mutex
	hs   []*verifierHandle
	last []cpuUsage
	dead []bool
	// killedTimes are the killed replica's verdict times since the last
	// serverTimes call, collected just before the kill.
	killedTimes []time.Duration
}

func (m *replicaMeter) read() (cpuUsage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sum cpuUsage
	for i, h := range m.hs {
		if !m.dead[i] {
			u, err := procUsage(h.pid)
			if err != nil {
				return sum, err
			}
			m.last[i] = u
		}
		sum.CPU += m.last[i].CPU
		sum.PeakRSS = max(sum.PeakRSS, m.last[i].PeakRSS)
	}
	return sum, nil
}

// serverTimes merges every replica's verdict times since the last call.
func (m *replicaMeter) serverTimes(ctx context.Context) (Latency, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	all := slices.Clone(m.killedTimes)
	m.killedTimes = nil
	for i, h := range m.hs {
		if m.dead[i] {
			continue
		}
		l, err := h.rawServerTimes(ctx)
		if err != nil {
			return Latency{}, err
		}
		all = append(all, l...)
	}
	return percentiles(all), nil
}

// killFirst SIGKILLs the first replica, after reading its CPU and verdict
// times one last time.
func (m *replicaMeter) killFirst(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hs[0]
	if m.dead[0] {
		return nil
	}
	if u, err := procUsage(h.pid); err == nil {
		m.last[0] = u
	}
	if l, err := h.rawServerTimes(ctx); err == nil {
		m.killedTimes = append(m.killedTimes, l...)
	}
	m.dead[0] = true
	h.kill()
	return nil
}

// countRevocations counts the revocation events the verifier raised for
// agents whose IDs start with prefix: its outbox in PostgreSQL, pending and
// delivered (the bench configures no sink, so events stay pending).
func countRevocations(ctx context.Context, store, prefix string) (int, error) {
	conn, err := pgx.Connect(ctx, store)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM verifier_outbox WHERE starts_with(agent_id, $1))
		+ (SELECT count(*) FROM verifier_outbox_delivered WHERE starts_with(agent_id, $1))`, prefix).Scan(&n)
	return n, err
}
