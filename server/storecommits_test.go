package server

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestWritesLeaveTheStoreOpen: the state machine leaves its write
// transaction open across applies, and any read of the store commits it.
// Nothing a write does on its way (the auth check) and nothing a synced
// watcher does for each applied batch may read the store, or every write
// pays a commit: as each did while the auth configuration was kept per
// applied index.
func TestWritesLeaveTheStoreOpen(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	s := c.servers[c.leader()]
	cli := etcdClient(t, c.clients[c.leader()], "", "")
	watch := cli.Watch(ctx(t), "nobody-writes-this", clientv3.WithCreatedNotify())
	created := <-watch
	require.True(t, created.Created)

	const writes = 300
	before := s.store.Commits()
	for i := range writes {
		_, err := cli.Put(ctx(t), fmt.Sprintf("k%d", i), "v")
		require.NoError(t, err)
	}
	// Committed by the store's timer (every 100 ms at most) or when a
	// transaction grows large: far fewer than one a write.
	commits := s.store.Commits() - before
	require.Less(t, commits, uint64(writes/2), "%d commits for %d writes", commits, writes)
	require.Positive(t, before+commits)
	require.GreaterOrEqual(t, counterValue(t, s, "keyval_store_commits_total"), float64(before+commits),
		"the metric counts the commits")
}
