//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// TestMembership grows a 3-node cluster to 5 and shrinks it back to 3 —
// removing the original leader on the way — while clients keep writing:
// no operation may fail outright, and the whole history (with a final read
// of every key) must be linearizable.
func TestMembership(t *testing.T) {
	c := newCluster(t, 3, 200)
	base := t.TempDir()
	var seeds []string // client addresses of the original members, for --join
	for _, m := range c.members {
		seeds = append(seeds, m.client)
	}
	// The new members exist (ports, connections) before the clients start,
	// so the clients' member list never changes under them; until a node
	// runs, calls to it fail over to another member.
	for id := 4; id <= 5; id++ {
		m := &member{id: id, client: freePort(t), peer: freePort(t), metrics: freePort(t), dir: filepath.Join(base, fmt.Sprint(id)),
			log: filepath.Join(base, fmt.Sprintf("%d.log", id))}
		conn, err := grpc.NewClient(m.client, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		m.conn, m.kv = conn, apipb.NewKVClient(conn)
		c.members = append(c.members, m)
	}
	var all []string
	for _, m := range c.members {
		all = append(all, m.client)
	}
	admin, err := client.New(client.Config{Endpoints: all, RequestTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer admin.Close()

	origLeader := c.leader()
	rec := lin.NewRecorder()
	const keys = 8
	stop := make(chan struct{})
	wg, workers := runWorkers(t, c, rec, 4, keys, stop)
	waitFor(t, "first writes", 10*time.Second, func() bool { return totalAcked(workers) > 50 })
	progress := func(what string) {
		before := totalAcked(workers)
		waitFor(t, "writes continue after "+what, 10*time.Second, func() bool { return totalAcked(workers) > before+30 })
	}

	ctx := context.Background()
	for _, m := range c.members[3:] {
		_, err := admin.MemberAddLearner(ctx, uint64(m.id), m.peer)
		require.NoError(t, err, "add learner %d", m.id)
		c.startWith(m, "--join", strings.Join(seeds, ","))
		// A learner that is still catching up is refused promotion with
		// a clear error; retry until it has caught up.
		took := waitFor(t, fmt.Sprintf("promote node %d", m.id), 30*time.Second, func() bool {
			_, err := admin.MemberPromote(ctx, uint64(m.id))
			var se *client.StatusError
			if err != nil && !(errors.As(err, &se) && se.Code == codes.FailedPrecondition) {
				require.NoError(t, err)
			}
			return err == nil
		})
		t.Logf("node %d joined and was promoted %v after it started", m.id, took.Round(time.Millisecond))
		progress(fmt.Sprintf("adding node %d", m.id))
	}
	ms, err := admin.MemberList(ctx)
	require.NoError(t, err)
	require.Len(t, ms.Members, 5)

	// Shrink: the original leader first, then one more original member.
	var other *member
	for _, m := range c.members[:3] {
		if m != origLeader {
			other = m
			break
		}
	}
	for _, m := range []*member{origLeader, other} {
		_, err := admin.MemberRemove(ctx, uint64(m.id))
		require.NoError(t, err, "remove node %d", m.id)
		select {
		case err := <-m.waitResult:
			require.Error(t, err, "a removed node exits with an error")
			m.cmd = nil
		case <-time.After(15 * time.Second):
			t.Fatalf("removed node %d still running after 15s", m.id)
		}
		b, _ := os.ReadFile(m.log)
		require.Contains(t, string(b), "removed from the cluster", "node %d says why it stopped", m.id)
		progress(fmt.Sprintf("removing node %d", m.id))
	}
	ms, err = admin.MemberList(ctx)
	require.NoError(t, err)
	var ids []uint64
	for _, m := range ms.Members {
		require.False(t, m.Learner)
		ids = append(ids, m.ID)
	}
	require.ElementsMatch(t, []uint64{uint64(6 - origLeader.id - other.id), 4, 5}, ids)

	close(stop)
	wg.Wait()
	var failed int64
	for _, w := range workers {
		failed += w.failed.Load()
	}
	t.Logf("%d operations acknowledged, %d gave up", totalAcked(workers), failed)
	require.Zero(t, failed, "clients saw errors beyond retries")
	readEveryKey(t, c, rec, keys)
	checkLinearizable(t, rec, "keyval-membership-history")
}
