package server

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// TestEtcdMutexFences: etcd's concurrency.Mutex works unchanged against
// KeyVal, and the fencing pattern holds: a holder guards its writes with a
// transaction comparing its lock key's create revision (Mutex.IsOwner),
// so once its lease
// is gone and another holds the lock, its guarded write is refused.
func TestEtcdMutexFences(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	cli1 := etcdClient(t, c.clients[lead], "", "")
	cli2 := etcdClient(t, c.clients[lead%3+1], "", "")
	long, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s1, err := concurrency.NewSession(cli1, concurrency.WithTTL(5))
	require.NoError(t, err)
	s2, err := concurrency.NewSession(cli2, concurrency.WithTTL(5))
	require.NoError(t, err)
	defer s2.Close()
	m1, m2 := concurrency.NewMutex(s1, "/lock/"), concurrency.NewMutex(s2, "/lock/")
	require.NoError(t, m1.Lock(long))

	guarded := func(m *concurrency.Mutex, cli *clientv3.Client, value string) (bool, error) {
		// IsOwner compares the lock key's create revision: the fencing token.
		r, err := cli.Txn(long).If(m.IsOwner()).
			Then(clientv3.OpPut("/fenced", value)).Commit()
		if err != nil {
			return false, err
		}
		return r.Succeeded, nil
	}
	ok, err := guarded(m1, cli1, "from 1")
	require.NoError(t, err)
	require.True(t, ok, "the holder's guarded write goes through")

	acquired := make(chan error, 1)
	go func() { acquired <- m2.Lock(long) }()
	// Once the waiter's own key is in place it is queued behind the holder.
	eventually(t, func() error {
		r, err := cli1.Get(long, "/lock/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && r.Count < 2 {
			err = fmt.Errorf("%d lock keys, want the waiter's too", r.Count)
		}
		return err
	})
	select {
	case err := <-acquired:
		t.Fatalf("the second holder got the lock while the first held it (err %v)", err)
	default:
	}

	// The first holder's lease ends (as if it had paused past its TTL):
	// its key is deleted and the waiter takes the lock.
	_, err = cli1.Revoke(long, s1.Lease())
	require.NoError(t, err)
	require.NoError(t, <-acquired)

	ok, err = guarded(m1, cli1, "stale")
	require.NoError(t, err)
	require.False(t, ok, "a stale holder's guarded write is refused")
	ok, err = guarded(m2, cli2, "from 2")
	require.NoError(t, err)
	require.True(t, ok)
	g, err := cli2.Get(long, "/fenced")
	require.NoError(t, err)
	require.Equal(t, "from 2", string(g.Kvs[0].Value))
	require.NoError(t, m2.Unlock(long))
}

// TestEtcdElection: etcd's concurrency.Election works unchanged: one leader
// at a time, the next one takes over when it resigns, and an observer
// sees both.
func TestEtcdElection(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	cli := etcdClient(t, c.clients[c.leader()], "", "")
	long, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s1, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	require.NoError(t, err)
	defer s1.Close()
	s2, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	require.NoError(t, err)
	defer s2.Close()
	e1, e2 := concurrency.NewElection(s1, "/election/"), concurrency.NewElection(s2, "/election/")
	require.NoError(t, e1.Campaign(long, "one"))
	observed := e1.Observe(long)
	first := <-observed
	require.Equal(t, "one", string(first.Kvs[0].Value))

	won := make(chan error, 1)
	go func() { won <- e2.Campaign(long, "two") }()
	l, err := e1.Leader(long)
	require.NoError(t, err)
	require.Equal(t, "one", string(l.Kvs[0].Value))
	require.NoError(t, e1.Resign(long))
	require.NoError(t, <-won)
	for resp := range observed {
		if string(resp.Kvs[0].Value) == "two" {
			return
		}
	}
	t.Fatal("the observer never saw the second leader")
}

// TestEtcdSTM: transfers between accounts in etcd's software transactional
// memory, run concurrently from several clients, keep the total.
func TestEtcdSTM(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	long, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	setup := etcdClient(t, c.clients[c.leader()], "", "")
	const accounts, each = 4, 100
	for i := range accounts {
		_, err := setup.Put(long, fmt.Sprintf("/acct/%d", i), strconv.Itoa(each))
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for w := 1; w <= 3; w++ {
		cli := etcdClient(t, c.clients[c.leader()], "", "")
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := range 10 {
				from, to := fmt.Sprintf("/acct/%d", (w+i)%accounts), fmt.Sprintf("/acct/%d", (w+i+1)%accounts)
				_, err := concurrency.NewSTM(cli, func(stm concurrency.STM) error {
					a, _ := strconv.Atoi(stm.Get(from))
					b, _ := strconv.Atoi(stm.Get(to))
					stm.Put(from, strconv.Itoa(a-1))
					stm.Put(to, strconv.Itoa(b+1))
					return nil
				}, concurrency.WithAbortContext(long))
				if err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	all, err := setup.Get(long, "/acct/", clientv3.WithPrefix())
	require.NoError(t, err)
	total := 0
	for _, kv := range all.Kvs {
		n, err := strconv.Atoi(string(kv.Value))
		require.NoError(t, err)
		total += n
	}
	require.Equal(t, accounts*each, total, "transfers keep the total")
}
