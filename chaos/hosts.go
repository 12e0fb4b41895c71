package chaos

import (
	"fmt"
	"os/exec"

	"github.com/therealutkarshpriyadarshi/keyval/internal/freeport"
)

// Hosts is where the members run: their addresses, how a member's process
// is launched, and (where possible) how the network between members is cut.
// Node indexes are 0..n-1.
type Hosts interface {
	// Describe says what the hosts are, for the report.
	Describe() string
	ClientAddr(i int) string
	PeerAddr(i int) string
	// Command returns the command that runs path with args as node i.
	Command(i int, path string, args ...string) *exec.Cmd
	// CanPartition says whether Cut and Heal work.
	CanPartition() bool
	// Cut drops every packet from node from to node to.
	Cut(from, to int) error
	// Heal removes every cut.
	Heal() error
	// Close removes everything the hosts created. It is safe to call more
	// than once.
	Close() error
}

// loopbackHosts runs every member on 127.0.0.1 with its own ports. There is
// no network control: faults that need it are not run.
type loopbackHosts struct {
	client, peer []string
}

func newLoopbackHosts(n int) (*loopbackHosts, error) {
	h := &loopbackHosts{}
	for i := 0; i < n; i++ {
		c, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		p, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		h.client, h.peer = append(h.client, c), append(h.peer, p)
	}
	return h, nil
}

// freeLoopbackAddr picks a free port. Another process could take it before
// keyvald binds it; keyvald then fails to start and says so.
func freeLoopbackAddr() (string, error) {
	addr, err := freeport.Loopback()
	if err != nil {
		return "", fmt.Errorf("finding a free port on 127.0.0.1: %w", err)
	}
	return addr, nil
}

func (h *loopbackHosts) Describe() string {
	return "loopback (127.0.0.1, no network namespaces: partitions are not run)"
}
func (h *loopbackHosts) ClientAddr(i int) string { return h.client[i] }
func (h *loopbackHosts) PeerAddr(i int) string   { return h.peer[i] }
func (h *loopbackHosts) Command(_ int, path string, args ...string) *exec.Cmd {
	return exec.Command(path, args...)
}
func (h *loopbackHosts) CanPartition() bool { return false }
func (h *loopbackHosts) Cut(from, to int) error {
	return fmt.Errorf("cut %s->%s: partitions need network namespaces (run as root)", nodeName(from), nodeName(to))
}
func (h *loopbackHosts) Heal() error  { return nil }
func (h *loopbackHosts) Close() error { return nil }
