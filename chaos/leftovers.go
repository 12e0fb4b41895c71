package chaos

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A run holds an exclusive lock for its whole life: runs on one machine
// share Subnet and the names, and the sweep of leftovers at the start of a
// run must not touch another run that is still going.

// Per user: root runs own the network, another user's runs only loopback
// ports, and neither could open the other's files anyway.
func lockPath() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("%s-%d.lock", Prefix, os.Geteuid()))
}
func pidDirPath() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("%s-%d.pids", Prefix, os.Geteuid()))
}

type runLock struct{ f *os.File }

func acquireRunLock() (*runLock, error) {
	f, err := os.OpenFile(lockPath(), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the run lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(lockPath())
		f.Close()
		return nil, fmt.Errorf("another kvchaos run (pid %s) holds %s: wait for it to finish", strings.TrimSpace(string(holder)), lockPath())
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &runLock{f: f}, nil
}

func (l *runLock) release() {
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
}

// recordPid notes a keyvald the run started, so that a later run can kill
// it if this one dies without cleaning up (kill -9 of the driver).
func recordPid(pid int, dataDir string) error {
	if err := os.MkdirAll(pidDirPath(), 0o755); err != nil {
		return fmt.Errorf("recording pid %d: %w", pid, err)
	}
	if err := os.WriteFile(filepath.Join(pidDirPath(), strconv.Itoa(pid)), []byte(dataDir), 0o644); err != nil {
		return fmt.Errorf("recording pid %d: %w", pid, err)
	}
	return nil
}

func forgetPid(pid int) {
	_ = os.Remove(filepath.Join(pidDirPath(), strconv.Itoa(pid)))
}

// killRecordedProcesses kills every recorded keyvald that still runs. A
// pid is only killed if its command line is still keyvald on the recorded
// data directory, so a reused pid is left alone.
func killRecordedProcesses() ([]string, error) {
	entries, err := os.ReadDir(pidDirPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", pidDirPath(), err)
	}
	var killed []string
	var errs []error
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		path := filepath.Join(pidDirPath(), e.Name())
		if err != nil {
			_ = os.Remove(path)
			continue
		}
		dataDir, _ := os.ReadFile(path)
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(string(cmdline), "\x00")
		if processAlive(pid) && len(args) > 0 && filepath.Base(args[0]) == "keyvald" && len(dataDir) > 0 &&
			strings.Contains(string(cmdline), string(dataDir)) {
			_ = syscall.Kill(pid, syscall.SIGCONT) // a stopped process dies on SIGKILL too; this is belt and braces
			_ = syscall.Kill(pid, syscall.SIGKILL)
			if !waitGone(pid, 10*time.Second) {
				errs = append(errs, fmt.Errorf("keyvald pid %d did not die on SIGKILL", pid))
				continue
			}
			killed = append(killed, fmt.Sprintf("keyvald pid %d (%s)", pid, dataDir))
		}
		_ = os.Remove(path)
	}
	return killed, errors.Join(errs...)
}

// Cleanup removes whatever earlier runs left behind: keyvald processes they
// started, and (as root) network namespaces and links named with Prefix.
// It refuses while another run holds the lock. It returns what it removed.
func Cleanup() ([]string, error) {
	lock, err := acquireRunLock()
	if err != nil {
		return nil, err
	}
	defer lock.release()
	return cleanupLocked()
}

func cleanupLocked() ([]string, error) {
	removed, err := killRecordedProcesses()
	if os.Geteuid() != 0 {
		return removed, err
	}
	net, netErr := removeNetworkLeftovers(lookTool("ip"))
	return append(removed, net...), errors.Join(err, netErr)
}
