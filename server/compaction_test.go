package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseCompaction(t *testing.T) {
	for _, c := range []struct {
		mode, retention string
		want            compactionPolicy
	}{
		{"", "1h", compactionPolicy{period: time.Hour}},
		{"periodic", "5m", compactionPolicy{period: 5 * time.Minute}},
		{"periodic", "2", compactionPolicy{period: 2 * time.Hour}},
		{"periodic", "0", compactionPolicy{}},
		{"revision", "1000", compactionPolicy{revisions: 1000}},
	} {
		got, err := parseCompaction(c.mode, c.retention)
		require.NoError(t, err, "%s %s", c.mode, c.retention)
		require.Equal(t, c.want, got)
	}
	for _, c := range [][2]string{{"hourly", "1"}, {"revision", "1h"}, {"periodic", "soon"}, {"periodic", "-1m"}} {
		_, err := parseCompaction(c[0], c[1])
		require.Error(t, err, "%v", c)
	}
}

// Periodic compaction keeps at least the retention's worth of history:
// the revision it compacts at is the newest sampled at least that long ago.
func TestCompactionTarget(t *testing.T) {
	p := compactionPolicy{period: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	var samples []revisionSample
	var target uint64
	for i, rev := range []uint64{5, 9, 20, 31, 40} {
		target, samples = compactionTarget(p, samples, revisionSample{t0.Add(time.Duration(i) * 4 * time.Second), rev})
		switch i {
		case 0, 1, 2: // at 0, 4, 8 s: nothing 10 s old yet
			require.Zero(t, target)
		case 3: // at 12 s: the sample at 0 s
			require.Equal(t, uint64(5), target)
		case 4: // at 16 s: the sample at 4 s (the one at 8 s is not yet 10 s old)
			require.Equal(t, uint64(9), target)
		}
	}
	require.Len(t, samples, 3)

	target, _ = compactionTarget(compactionPolicy{revisions: 100}, nil, revisionSample{t0, 150})
	require.Equal(t, uint64(50), target)
	target, _ = compactionTarget(compactionPolicy{revisions: 100}, nil, revisionSample{t0, 80})
	require.Zero(t, target)
}

// The leader compacts on its own: with a short revision retention, writes
// through etcd's API soon leave old revisions compacted on every member.
func TestAutoCompaction(t *testing.T) {
	c := newTestCluster(t, 0, 0)
	c.members[1], c.clients[1] = freeAddr(t), freeAddr(t)
	c.startWith(1, Config{InitialCluster: c.members, AutoCompactionMode: CompactionRevision, AutoCompactionRetention: "3"})
	s := c.servers[c.leader()]
	cli := etcdClient(t, c.clients[c.leader()], "", "")
	for i := 0; i < 10; i++ {
		eventually(t, func() error { _, err := cli.Put(ctx(t), "k", "v"); return err })
	}
	eventually(t, func() error {
		if got := s.store.CompactedRevision(); got < 7 {
			return fmt.Errorf("compacted at %d, want at least 7", got)
		}
		return nil
	})
}
