package server

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client"
)

// A Range over values whose total exceeds --max-range-bytes stops within
// the budget with more set and is counted; continuing from the last key
// returns the rest, and the Go client's List, which pages on more, gets
// every key.
func TestRangeStopsAtByteBudget(t *testing.T) {
	const keys, valueBytes, budget = 20, 16 << 10, 100 << 10 // 6 values fit in a page
	c := newTestCluster(t, 0, 0)
	c.members[1], c.clients[1] = freeAddr(t), freeAddr(t)
	c.startWith(1, Config{InitialCluster: c.members, MaxRangeBytes: budget})
	kv := c.conns[c.leader()]
	value := bytes.Repeat([]byte("v"), valueBytes)
	for i := range keys {
		_, err := kv.Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("r/%02d", i)), Value: value})
		require.NoError(t, err)
	}

	var got []string
	var after []byte
	for pages := 1; ; pages++ {
		resp, err := kv.Range(ctx(t), &apipb.RangeRequest{Prefix: []byte("r/"), StartAfter: after})
		require.NoError(t, err)
		require.NotEmpty(t, resp.Kvs)
		size := 0
		for _, e := range resp.Kvs {
			size += len(e.Key) + len(e.Value)
			require.Equal(t, value, e.Value)
			got = append(got, string(e.Key))
		}
		require.LessOrEqual(t, size, budget, "page %d", pages)
		if !resp.More {
			require.Equal(t, 4, pages, "pages of 6, 6, 6 and 2 keys")
			break
		}
		require.Len(t, resp.Kvs, 6, "page %d holds as many values as fit", pages)
		after = resp.Kvs[len(resp.Kvs)-1].Key
	}
	require.Len(t, got, keys)
	for i, k := range got {
		require.Equal(t, fmt.Sprintf("r/%02d", i), k)
	}
	require.Equal(t, 3.0, metricValue(t, c.servers[1].obs.m.rangesCut), "three answers were cut short")

	kc, err := client.New(client.Config{Endpoints: c.endpoints()})
	require.NoError(t, err)
	defer kc.Close()
	all, err := kc.List(ctx(t), []byte("r/"), 0)
	require.NoError(t, err)
	require.Len(t, all.KVs, keys)
	require.False(t, all.More)
	for i, e := range all.KVs {
		require.Equal(t, fmt.Sprintf("r/%02d", i), string(e.Key))
		require.Equal(t, value, e.Value)
	}
}

// An etcd Range with no limit whose answer would pass --max-range-bytes is
// refused, not cut: etcdctl get (and any caller that set no limit) does not
// look at more, and would take part of the range for all of it. With a
// limit the answer stops within the budget with more set, and paging from
// the last key returns every key.
func TestEtcdRangeWithoutLimitPastBudget(t *testing.T) {
	const keys, valueBytes, budget = 20, 16 << 10, 100 << 10 // 6 values fit in a page
	c := newTestCluster(t, 0, 0)
	c.members[1], c.clients[1] = freeAddr(t), freeAddr(t)
	c.startWith(1, Config{InitialCluster: c.members, MaxRangeBytes: budget})
	c.leader()
	cli := etcdClient(t, c.clients[1], "", "")
	value := string(bytes.Repeat([]byte("v"), valueBytes))
	for i := range keys {
		_, err := cli.Put(ctx(t), fmt.Sprintf("r/%02d", i), value)
		require.NoError(t, err)
	}

	one, err := cli.Get(ctx(t), "r/05")
	require.NoError(t, err)
	require.Len(t, one.Kvs, 1)
	_, err = cli.Get(ctx(t), "r/", clientv3.WithPrefix())
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "--max-range-bytes")
	_, err = cli.Get(ctx(t), "r/", clientv3.WithPrefix(), clientv3.WithLimit(-1))
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "a negative limit is none, as in etcd: %v", err)
	require.Equal(t, 2.0, metricValue(t, c.servers[1].obs.m.rangesRefused))
	counted, err := cli.Get(ctx(t), "r/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err, "a count carries no values")
	require.EqualValues(t, keys, counted.Count)
	names, err := cli.Get(ctx(t), "r/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	require.NoError(t, err, "nor do keys alone")
	require.Len(t, names.Kvs, keys)
	require.False(t, names.More)

	var got []string
	from := "r/"
	for {
		resp, err := cli.Get(ctx(t), from, clientv3.WithRange(clientv3.GetPrefixRangeEnd("r/")), clientv3.WithLimit(keys))
		require.NoError(t, err)
		require.LessOrEqual(t, len(resp.Kvs), 6)
		for _, kv := range resp.Kvs {
			require.Equal(t, value, string(kv.Value))
			got = append(got, string(kv.Key))
		}
		if !resp.More {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	require.Len(t, got, keys)
}
