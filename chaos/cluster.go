package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/client"
)

// How long to wait for things that depend on the machine's load (the test
// machine is often busy compiling): generous, since a miss fails the run.
const (
	startTimeout    = 60 * time.Second
	stopTimeout     = 20 * time.Second
	leaderTimeout   = 10 * time.Second
	catchUpTimeout  = 60 * time.Second
	convergeTimeout = 60 * time.Second
	pollInterval    = 50 * time.Millisecond
)

type nodeState uint8

const (
	stopped nodeState = iota
	running
	paused
)

// node is one member: its files and, while it runs, its process.
type node struct {
	idx     int
	dataDir string
	logPath string

	// Guarded by cluster.mu.
	state      nodeState
	cmd        *exec.Cmd
	done       chan struct{} // closed once the current process has exited
	expectExit bool          // the run killed or stopped it
	exitErr    error         // how the last process ended
	starts     int
}

// cluster runs the keyvald processes and implements Env for the nemeses.
type cluster struct {
	hosts   Hosts
	keyvald string
	args    []string // extra keyvald flags
	initial string
	nodes   []*node
	status  *client.Client // Status calls only
	events  *eventLog

	mu sync.Mutex
	// problems are what the processes did that they should not have
	// (exited on their own, failed a clean shutdown); each fails the run.
	problems []string
}

func newCluster(hosts Hosts, n int, keyvald, dir string, args []string, events *eventLog) (*cluster, error) {
	c := &cluster{hosts: hosts, keyvald: keyvald, args: args, events: events}
	var parts, endpoints []string
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, &node{
			idx:     i,
			dataDir: filepath.Join(dir, "data", nodeName(i)),
			logPath: filepath.Join(dir, "logs", nodeName(i)+".log"),
		})
		parts = append(parts, fmt.Sprintf("%d=%s", i+1, hosts.PeerAddr(i)))
		endpoints = append(endpoints, hosts.ClientAddr(i))
	}
	c.initial = strings.Join(parts, ",")
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("creating the log directory: %w", err)
	}
	st, err := client.New(client.Config{Endpoints: endpoints, DialTimeout: time.Second})
	if err != nil {
		return nil, err
	}
	c.status = st
	return c, nil
}

func (c *cluster) Size() int { return len(c.nodes) }

func (c *cluster) Note(format string, args ...any) { c.events.note(format, args...) }

func (c *cluster) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	c.problems = append(c.problems, msg)
	c.mu.Unlock()
	c.events.note("PROBLEM: %s", msg)
}

func (c *cluster) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.problems...)
}

// launch starts node i's process without waiting for it to answer.
func (c *cluster) launch(i int) error {
	n := c.nodes[i]
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.state != stopped {
		return nil
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening %s: %w", n.logPath, err)
	}
	n.starts++
	fmt.Fprintf(logf, "=== kvchaos: start #%d of %s at t=%.3fs ===\n", n.starts, nodeName(i), time.Duration(c.events.since()).Seconds())
	args := append([]string{
		"--id", fmt.Sprint(i + 1), "--data-dir", n.dataDir,
		"--listen-client", c.hosts.ClientAddr(i), "--listen-peer", c.hosts.PeerAddr(i),
		"--initial-cluster", c.initial,
	}, c.args...)
	cmd := c.hosts.Command(i, c.keyvald, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group keeps a Ctrl-C at the terminal away from the
	// members (the driver stops them); the parent-death signal takes them
	// down if the driver dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", nodeName(i), err)
	}
	pid := cmd.Process.Pid
	if err := recordPid(pid, n.dataDir); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		return err
	}
	done := make(chan struct{})
	n.cmd, n.done, n.state, n.expectExit, n.exitErr = cmd, done, running, false, nil
	go func() {
		err := cmd.Wait()
		logf.Close()
		forgetPid(pid)
		c.mu.Lock()
		expected := n.expectExit
		n.exitErr, n.state, n.cmd = err, stopped, nil
		c.mu.Unlock()
		close(done)
		if !expected {
			c.problem("%s (pid %d) exited on its own: %v; see %s", nodeName(i), pid, err, n.logPath)
		}
	}()
	return nil
}

// Start starts node i (if stopped) and waits until it answers Status.
func (c *cluster) Start(ctx context.Context, i int) error {
	if err := c.launch(i); err != nil {
		return err
	}
	return c.waitAnswering(ctx, i)
}

func (c *cluster) waitAnswering(ctx context.Context, i int) error {
	n := c.nodes[i]
	c.mu.Lock()
	done := n.done
	c.mu.Unlock()
	deadline := time.Now().Add(startTimeout)
	var last error
	for {
		if done != nil {
			select {
			case <-done:
				return fmt.Errorf("%s exited while starting: see %s", nodeName(i), n.logPath)
			default:
			}
		}
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.status.Status(actx, c.hosts.ClientAddr(i))
		cancel()
		if err == nil {
			return nil
		}
		last = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within %v of starting (last error: %v); see %s", nodeName(i), startTimeout, last, n.logPath)
		}
		if err := hold(ctx, pollInterval); err != nil {
			return err
		}
	}
}

// signal sends sig to node i's process if it runs; it returns the channel
// closed when the process exits (nil if it was not running).
func (c *cluster) signal(i int, sig syscall.Signal, expectExit bool) (chan struct{}, error) {
	n := c.nodes[i]
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.state == stopped {
		return nil, nil
	}
	if expectExit {
		n.expectExit = true
	}
	if err := n.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		// (Done: it exited just now and its waiter has not noted it yet.)
		return nil, fmt.Errorf("%v to %s: %w", sig, nodeName(i), err)
	}
	return n.done, nil
}

func (c *cluster) Kill(i int) error {
	done, err := c.signal(i, syscall.SIGKILL, true)
	if err != nil || done == nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("%s did not exit within %v of SIGKILL", nodeName(i), stopTimeout)
	}
}

// Stop shuts node i down with SIGTERM (waking it first if paused) and
// expects a clean exit; anything else is a problem of the run.
func (c *cluster) Stop(ctx context.Context, i int) error {
	c.mu.Lock()
	wasPaused := c.nodes[i].state == paused
	c.mu.Unlock()
	if wasPaused {
		if err := c.Resume(i); err != nil {
			return err
		}
	}
	done, err := c.signal(i, syscall.SIGTERM, true)
	if err != nil || done == nil {
		return err
	}
	select {
	case <-done:
	case <-time.After(stopTimeout):
		c.problem("%s did not stop within %v of SIGTERM; killed", nodeName(i), stopTimeout)
		return c.Kill(i)
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	exitErr := c.nodes[i].exitErr
	c.mu.Unlock()
	if exitErr != nil {
		c.problem("%s exited with an error on SIGTERM: %v; see %s", nodeName(i), exitErr, c.nodes[i].logPath)
	}
	return nil
}

func (c *cluster) Pause(i int) error {
	n := c.nodes[i]
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.state != running {
		return fmt.Errorf("pause %s: it is not running", nodeName(i))
	}
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP to %s: %w", nodeName(i), err)
	}
	n.state = paused
	return nil
}

func (c *cluster) Resume(i int) error {
	n := c.nodes[i]
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.state != paused {
		return nil
	}
	if err := n.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("SIGCONT to %s: %w", nodeName(i), err)
	}
	n.state = running
	return nil
}

func (c *cluster) CanPartition() bool     { return c.hosts.CanPartition() }
func (c *cluster) Cut(from, to int) error { return c.hosts.Cut(from, to) }
func (c *cluster) HealNetwork() error     { return c.hosts.Heal() }

// statuses asks every member at once; a member that does not answer within
// a second has Err set.
func (c *cluster) statuses(ctx context.Context) []client.NodeStatus {
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return c.status.StatusAll(actx)
}

// leaderOf picks, among answers, the node that says it leads in the highest
// term.
func leaderOf(sts []client.NodeStatus) (int, bool) {
	best := -1
	for i, st := range sts {
		if st.Err == nil && st.Role == "Leader" && (best < 0 || st.Term > sts[best].Term) {
			best = i
		}
	}
	return best, best >= 0
}

func (c *cluster) Leader(ctx context.Context) (int, error) {
	deadline := time.Now().Add(leaderTimeout)
	for {
		if i, ok := leaderOf(c.statuses(ctx)); ok {
			return i, nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no leader within %v", leaderTimeout)
		}
		if err := hold(ctx, pollInterval); err != nil {
			return -1, err
		}
	}
}

func (c *cluster) WaitCaughtUp(ctx context.Context, i int) error {
	deadline := time.Now().Add(catchUpTimeout)
	var target uint64
	for {
		sts := c.statuses(ctx)
		if target == 0 {
			if l, ok := leaderOf(sts); ok {
				target = sts[l].Commit
			}
		}
		if target > 0 && sts[i].Err == nil && sts[i].Applied >= target {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not catch up within %v (leader's commit %d; its status: %s)", nodeName(i), catchUpTimeout, target, describeStatus(sts[i]))
		}
		if err := hold(ctx, pollInterval); err != nil {
			return err
		}
	}
}

// HealAll undoes every fault: wakes paused nodes, heals the network and
// starts every stopped node, then waits until all answer.
func (c *cluster) HealAll(ctx context.Context) error {
	var errs []error
	for i := range c.nodes {
		if err := c.Resume(i); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.hosts.Heal(); err != nil {
		errs = append(errs, err)
	}
	for i := range c.nodes {
		if err := c.Start(ctx, i); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Converge waits until every member has applied everything the leader has
// in its log, and nothing moved between two looks. It returns the final
// statuses.
func (c *cluster) Converge(ctx context.Context) ([]client.NodeStatus, error) {
	deadline := time.Now().Add(convergeTimeout)
	var prev []client.NodeStatus
	for {
		sts := c.statuses(ctx)
		if converged(sts) && prev != nil && converged(prev) && sts[0].Applied == prev[0].Applied {
			return sts, nil
		}
		prev = sts
		if time.Now().After(deadline) {
			var parts []string
			for _, st := range sts {
				parts = append(parts, describeStatus(st))
			}
			return sts, fmt.Errorf("the members did not converge within %v: %s", convergeTimeout, strings.Join(parts, "; "))
		}
		if err := hold(ctx, 300*time.Millisecond); err != nil {
			return sts, err
		}
	}
}

// converged: a leader, and every member has applied the leader's whole log.
func converged(sts []client.NodeStatus) bool {
	l, ok := leaderOf(sts)
	if !ok || sts[l].Commit != sts[l].LastIndex {
		return false
	}
	for _, st := range sts {
		if st.Err != nil || st.Applied != sts[l].Commit || st.LastIndex != sts[l].LastIndex {
			return false
		}
	}
	return true
}

func describeStatus(st client.NodeStatus) string {
	if st.Err != nil {
		return fmt.Sprintf("%s: no answer (%v)", st.Endpoint, st.Err)
	}
	return fmt.Sprintf("n%d %s term %d commit %d applied %d last %d leader %d", st.ID, st.Role, st.Term, st.Commit, st.Applied, st.LastIndex, st.LeaderID)
}

// StopAll shuts every member down cleanly (the end of a finished run).
func (c *cluster) StopAll(ctx context.Context) error {
	var errs []error
	for i := range c.nodes {
		if err := c.Stop(ctx, i); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// KillAll kills every member that still runs (an interrupted or failed
// run) and waits for them to exit.
func (c *cluster) KillAll() error {
	var errs []error
	for i := range c.nodes {
		if err := c.Kill(i); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *cluster) Close() error {
	err := c.KillAll()
	return errors.Join(err, c.status.Close())
}

func (c *cluster) logPaths() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.logPath)
	}
	return out
}

// leaderWatch polls the members and records every newly elected leader it
// sees. Polling every 250 ms can miss a leader that lasted less than that.
type leaderWatch struct {
	mu        sync.Mutex
	elections int    // (term, leader) pairs seen, each in a higher term than the last
	changes   int    // of those, how many named a different node than the one before
	lastTerm  uint64 // term of the last leader seen
	lastID    uint64
	maxTerm   uint64
}

func (c *cluster) watchLeaders(ctx context.Context, w *leaderWatch) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		sts := c.statuses(ctx)
		w.mu.Lock()
		for _, st := range sts {
			if st.Err == nil && st.Term > w.maxTerm {
				w.maxTerm = st.Term
			}
		}
		if l, ok := leaderOf(sts); ok && sts[l].Term > w.lastTerm {
			if w.lastID != 0 && sts[l].ID != w.lastID {
				w.changes++
			}
			w.elections++
			w.lastTerm, w.lastID = sts[l].Term, sts[l].ID
			c.events.note("leader: n%d in term %d", sts[l].ID, sts[l].Term)
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
