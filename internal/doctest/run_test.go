//go:build docs && linux

package doctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The fixed addresses of make cluster-start (README.md's table): client,
// peer, metrics and JSON gateway port of each of its three members.
var clusterPorts = []int{2379, 2380, 2381, 2382, 12379, 12380, 12381, 12382, 22379, 22380, 22381, 22382}

const (
	// A command may take this long; the first make cluster-start of a
	// session builds every command from a fresh copy.
	commandTimeout = 5 * time.Minute
	// cleanupTime is kept back from the test's deadline to stop processes.
	cleanupTime = time.Minute
)

// TestDocumentExamples runs every runnable command of README.md and
// docs/*.md, document by document, as typed, on a fresh make cluster-start
// in a fresh copy of the working tree, and fails at the first command of a
// document whose exit status is not the one the document promises.
func TestDocumentExamples(t *testing.T) {
	root := repoRoot(t)
	docs, err := Documents(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := testContext(t)
	defer cancel()
	stopOnSignal(t)
	for _, rel := range docs {
		cmds, errs := Check(root, rel)
		if len(errs) > 0 {
			t.Fatalf("%s: %v (go test ./internal/doctest/ says more)", rel, errors.Join(errs...))
		}
		if len(cmds) == 0 {
			continue
		}
		t.Run(rel, func(t *testing.T) {
			if err := portsFreeWithin(portsOf(cmds), portWait); err != nil {
				t.Fatalf("%v: the examples run as typed, on the ports make cluster-start and the documents use; stop what listens there (make cluster-stop?) and run again", err)
			}
			s := newSession(t, root, portsOf(cmds))
			s.run(ctx, Command{File: "doc test setup", Text: "make cluster-start"})
			for _, c := range cmds {
				s.run(ctx, c)
			}
		})
	}
}

// testContext ends early enough before the test's deadline to clean up.
func testContext(t *testing.T) (context.Context, context.CancelFunc) {
	if d, ok := t.Deadline(); ok {
		return context.WithDeadline(context.Background(), d.Add(-cleanupTime))
	}
	return context.WithCancel(context.Background())
}

// The session running now, for stopOnSignal.
var (
	activeMu sync.Mutex
	active   *session
)

// stopOnSignal cleans up the running session when the test is interrupted
// (Ctrl-C, or a SIGTERM from CI), which would otherwise skip t.Cleanup.
func stopOnSignal(t *testing.T) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	t.Cleanup(func() { signal.Stop(ch); close(done) })
	go func() {
		select {
		case sig := <-ch:
			activeMu.Lock()
			s := active
			activeMu.Unlock()
			if s != nil {
				s.cleanup()
				fmt.Fprintf(os.Stderr, "doc test: %v: stopped the session's processes and removed %s\n", sig, s.base)
			}
			os.Exit(1)
		case <-done:
		}
	}()
}

// sourceFiles lists the working tree's files as a fresh clone plus the
// uncommitted changes would have them: tracked and untracked, not ignored.
func sourceFiles(root string) ([]string, error) {
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("list the working tree's files (git ls-files): %w", err)
	}
	var files []string
	for _, f := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		if fi, err := os.Lstat(filepath.Join(root, f)); err == nil && fi.Mode().IsRegular() {
			files = append(files, f) // a deleted file is still listed
		}
	}
	return files, nil
}

var addrRE = regexp.MustCompile(`127\.0\.0\.1:(\d+)`)

// portsOf is every port the session will use: the cluster's and any
// loopback port a command names.
func portsOf(cmds []Command) []int {
	ports := slices.Clone(clusterPorts)
	for _, c := range cmds {
		for _, g := range addrRE.FindAllStringSubmatch(c.Text, -1) {
			if p, err := strconv.Atoi(g[1]); err == nil && !slices.Contains(ports, p) {
				ports = append(ports, p)
			}
		}
	}
	return ports
}

// portWait is how long a document waits for its ports: the processes of
// the document before it may still be letting go of theirs, and a short
// lived outbound connection can hold any port of the ephemeral range
// (32768–60999 on Linux) for a moment: the documents' ports stay below it.
const portWait = 15 * time.Second

// portsFreeWithin polls portsFree until the ports are free or wait has
// passed, and returns its last answer.
func portsFreeWithin(ports []int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := portsFree(ports)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
}

func portsFree(ports []int) error {
	var busy []string
	for _, p := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			busy = append(busy, strconv.Itoa(p))
			continue
		}
		l.Close()
	}
	if len(busy) > 0 {
		return fmt.Errorf("127.0.0.1 ports in use: %s", strings.Join(busy, ", "))
	}
	return nil
}

// session is one document's run: a fresh copy of the tree, and a process
// group that every command (and everything it starts) joins, so that
// cleanup can stop them all, members started by hand included.
type session struct {
	t     *testing.T
	base  string // removed at cleanup: the copy and the commands' TMPDIR
	tree  string
	env   []string
	ports []int
	// anchor leads the process group. It is a cat reading from a pipe this
	// process holds, so it ends by itself if the test dies.
	anchor     *exec.Cmd
	anchorPipe io.WriteCloser
	pgid       int
	once       sync.Once
	problems   []string
}

func newSession(t *testing.T, root string, ports []int) *session {
	// One fixed place, so that the Go build cache, which keys on the
	// source directory, serves every run after the first.
	base := filepath.Join(os.TempDir(), fmt.Sprintf("keyval-doctest-%d", os.Getuid()))
	s := &session{t: t, base: base, tree: filepath.Join(base, "tree"), ports: ports}
	if err := os.RemoveAll(base); err != nil {
		t.Fatalf("remove what an earlier run left: %v", err)
	}
	tmp := filepath.Join(base, "tmp")
	if err := copyTree(root, s.tree); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	s.env = append(environWithout("KVCTL_", "KEYVALD_", "TMPDIR="), "TMPDIR="+tmp)
	s.anchor = exec.Command("cat")
	s.anchor.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var err error
	if s.anchorPipe, err = s.anchor.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.anchor.Start(); err != nil {
		t.Fatalf("start the session's process group: %v", err)
	}
	s.pgid = s.anchor.Process.Pid
	activeMu.Lock()
	active = s
	activeMu.Unlock()
	t.Cleanup(func() {
		s.cleanup()
		activeMu.Lock()
		active = nil
		activeMu.Unlock()
		for _, p := range s.problems {
			t.Error(p)
		}
	})
	return s
}

// environWithout is the environment without the variables that would
// change what kvctl or keyvald do from what the documents show.
func environWithout(prefixes ...string) []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(kv, p) })
	})
}

// copyTree copies the working tree's files (sourceFiles) from one
// directory to another. A file that vanishes meanwhile (another process at
// work in the tree) is left out.
func copyTree(from, to string) error {
	files, err := sourceFiles(from)
	if err != nil {
		return err
	}
	for _, f := range files {
		src := filepath.Join(from, f)
		data, err := os.ReadFile(src)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("copy the tree: %w", err)
		}
		fi, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("copy the tree: %w", err)
		}
		dst := filepath.Join(to, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("copy the tree: %w", err)
		}
		if err := os.WriteFile(dst, data, fi.Mode().Perm()); err != nil {
			return fmt.Errorf("copy the tree: %w", err)
		}
	}
	return nil
}

// run runs one command in the copy and fails the test, naming the
// document's line and showing the output, unless it exits as promised.
func (s *session) run(ctx context.Context, c Command) {
	s.t.Helper()
	out, err := os.CreateTemp(s.base, "out-*")
	if err != nil {
		s.t.Fatal(err)
	}
	defer out.Close()
	cctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, "bash", "-c", c.Text)
	cmd.Dir, cmd.Env = s.tree, s.env
	// A file, not a pipe: a member the command starts in the background
	// keeps its output open, and waiting for a pipe would wait for it.
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: s.pgid}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("%v\n  could not start: %v", c, err)
	}
	err = cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		if cctx.Err() != nil {
			err = fmt.Errorf("%w after %v", cctx.Err(), time.Since(start).Round(time.Second))
		}
		s.t.Fatalf("%v\n  did not finish: %v\n%s", c, err, tail(out))
	}
	if code != c.WantExit {
		s.t.Fatalf("%v\n  exit status %d, the document promises %d; output:\n%s", c, code, c.WantExit, tail(out))
	}
	s.t.Logf("%v (exit %d, %v)", c, code, time.Since(start).Round(time.Millisecond))
}

// tail is the end of a command's output, enough to see why it failed.
func tail(f *os.File) string {
	const max = 8 << 10
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return fmt.Sprintf("(output unreadable: %v)", err)
	}
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	return "  | " + strings.ReplaceAll(string(bytes.TrimRight(b, "\n")), "\n", "\n  | ")
}

// cleanup stops every process of the session — members stopped gracefully
// first, as make cluster-stop does, then the whole group — and removes the
// copy. It records what it could not stop.
func (s *session) cleanup() {
	s.once.Do(func() {
		stop := exec.Command("make", "--no-print-directory", "cluster-stop")
		stop.Dir, stop.Env = s.tree, s.env
		stop.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: s.pgid}
		stop.WaitDelay = 30 * time.Second
		_ = stop.Run()
		s.anchorPipe.Close()
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
			_ = syscall.Kill(-s.pgid, sig)
			if waitGone(s.pgid, 15*time.Second) {
				break
			}
		}
		_ = s.anchor.Wait()
		if left := groupMembers(s.pgid); len(left) > 0 {
			s.problems = append(s.problems, fmt.Sprintf("processes %v of the doc test's group %d are still running", left, s.pgid))
		}
		if err := os.RemoveAll(s.base); err != nil {
			s.problems = append(s.problems, fmt.Sprintf("remove the doc test's copy: %v", err))
		}
		if err := waitPortsFree(s.ports, 10*time.Second); err != nil {
			s.problems = append(s.problems, fmt.Sprintf("after the doc test stopped its cluster: %v", err))
		}
	})
}

func waitGone(pgid int, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if len(groupMembers(pgid)) == 0 {
			return true
		}
	}
	return len(groupMembers(pgid)) == 0
}

func waitPortsFree(ports []int, d time.Duration) error {
	var err error
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = portsFree(ports); err == nil {
			return nil
		}
	}
	return err
}

// groupMembers lists the live (not zombie) processes of a process group,
// from /proc: a zombie nobody reaps would otherwise look alive to kill(2).
func groupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ")".
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}
