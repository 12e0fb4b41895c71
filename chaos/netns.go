package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Every network namespace, link and file the chaos test creates is named
// with Prefix, so that a later run (or kvchaos --cleanup) can find and remove
// what a crashed run left behind.
const (
	Prefix = "kvchaos"
	// Subnet is the private /24 the test creates on its own bridge. Nothing
	// outside it is ever contacted: members talk to each other and the
	// driver over the bridge only.
	Subnet     = "10.231.0.0/24"
	bridgeName = Prefix + "0"
	bridgeAddr = "10.231.0.1"
	// MaxNetnsNodes bounds the cluster size in namespaces (addresses
	// .11-.19, interface names under the kernel's 15 characters).
	MaxNetnsNodes = 9
	nsPrefix      = Prefix + "-n"
)

func nsName(i int) string    { return fmt.Sprintf("%s%d", nsPrefix, i+1) }
func hostVeth(i int) string  { return fmt.Sprintf("%s%dh", Prefix, i+1) }
func nsVeth(i int) string    { return fmt.Sprintf("%s%dn", Prefix, i+1) }
func netnsAddr(i int) string { return fmt.Sprintf("10.231.0.%d", 11+i) }

// Partition methods, in order of preference.
const (
	// cutByTC drops packets silently on the sender's interface (an HTB
	// class whose queue is a blackhole, chosen by a u32 filter on the
	// destination address), like a network that loses them on the way.
	cutByTC = "tc u32 filter to a blackhole qdisc (packets dropped silently)"
	// cutByRoute adds a blackhole route in the sender's namespace: the
	// packets are dropped too, but the sender's kernel also refuses new
	// connections at once (EINVAL) instead of letting them time out.
	cutByRoute = "blackhole routes (new connections fail at once with EINVAL)"
)

// netnsHosts runs each member in its own network namespace with its own
// address on Subnet, all joined by one bridge in the root namespace, where
// the driver (and its clients) reach them at their addresses.
type netnsHosts struct {
	n      int
	ip, tc string
	method string

	mu     sync.Mutex
	cuts   map[Edge]bool
	shaped map[int]bool // nodes whose interface has the tc qdisc for cuts
	closed bool
}

// ErrNotRoot says network namespaces cannot be made by this user.
var ErrNotRoot = errors.New("network namespaces need root")

// newNetnsHosts creates the bridge, one namespace per node and a veth pair
// into each. On failure it removes whatever it had created.
func newNetnsHosts(n int) (*netnsHosts, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if n > MaxNetnsNodes {
		return nil, fmt.Errorf("at most %d nodes in network namespaces, asked for %d", MaxNetnsNodes, n)
	}
	h := &netnsHosts{n: n, ip: lookTool("ip"), tc: lookTool("tc"), cuts: map[Edge]bool{}, shaped: map[int]bool{}}
	if out, err := h.run(h.ip, "-o", "addr", "show", "to", Subnet); err != nil {
		return nil, err
	} else if s := strings.TrimSpace(out); s != "" {
		return nil, fmt.Errorf("%s is already in use on this host (run kvchaos --cleanup if a crashed run left it):\n%s", Subnet, s)
	}
	if err := h.create(); err != nil {
		return nil, errors.Join(err, h.Close())
	}
	h.method = cutByTC
	if err := h.probeTC(); err != nil {
		h.method = cutByRoute
	}
	return h, nil
}

func (h *netnsHosts) create() error {
	steps := [][]string{
		{h.ip, "link", "add", bridgeName, "type", "bridge"},
		{h.ip, "addr", "add", bridgeAddr + "/24", "dev", bridgeName},
		{h.ip, "link", "set", bridgeName, "up"},
	}
	for i := 0; i < h.n; i++ {
		ns := nsName(i)
		steps = append(steps,
			[]string{h.ip, "netns", "add", ns},
			[]string{h.ip, "link", "add", hostVeth(i), "type", "veth", "peer", "name", nsVeth(i), "netns", ns},
			[]string{h.ip, "link", "set", hostVeth(i), "master", bridgeName, "up"},
			[]string{h.ip, "-n", ns, "addr", "add", netnsAddr(i) + "/24", "dev", nsVeth(i)},
			[]string{h.ip, "-n", ns, "link", "set", nsVeth(i), "up"},
			[]string{h.ip, "-n", ns, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if _, err := h.run(s[0], s[1:]...); err != nil {
			return fmt.Errorf("creating the test network: %w", err)
		}
	}
	return nil
}

// probeTC checks that this kernel has what cutByTC needs (HTB, u32, the
// blackhole qdisc), by cutting node 0 from an address nobody has.
func (h *netnsHosts) probeTC() error {
	if err := h.shape(0); err != nil {
		return err
	}
	err := h.tcFilter(0, "10.231.0.254")
	if e := h.unshape(0); e != nil {
		err = errors.Join(err, e)
	}
	return err
}

func (h *netnsHosts) Describe() string {
	return fmt.Sprintf("network namespaces %s1..%d on bridge %s (%s); partitions by %s", nsPrefix, h.n, bridgeName, Subnet, h.method)
}
func (h *netnsHosts) ClientAddr(i int) string { return netnsAddr(i) + ":2379" }
func (h *netnsHosts) PeerAddr(i int) string   { return netnsAddr(i) + ":2380" }
func (h *netnsHosts) CanPartition() bool      { return true }

// Command runs path inside node i's namespace. ip netns exec replaces
// itself with path, so the process's pid is keyvald's.
func (h *netnsHosts) Command(i int, path string, args ...string) *exec.Cmd {
	return exec.Command(h.ip, append([]string{"netns", "exec", nsName(i), path}, args...)...)
}

func (h *netnsHosts) Cut(from, to int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := Edge{from, to}
	if h.cuts[e] {
		return nil
	}
	var err error
	if h.method == cutByTC {
		if !h.shaped[from] {
			if err = h.shape(from); err == nil {
				h.shaped[from] = true
			}
		}
		if err == nil {
			err = h.tcFilter(from, netnsAddr(to))
		}
	} else {
		_, err = h.run(h.ip, "-n", nsName(from), "route", "add", "blackhole", netnsAddr(to)+"/32")
	}
	if err != nil {
		return fmt.Errorf("cut %s->%s: %w", nodeName(from), nodeName(to), err)
	}
	h.cuts[e] = true
	return nil
}

func (h *netnsHosts) Heal() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	if h.method == cutByTC {
		for i := range h.shaped {
			if err := h.unshape(i); err != nil {
				errs = append(errs, err)
			}
			delete(h.shaped, i)
		}
	} else {
		for e := range h.cuts {
			if _, err := h.run(h.ip, "-n", nsName(e.From), "route", "del", "blackhole", netnsAddr(e.To)+"/32"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	clear(h.cuts)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("healing the network: %w", err)
	}
	return nil
}

// shape gives node i's interface a root HTB qdisc whose one class drops
// everything (blackhole). Unclassified traffic bypasses HTB's classes and
// goes straight out, unshaped; only filtered packets go to the blackhole.
func (h *netnsHosts) shape(i int) error {
	ns, dev := nsName(i), nsVeth(i)
	for _, s := range [][]string{
		{"-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb"},
		{"-n", ns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:2", "htb", "rate", "1mbit"},
		{"-n", ns, "qdisc", "add", "dev", dev, "parent", "1:2", "handle", "2:", "blackhole"},
	} {
		if _, err := h.run(h.tc, s...); err != nil {
			return err
		}
	}
	return nil
}

func (h *netnsHosts) tcFilter(i int, dst string) error {
	_, err := h.run(h.tc, "-n", nsName(i), "filter", "add", "dev", nsVeth(i), "parent", "1:", "protocol", "ip",
		"prio", "1", "u32", "match", "ip", "dst", dst+"/32", "flowid", "1:2")
	return err
}

func (h *netnsHosts) unshape(i int) error {
	_, err := h.run(h.tc, "-n", nsName(i), "qdisc", "del", "dev", nsVeth(i), "root")
	return err
}

// Close kills anything still running in the namespaces and deletes them and
// the bridge (the veth pairs go with their namespaces), then checks that
// nothing named Prefix is left.
func (h *netnsHosts) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	_, err := removeNetworkLeftovers(h.ip)
	return err
}

func (h *netnsHosts) run(tool string, args ...string) (string, error) {
	return runTool(tool, args...)
}

// runTool runs an iproute2 command and returns its output; a failure
// carries the command line and what it printed.
func runTool(tool string, args ...string) (string, error) {
	cmd := exec.Command(tool, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// lookTool finds an iproute2 tool on PATH, or in /usr/sbin or /sbin where
// Debian puts them (often not on a non-login PATH).
func lookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := dir + "/" + name
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return name
}

// removeNetworkLeftovers deletes every namespace and link named with
// Prefix (killing whatever still runs in those namespaces first) and
// returns what it removed. It then lists again and fails if anything is
// left.
func removeNetworkLeftovers(ip string) ([]string, error) {
	var removed []string
	var errs []error
	namespaces, err := listNamespaces(ip)
	if err != nil {
		return nil, err
	}
	for _, ns := range namespaces {
		out, _ := runTool(ip, "netns", "pids", ns)
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				if !waitGone(pid, 10*time.Second) {
					errs = append(errs, fmt.Errorf("process %d in namespace %s did not die on SIGKILL", pid, ns))
				}
				removed = append(removed, fmt.Sprintf("process %d (in %s)", pid, ns))
			}
		}
		if _, err := runTool(ip, "netns", "del", ns); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "namespace "+ns)
	}
	links, err := listLinks(ip)
	if err != nil {
		return removed, errors.Join(append(errs, err)...)
	}
	for _, l := range links {
		if _, err := runTool(ip, "link", "del", l); err != nil {
			// A veth end may vanish with its peer between list and delete.
			if still, _ := listLinks(ip); slices.Contains(still, l) {
				errs = append(errs, err)
			}
			continue
		}
		removed = append(removed, "link "+l)
	}
	if left, err := networkLeftovers(ip); err != nil {
		errs = append(errs, err)
	} else if len(left) > 0 {
		errs = append(errs, fmt.Errorf("still present after cleanup: %s", strings.Join(left, ", ")))
	}
	return removed, errors.Join(errs...)
}

// networkLeftovers lists namespaces and links named with Prefix.
func networkLeftovers(ip string) ([]string, error) {
	namespaces, err := listNamespaces(ip)
	if err != nil {
		return nil, err
	}
	links, err := listLinks(ip)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ns := range namespaces {
		out = append(out, "namespace "+ns)
	}
	for _, l := range links {
		out = append(out, "link "+l)
	}
	return out, nil
}

func listNamespaces(ip string) ([]string, error) {
	out, err := runTool(ip, "netns", "list")
	if err != nil {
		return nil, err
	}
	return ourNamespaces(out), nil
}

// ourNamespaces picks the names starting with Prefix from `ip netns list`
// output, whose lines are "name" or "name (id: 3)".
func ourNamespaces(out string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], Prefix) {
			names = append(names, f[0])
		}
	}
	return names
}

func listLinks(ip string) ([]string, error) {
	out, err := runTool(ip, "-o", "link", "show")
	if err != nil {
		return nil, err
	}
	return ourLinks(out), nil
}

// ourLinks picks the interface names starting with Prefix from
// `ip -o link show` output, whose lines look like
// "7: kvchaos1h@if6: <BROADCAST,...> ...".
func ourLinks(out string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		if at := strings.IndexByte(name, '@'); at >= 0 {
			name = name[:at]
		}
		if strings.HasPrefix(name, Prefix) {
			names = append(names, name)
		}
	}
	return names
}

// waitGone polls until pid no longer exists (or is a zombie), up to limit.
func waitGone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if !processAlive(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// processAlive says whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain spaces or parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}
