package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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
	// A removed member stops by itself about four election timeouts (1 s
	// with keyvald's defaults) after its removal commits.
	removedExitTimeout = 10 * time.Second
	// How long one membership change (remove, add a learner, promote) may
	// take, retries included.
	memberChangeTimeout = 60 * time.Second
	memberCallTimeout   = 5 * time.Second
	// firstReplacementID is the Raft id of the first replacement member;
	// each later one gets the next, so no id is ever used twice in a run.
	firstReplacementID = 100
)

type nodeState uint8

const (
	stopped nodeState = iota
	running
	paused
)

// node is one member's host: its addresses (by index), its files and,
// while it runs, its process. A replaced member keeps the host, the data
// directory's path and the log file, under a new Raft id.
type node struct {
	idx     int
	dataDir string
	logPath string

	// Guarded by cluster.mu.
	id         uint64 // current Raft id: idx+1 until the member is replaced
	joined     bool   // the member joined with --join (a replacement) rather than --initial-cluster
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
	status  *client.Client // Status and membership calls
	events  *eventLog

	mu     sync.Mutex
	nextID uint64 // the Raft id the next replacement member gets
	// problems are what the processes did that they should not have
	// (exited on their own, failed a clean shutdown); each fails the run.
	problems []string
}

func newCluster(hosts Hosts, n int, keyvald, dir string, args []string, events *eventLog) (*cluster, error) {
	c := &cluster{hosts: hosts, keyvald: keyvald, args: args, events: events, nextID: firstReplacementID}
	var parts, endpoints []string
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, &node{
			idx:     i,
			id:      uint64(i + 1),
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

// Defragment implements Env.
func (c *cluster) Defragment(ctx context.Context, i int) error {
	conn, err := grpc.NewClient(c.hosts.ClientAddr(i), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("defragment %s: %w", nodeName(i), err)
	}
	defer conn.Close()
	if _, err := pb.NewMaintenanceClient(conn).Defragment(ctx, &pb.DefragmentRequest{}); err != nil {
		return fmt.Errorf("defragment %s: %w", nodeName(i), err)
	}
	return nil
}

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

// startMarker begins the line written to a member's log before each start.
const startMarker = "=== kvchaos: start #"

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
	how := ""
	if n.joined {
		how = ", joining"
	}
	fmt.Fprintf(logf, startMarker+"%d of %s (raft id %d%s) at t=%.3fs ===\n", n.starts, nodeName(i), n.id, how, time.Duration(c.events.since()).Seconds())
	cmd := c.hosts.Command(i, c.keyvald, c.keyvaldArgs(i)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group keeps a Ctrl-C at the terminal away from the
	// members (the driver stops them); the parent-death signal takes them
	// down if the driver dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", hostAndID(i, n.id), err)
	}
	pid, id := cmd.Process.Pid, n.id
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
			c.problem("%s (pid %d) exited on its own: %v; see %s", hostAndID(i, id), pid, err, n.logPath)
		}
	}()
	return nil
}

// keyvaldArgs is node i's command line (cluster.mu held). A member of the
// initial cluster always starts with --initial-cluster; a replacement with
// --join and the client addresses of the other hosts (on a restart its data
// directory remembers that it joined, and --join is not used).
func (c *cluster) keyvaldArgs(i int) []string {
	n := c.nodes[i]
	args := []string{
		"--id", fmt.Sprint(n.id), "--data-dir", n.dataDir,
		"--listen-client", c.hosts.ClientAddr(i), "--listen-peer", c.hosts.PeerAddr(i),
	}
	if n.joined {
		var others []string
		for j := range c.nodes {
			if j != i {
				others = append(others, c.hosts.ClientAddr(j))
			}
		}
		args = append(args, "--join", strings.Join(others, ","))
	} else {
		args = append(args, "--initial-cluster", c.initial)
	}
	return append(args, c.args...)
}

// ID is node i's current Raft id.
func (c *cluster) ID(i int) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].id
}

// IDs lists every node's current Raft id, by index.
func (c *cluster) IDs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]uint64, len(c.nodes))
	for i, n := range c.nodes {
		ids[i] = n.id
	}
	return ids
}

// name is node i's name for the event log: its host (n2), with its Raft id
// once that differs from the host's number (n2 (id 100)).
func (c *cluster) name(i int) string {
	return hostAndID(i, c.ID(i))
}

func hostAndID(i int, id uint64) string {
	if id == uint64(i+1) {
		return nodeName(i)
	}
	return fmt.Sprintf("%s (id %d)", nodeName(i), id)
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
				return fmt.Errorf("%s exited while starting: see %s", c.name(i), n.logPath)
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
			return fmt.Errorf("%s did not answer within %v of starting (last error: %v); see %s", c.name(i), startTimeout, last, n.logPath)
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
		return nil, fmt.Errorf("%v to %s: %w", sig, hostAndID(i, n.id), err)
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
		return fmt.Errorf("%s did not exit within %v of SIGKILL", c.name(i), stopTimeout)
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
		c.problem("%s did not stop within %v of SIGTERM; killed", c.name(i), stopTimeout)
		return c.Kill(i)
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	exitErr := c.nodes[i].exitErr
	c.mu.Unlock()
	if exitErr != nil {
		c.problem("%s exited with an error on SIGTERM: %v; see %s", c.name(i), exitErr, c.nodes[i].logPath)
	}
	return nil
}

func (c *cluster) Pause(i int) error {
	n := c.nodes[i]
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.state != running {
		return fmt.Errorf("pause %s: it is not running", hostAndID(i, n.id))
	}
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP to %s: %w", hostAndID(i, n.id), err)
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
		return fmt.Errorf("SIGCONT to %s: %w", hostAndID(i, n.id), err)
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
			return fmt.Errorf("%s did not catch up within %v (leader's commit %d; its status: %s)", c.name(i), catchUpTimeout, target, describeStatus(sts[i]))
		}
		if err := hold(ctx, pollInterval); err != nil {
			return err
		}
	}
}

// Replace swaps node i's member for a new one on the same host, as an
// operator replaces a machine's identity: remove its Raft id, wait for the
// process to exit by itself (a removed member must), wipe its data
// directory, add a new id (never used before in the run) as a learner at
// the same peer address, start it with --join, wait until it has caught up
// and promote it. Each step is noted. It returns once the cluster has as
// many voters as before, the new id among them. A removed member that does
// not exit within removedExitTimeout, or exits without saying it was
// removed, is a problem of the run (it is killed and the replacement goes
// on); a step that cannot be done is an error.
func (c *cluster) Replace(ctx context.Context, i int) error {
	n := c.nodes[i]
	c.mu.Lock()
	oldID, state, done := n.id, n.state, n.done
	if state == running {
		n.expectExit = true // from now on its exit is what the removal should cause
	}
	c.mu.Unlock()
	old := hostAndID(i, oldID)
	if state != running {
		return fmt.Errorf("replace %s: it is not running", old)
	}
	c.Note("replace %s: removing id %d", old, oldID)
	if _, err := changeMembers(ctx, fmt.Sprintf("remove id %d", oldID), memberChangeTimeout,
		func(ctx context.Context) error { _, err := c.status.MemberRemove(ctx, oldID); return err },
		c.status.MemberList, func(ms client.Members) bool { return !hasMember(ms, oldID) }, c.Note); err != nil {
		c.mu.Lock()
		if n.done == done && n.state != stopped {
			n.expectExit = false // still the same member, still running: an exit would be a crash again
		}
		c.mu.Unlock()
		return err
	}
	c.Note("id %d removed; waiting for %s to exit by itself", oldID, old)
	select {
	case <-done:
		c.mu.Lock()
		exitErr := n.exitErr
		c.mu.Unlock()
		if exitedAsRemoved(readLastStart(n.logPath)) {
			c.Note("%s exited by itself after its removal (%v)", old, exitErr)
		} else {
			c.problem("%s exited after its removal (%v) but its log does not say it was removed; see %s", old, exitErr, n.logPath)
		}
	case <-time.After(removedExitTimeout):
		c.problem("%s still ran %v after its removal was acknowledged (a removed member must stop by itself); killing it; see %s",
			old, removedExitTimeout, n.logPath)
		if err := c.Kill(i); err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}

	// The same host under a new identity: an empty data directory, a new
	// id, and --join from now on (restarts too).
	if err := os.RemoveAll(n.dataDir); err != nil {
		return fmt.Errorf("replace %s: wiping its data directory: %w", old, err)
	}
	c.mu.Lock()
	newID := c.nextID
	c.nextID++
	n.id, n.joined = newID, true
	c.mu.Unlock()
	now, peer := hostAndID(i, newID), c.hosts.PeerAddr(i)
	c.Note("wiped %s; adding id %d as a learner at %s", n.dataDir, newID, peer)
	if _, err := changeMembers(ctx, fmt.Sprintf("add learner id %d", newID), memberChangeTimeout,
		func(ctx context.Context) error { _, err := c.status.MemberAddLearner(ctx, newID, peer); return err },
		c.status.MemberList, func(ms client.Members) bool { return hasMember(ms, newID) }, c.Note); err != nil {
		return err
	}
	c.Note("id %d added as a learner; starting %s with --join", newID, now)
	if err := c.Start(ctx, i); err != nil {
		return err
	}
	if err := c.WaitCaughtUp(ctx, i); err != nil {
		return err
	}
	c.Note("%s caught up; promoting it", now)
	refused, err := changeMembers(ctx, fmt.Sprintf("promote id %d", newID), memberChangeTimeout,
		func(ctx context.Context) error { _, err := c.status.MemberPromote(ctx, newID); return err },
		c.status.MemberList, func(ms client.Members) bool { return isVoter(ms, newID) }, c.Note)
	if err != nil {
		return err
	}
	// The promotion was applied where it was acknowledged; wait until the
	// membership as a whole shows every host a voter again.
	want := len(c.nodes)
	deadline := time.Now().Add(memberChangeTimeout)
	for {
		lctx, cancel := context.WithTimeout(ctx, memberCallTimeout)
		ms, err := c.status.MemberList(lctx)
		cancel()
		if err == nil && voters(ms) == want && len(ms.Members) == want && isVoter(ms, newID) {
			c.Note("%s replaced by %s: members %s%s", old, now, describeMembers(ms), attempts(refused))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replace %s by %s: the membership is not %d voters within %v of the promotion (last seen: %s, %v)",
				old, now, want, memberChangeTimeout, describeMembers(ms), err)
		}
		if err := hold(ctx, 4*pollInterval); err != nil {
			return err
		}
	}
}

// DamageWAL implements Env.
func (c *cluster) DamageWAL(i int, at float64) (string, error) {
	n, err := c.stoppedNode(i, "the WAL")
	if err != nil {
		return "", err
	}
	segs, err := filepath.Glob(filepath.Join(n.dataDir, "wal", "*.wal"))
	if err != nil || len(segs) == 0 {
		return "", fmt.Errorf("damage the WAL of %s: no segment in %s (%v)", c.name(i), n.dataDir, err)
	}
	f, err := os.OpenFile(segs[0], os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("damage the WAL of %s: %w", c.name(i), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("damage the WAL of %s: %w", c.name(i), err)
	}
	off := int64(float64(fi.Size()) * at)
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return "", fmt.Errorf("damage the WAL of %s: %w", c.name(i), err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b[:], off); err != nil {
		return "", fmt.Errorf("damage the WAL of %s: %w", c.name(i), err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("damage the WAL of %s: %w", c.name(i), err)
	}
	return fmt.Sprintf("%s, byte %d of %d", filepath.Base(segs[0]), off, fi.Size()), nil
}

// DamageSnapshots implements Env.
func (c *cluster) DamageSnapshots(i int) (string, error) {
	n, err := c.stoppedNode(i, "the snapshots")
	if err != nil {
		return "", err
	}
	page := int64(os.Getpagesize()) // bbolt's page size
	if err := rewriteFile(filepath.Join(n.dataDir, "state.db"), func(b []byte) {
		clear(b[:min(int64(len(b)), 2*page)])
	}); err != nil {
		return "", fmt.Errorf("damage the state.db of %s: %w", c.name(i), err)
	}
	snaps, err := filepath.Glob(filepath.Join(n.dataDir, "snap", "*.snap"))
	if err != nil {
		return "", fmt.Errorf("damage the snapshots of %s: %w", c.name(i), err)
	}
	for _, p := range snaps {
		if err := rewriteFile(p, func(b []byte) { b[len(b)/2] ^= 0x10 }); err != nil {
			return "", fmt.Errorf("damage the snapshots of %s: %w", c.name(i), err)
		}
	}
	return fmt.Sprintf("state.db's meta pages zeroed, a bit flipped in %d snapshot files", len(snaps)), nil
}

// stoppedNode is node i, if it is stopped: its files may be damaged
// (what names them, for the error).
func (c *cluster) stoppedNode(i int, what string) (*node, error) {
	n := c.nodes[i]
	c.mu.Lock()
	state := n.state
	c.mu.Unlock()
	if state != stopped {
		return nil, fmt.Errorf("damage %s of %s: it is running", what, c.name(i))
	}
	return n, nil
}

// rewriteFile reads path, lets damage change its bytes, and writes them
// back durably.
func rewriteFile(path string, damage func([]byte)) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return fmt.Errorf("%s is empty", path)
	}
	damage(b)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// changeMembers makes one membership change (call), retrying until done
// says the membership shows it or timeout passes, and returns how many
// attempts failed on the way (a learner not yet caught up is refused with
// FailedPrecondition until it is). A failed call may still have taken
// effect (a deadline, or the member lost, after the change was proposed)
// and repeating it would be refused, so after each failure the membership
// is looked at first. An input refused as invalid is not retried.
// Each failure with a new message is noted (note may be nil).
func changeMembers(ctx context.Context, what string, timeout time.Duration, call func(context.Context) error,
	list func(context.Context) (client.Members, error), done func(client.Members) bool,
	note func(format string, args ...any)) (failed int, err error) {
	deadline := time.Now().Add(timeout)
	lastNoted := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, memberCallTimeout)
		err := call(cctx)
		cancel()
		if err == nil {
			return failed, nil
		}
		if ctx.Err() != nil {
			return failed, ctx.Err()
		}
		failed++
		if msg := err.Error(); msg != lastNoted && note != nil {
			note("%s: attempt %d failed: %v", what, failed, err)
			lastNoted = msg
		}
		if errors.Is(err, client.ErrInvalid) {
			return failed, fmt.Errorf("%s: %w", what, err)
		}
		lctx, cancel := context.WithTimeout(ctx, memberCallTimeout)
		ms, lerr := list(lctx)
		cancel()
		if lerr == nil && done(ms) {
			return failed, nil
		}
		if time.Now().After(deadline) {
			return failed, fmt.Errorf("%s: not done within %v (%d attempts; last error: %w)", what, timeout, failed, err)
		}
		if err := hold(ctx, 4*pollInterval); err != nil {
			return failed, err
		}
	}
}

// attempts says how many promotion attempts failed, if any.
func attempts(failed int) string {
	if failed == 0 {
		return ""
	}
	return fmt.Sprintf(" (the promotion failed %d times first)", failed)
}

func hasMember(ms client.Members, id uint64) bool {
	return slices.ContainsFunc(ms.Members, func(m client.Member) bool { return m.ID == id })
}

func isVoter(ms client.Members, id uint64) bool {
	return slices.ContainsFunc(ms.Members, func(m client.Member) bool { return m.ID == id && !m.Learner })
}

func voters(ms client.Members) int {
	k := 0
	for _, m := range ms.Members {
		if !m.Learner {
			k++
		}
	}
	return k
}

// describeMembers lists the ids, learners marked: "1 3 100(learner)".
func describeMembers(ms client.Members) string {
	parts := make([]string, len(ms.Members))
	for j, m := range ms.Members {
		parts[j] = fmt.Sprint(m.ID)
		if m.Learner {
			parts[j] += "(learner)"
		}
	}
	return strings.Join(parts, " ")
}

// removedMessage is what keyvald's last words say when a configuration
// change removed it (server.ErrRemoved).
const removedMessage = "removed from the cluster"

// exitedAsRemoved says whether a member's log, from its last start on,
// shows it stopped because it was removed.
func exitedAsRemoved(log string) bool { return strings.Contains(log, removedMessage) }

// readLastStart returns a member's log from the last start marker on (""
// if it cannot be read).
func readLastStart(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := string(b)
	if k := strings.LastIndex(s, startMarker); k >= 0 {
		s = s[k:]
	}
	return s
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
	return fmt.Sprintf("id %d %s term %d commit %d applied %d last %d leader %d", st.ID, st.Role, st.Term, st.Commit, st.Applied, st.LastIndex, st.LeaderID)
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
			c.events.note("leader: %s in term %d", hostAndID(l, sts[l].ID), sts[l].Term)
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
