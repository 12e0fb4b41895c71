package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/internal/freeport"
)

// node is one keyvald process of the benchmark cluster.
type node struct {
	id         uint64
	clientAddr string
	peerAddr   string
	dataDir    string
	logPath    string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current process has exited
	exitErr error
	// expectExit is set before the driver itself stops or kills the node,
	// so that its exit is not reported as a crash.
	expectExit bool
	// crashReported: crashed has already reported this exit.
	crashReported bool
}

// cluster is the three members and how to run them.
type cluster struct {
	bin  string   // keyvald, or etcd for the watch-lease step's etcd side
	args []string // flags every member gets besides its own
	// memberArgs are a member's own flags; nil: keyvald's.
	memberArgs func(c *cluster, n *node) []string
	nodes      []*node
	initial    string // --initial-cluster
	// commands records each distinct command line used to start a member.
	commands []string
}

// newCluster lays out three members under dir. ports holds each member's
// client and peer port.
func newCluster(keyvald, dir string, ports [3][2]int, extra []string) *cluster {
	c := &cluster{bin: keyvald, args: extra}
	var peers []string
	for i, p := range ports {
		n := &node{
			id:         uint64(i + 1),
			clientAddr: "127.0.0.1:" + strconv.Itoa(p[0]),
			peerAddr:   "127.0.0.1:" + strconv.Itoa(p[1]),
			dataDir:    filepath.Join(dir, "data", strconv.Itoa(i+1)),
			logPath:    filepath.Join(dir, "logs", strconv.Itoa(i+1)+".log"),
		}
		c.nodes = append(c.nodes, n)
		peers = append(peers, fmt.Sprintf("%d=%s", n.id, n.peerAddr))
	}
	c.initial = strings.Join(peers, ",")
	return c
}

// fixedPorts gives member i the client port base+10000*i and the peer port
// one above (3379/3380, 13379/13380, 23379/23380 for base 3379), beside
// make cluster-start's 2379/2380, 12379/12380, 22379/22380.
func fixedPorts(base int) [3][2]int {
	var ports [3][2]int
	for i := range ports {
		ports[i] = [2]int{base + 10000*i, base + 10000*i + 1}
	}
	return ports
}

// freePorts picks six unused loopback ports. Another process could take
// one before keyvald binds it; the start then fails loudly.
func freePorts() ([3][2]int, error) {
	var ports [3][2]int
	for i := range 6 {
		addr, err := freeport.Loopback()
		if err != nil {
			return ports, fmt.Errorf("finding a free port: %w", err)
		}
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			return ports, fmt.Errorf("finding a free port: %w", err)
		}
		if ports[i/2][i%2], err = strconv.Atoi(p); err != nil {
			return ports, fmt.Errorf("finding a free port: %w", err)
		}
	}
	return ports, nil
}

// endpoints returns the members' client addresses, comma-separated.
func (c *cluster) endpoints(except ...*node) string {
	var out []string
	for _, n := range c.nodes {
		if !slices.Contains(except, n) {
			out = append(out, n.clientAddr)
		}
	}
	return strings.Join(out, ",")
}

// checkPortsFree refuses to start when another process (a make
// cluster-start cluster, another benchmark) holds one of the ports.
func (c *cluster) checkPortsFree() error {
	for _, n := range c.nodes {
		for _, addr := range []string{n.clientAddr, n.peerAddr} {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("port %s is in use (another cluster or benchmark running? pick others with --base-port, or 0 for any free ones): %w", addr, err)
			}
			_ = l.Close()
		}
	}
	return nil
}

// start launches the member (resuming from its data directory if it has
// one). Its output is appended to its log file.
func (c *cluster) start(n *node) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && !isClosed(n.exited) {
		return fmt.Errorf("node %d is already running (pid %d)", n.id, n.cmd.Process.Pid)
	}
	if err := os.MkdirAll(filepath.Dir(n.logPath), 0o755); err != nil {
		return fmt.Errorf("node %d: %w", n.id, err)
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("node %d: %w", n.id, err)
	}
	args := append(c.ownArgs(n), c.args...)
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttrs()
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("starting node %d: %w", n.id, err)
	}
	track(cmd.Process)
	n.cmd, n.exited, n.exitErr, n.expectExit, n.crashReported = cmd, make(chan struct{}), nil, false, false
	exited := n.exited
	go func() {
		err := cmd.Wait()
		_ = logf.Close()
		untrack(cmd.Process)
		n.mu.Lock()
		n.exitErr = err
		n.mu.Unlock()
		close(exited)
	}()
	if line := shellQuote(c.bin, args); !slices.Contains(c.commands, line) {
		c.commands = append(c.commands, line)
	}
	return nil
}

// ownArgs are the flags that differ from member to member.
func (c *cluster) ownArgs(n *node) []string {
	if c.memberArgs != nil {
		return c.memberArgs(c, n)
	}
	return []string{
		"--id", strconv.FormatUint(n.id, 10), "--data-dir", n.dataDir,
		"--listen-client", n.clientAddr, "--listen-peer", n.peerAddr, "--initial-cluster", c.initial,
	}
}

// startAll starts every member.
func (c *cluster) startAll() error {
	for _, n := range c.nodes {
		if err := c.start(n); err != nil {
			return err
		}
	}
	return nil
}

// pid returns the running process's id (0 if not running).
func (n *node) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || isClosed(n.exited) {
		return 0
	}
	return n.cmd.Process.Pid
}

// crashed returns an error, once, if the member exited without the driver
// asking it to.
func (n *node) crashed() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.expectExit || n.crashReported || !isClosed(n.exited) {
		return nil
	}
	n.crashReported = true
	return fmt.Errorf("node %d exited unexpectedly (%v); its log ends:\n%s", n.id, n.exitErr, logTail(n.logPath, 8))
}

// allRunning says whether every member is up.
func (c *cluster) allRunning() bool {
	for _, n := range c.nodes {
		if n.pid() == 0 {
			return false
		}
	}
	return true
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *node) kill() error { return n.signalAndWait(syscall.SIGKILL, 10*time.Second) }

// stop sends SIGTERM (a clean shutdown) and waits up to timeout, then
// SIGKILL.
func (n *node) stop(timeout time.Duration) error {
	if err := n.signalAndWait(syscall.SIGTERM, timeout); err == nil {
		return nil
	}
	return n.kill()
}

func (n *node) signalAndWait(sig syscall.Signal, timeout time.Duration) error {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	if cmd == nil || isClosed(exited) {
		n.mu.Unlock()
		return nil
	}
	n.expectExit = true
	n.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling node %d: %w", n.id, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("node %d did not exit %v after %v", n.id, timeout, sig)
	}
}

// stopAll shuts every member down cleanly (SIGKILL after 10s).
func (c *cluster) stopAll() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(func() { _ = n.stop(10 * time.Second) })
	}
	wg.Wait()
}

// checkRunning returns the first member that crashed.
func (c *cluster) checkRunning() error {
	for _, n := range c.nodes {
		if err := n.crashed(); err != nil {
			return err
		}
	}
	return nil
}

// statusOf asks one member for its status over a fresh connection. A
// fresh connection per question matters right after a member restarts:
// a long-lived one would wait out gRPC's reconnect backoff and make the
// member look slower to come back than it is.
func statusOf(ctx context.Context, addr string, timeout time.Duration) (client.NodeStatus, error) {
	c, err := client.New(client.Config{Endpoints: []string{addr}, DialTimeout: timeout, RequestTimeout: timeout})
	if err != nil {
		return client.NodeStatus{}, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.Status(ctx, addr)
}

// view is one round of status answers from the members given.
type view struct {
	st  map[*node]client.NodeStatus
	err map[*node]error
}

func (c *cluster) view(ctx context.Context, nodes []*node) view {
	v := view{st: map[*node]client.NodeStatus{}, err: map[*node]error{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			st, err := statusOf(ctx, n.clientAddr, time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				v.err[n] = err
			} else {
				v.st[n] = st
			}
		})
	}
	wg.Wait()
	return v
}

// leader returns the member that claims to lead with the highest term,
// and that term (nil if none does).
func (v view) leader() (*node, uint64) {
	var best *node
	var term uint64
	for n, st := range v.st {
		if strings.EqualFold(st.Role, "leader") && (best == nil || st.Term > term) {
			best, term = n, st.Term
		}
	}
	return best, term
}

// maxTerm is the highest term any member reported.
func (v view) maxTerm() uint64 {
	var t uint64
	for _, st := range v.st {
		t = max(t, st.Term)
	}
	return t
}

// waitHealthy waits until every member of nodes answers, they all follow
// the same leader, and each has applied everything the leader had
// committed when the wait began. It returns the leader.
func (c *cluster) waitHealthy(ctx context.Context, nodes []*node, timeout time.Duration) (*node, error) {
	deadline := time.Now().Add(timeout)
	var target uint64 // the leader's commit index when first seen
	var last string
	for {
		if err := c.checkRunningOf(nodes); err != nil {
			return nil, err
		}
		v := c.view(ctx, nodes)
		l, _ := v.leader()
		if l != nil && len(v.err) == 0 {
			if target == 0 {
				target = v.st[l].Commit
			}
			ok := true
			for n, st := range v.st {
				if st.LeaderID != l.id || st.Applied < target {
					ok = false
					last = fmt.Sprintf("node %d: leader %d, applied %d of %d", n.id, st.LeaderID, st.Applied, target)
				}
			}
			if ok {
				return l, nil
			}
		} else if l == nil {
			last = "no leader"
			for n, err := range v.err {
				last += fmt.Sprintf("; node %d: %v", n.id, err)
			}
		} else {
			for n, err := range v.err {
				last = fmt.Sprintf("node %d: %v", n.id, err)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cluster not healthy after %v: %s", timeout, last)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

func (c *cluster) checkRunningOf(nodes []*node) error {
	for _, n := range nodes {
		if err := n.crashed(); err != nil {
			return err
		}
	}
	return nil
}

// residentKiB is a process's resident memory, from /proc/PID/status: the
// whole set, and its anonymous (Go heap, stacks) and file-backed (bbolt's
// memory map, the binary) parts; and the whole set's peak over the
// process's life (VmHWM).
type residentKiB struct{ rss, anon, file, peak int64 }

func memKiB(pid int) (residentKiB, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return residentKiB{}, err
	}
	var m residentKiB
	for _, f := range []struct {
		name string
		v    *int64
	}{{"VmRSS", &m.rss}, {"RssAnon", &m.anon}, {"RssFile", &m.file}, {"VmHWM", &m.peak}} {
		if *f.v, err = parseStatusKiB(string(raw), f.name); err != nil {
			return residentKiB{}, err
		}
	}
	return m, nil
}

// userHZ is the unit of the CPU times in /proc/PID/stat: fixed at 100 a
// second in the Linux user ABI whatever the kernel's own tick rate.
const userHZ = 100

// cpuTime reads the CPU time (user and system) a process has used.
func cpuTime(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, errors.New("not running")
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(raw))
}

// parseStatCPU adds utime and stime, fields 14 and 15 of /proc/PID/stat.
// The command name (field 2) is in parentheses and may hold spaces, so the
// fields are counted from the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat line")
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, errors.New("short /proc stat line")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed CPU times in /proc stat line")
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// parseVmRSS finds the VmRSS line of a /proc/PID/status file.
func parseVmRSS(status string) (int64, error) { return parseStatusKiB(status, "VmRSS") }

// parseStatusKiB finds the line "name: N kB" of a /proc/PID/status file.
func parseStatusKiB(status, name string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", name, line)
		}
		return strconv.ParseInt(fields[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s line (is the process a zombie?)", name)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isClosed(ch chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// startStopped starts every member that is not running.
func (c *cluster) startStopped() error {
	for _, n := range c.nodes {
		if n.pid() == 0 {
			if err := c.start(n); err != nil {
				return err
			}
		}
	}
	return nil
}
