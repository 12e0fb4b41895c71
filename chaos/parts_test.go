package chaos

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/client"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

func TestLeftoverNamesParsed(t *testing.T) {
	require.Equal(t, []string{"kvchaos-n1", "kvchaos-n3"},
		ourNamespaces("kvchaos-n1 (id: 0)\nother\nkvchaos-n3\n\n"))
	links := "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\n" +
		"4: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400\n" +
		"7: kvchaos0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue\n" +
		"9: kvchaos1h@if8: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master kvchaos0\n"
	require.Equal(t, []string{"kvchaos0", "kvchaos1h"}, ourLinks(links))
}

func TestNamesFitTheKernel(t *testing.T) {
	for i := 0; i < MaxNetnsNodes; i++ {
		for _, name := range []string{hostVeth(i), nsVeth(i), bridgeName} {
			require.LessOrEqual(t, len(name), 15, "interface name %q", name)
		}
	}
	require.Equal(t, "10.231.0.11", netnsAddr(0))
	require.Equal(t, "10.231.0.19", netnsAddr(MaxNetnsNodes-1))
}

func TestLeaderAndConvergence(t *testing.T) {
	st := func(role string, term, commit, applied, last uint64) client.NodeStatus {
		return client.NodeStatus{Role: role, Term: term, Commit: commit, Applied: applied, LastIndex: last}
	}
	down := client.NodeStatus{Err: errors.New("refused")}

	// An old leader that has not heard of the new term still says Leader.
	i, ok := leaderOf([]client.NodeStatus{st("Leader", 3, 9, 9, 9), st("Leader", 4, 9, 9, 9), down})
	require.True(t, ok)
	require.Equal(t, 1, i)
	_, ok = leaderOf([]client.NodeStatus{st("Follower", 4, 9, 9, 9), down})
	require.False(t, ok)

	require.True(t, converged([]client.NodeStatus{st("Leader", 4, 9, 9, 9), st("Follower", 4, 9, 9, 9)}))
	require.False(t, converged([]client.NodeStatus{st("Leader", 4, 9, 9, 9), st("Follower", 4, 8, 8, 9)}), "a follower behind")
	require.False(t, converged([]client.NodeStatus{st("Leader", 4, 9, 9, 10), st("Follower", 4, 9, 9, 10)}), "an entry not committed yet")
	require.False(t, converged([]client.NodeStatus{st("Leader", 4, 9, 9, 9), down}), "a member not answering")
}

func TestReportVerdicts(t *testing.T) {
	h := lin.History{Ops: []lin.Op{
		{Input: lin.Put("k", "a"), Status: lin.Returned},
		{Input: lin.Get("k"), Status: lin.Dropped},
		{Input: lin.Put("k", "b"), Status: lin.Unknown},
		{Input: lin.Get("k"), Status: lin.Returned},
	}}
	rep := &Report{Seed: 9, Nodes: 3, Duration: time.Minute, Verdict: lin.Linearizable.String(),
		Faults: map[string]int{"kill": 2}, FaultVariants: map[string]int{"kill/leader": 1, "kill/node": 1},
		Logs: []string{"/x/logs/n1.log"}, Visualization: "/x/history.html", NodeIDs: []uint64{1, 100, 3}}
	rep.countOps(h)
	require.Equal(t, OpCounts{OK: 2, Failed: 1, Unknown: 1}, rep.Ops)
	require.Equal(t, OpCounts{OK: 1, Unknown: 1}, rep.OpsByKind["put"])
	rep.decide()
	require.True(t, rep.Pass)

	var b bytes.Buffer
	rep.Text(&b)
	for _, want := range []string{"== kvchaos: PASS ==", "operations: 2 ok, 1 failed, 1 unknown",
		"kill               2  (leader 1, node 1)", "linearizable: yes", "lost acknowledged writes: 0",
		"visualization: /x/history.html", "node logs: /x/logs/n1.log", "raft ids at the end: n1=1 n2=100 n3=3"} {
		require.Contains(t, b.String(), want)
	}

	for name, spoil := range map[string]func(r *Report){
		"lost":          func(r *Report) { r.Lost = []Loss{{Why: "gone"}} },
		"not lin":       func(r *Report) { r.Verdict = lin.NotLinearizable.String() },
		"timed out":     func(r *Report) { r.Verdict = lin.TimedOut.String() },
		"diverged":      func(r *Report) { r.Divergent = []Divergence{{}} },
		"crashed":       func(r *Report) { r.Problems = []string{"n2 exited on its own"} },
		"interrupted":   func(r *Report) { r.Interrupted = true },
		"never checked": func(r *Report) { r.Verdict = notChecked },
	} {
		r := *rep
		spoil(&r)
		r.decide()
		require.False(t, r.Pass, name)
	}
}

func TestSnapshotIntervalFromSeed(t *testing.T) {
	seen := map[uint64]bool{}
	for seed := int64(1); seed <= 20; seed++ {
		v := SnapshotIntervalFor(seed)
		require.Equal(t, v, SnapshotIntervalFor(seed))
		seen[v] = true
	}
	require.Equal(t, map[uint64]bool{1000: true, 100000: true}, seen)
}
