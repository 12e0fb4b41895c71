//go:build integration

package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// etcdKeyPrefix holds every key of the etcd workload, so one prefix Range
// reads them all.
const etcdKeyPrefix = "etcd/"

// etcdOpTimeout bounds one clientv3 call: long enough to ride out an
// election (500ms election timeout), short enough that a worker stuck on a
// dead member moves on.
const etcdOpTimeout = 2 * time.Second

// TestEtcdFailover runs etcd's Go client against a 3-member cluster: each
// worker has its own clientv3 client over all three endpoints and puts,
// reads (linearizable) and compare-and-sets with a Txn on a few keys while
// the leader is killed with SIGKILL and later restarted (catching up by
// snapshot). Afterwards no acknowledged write may be lost, the whole
// history must be linearizable, and every member must answer the same read
// at the same revision.
func TestEtcdFailover(t *testing.T) {
	c := newCluster(t, 3, 50)
	c.leader()
	var endpoints []string
	for _, m := range c.members {
		endpoints = append(endpoints, m.client)
	}
	rec := lin.NewRecorder()
	const keys = 4
	workers, stop := runEtcdWorkers(t, endpoints, rec, 4, keys)
	waitFor(t, "first etcd writes", 10*time.Second, func() bool { return etcdAcked(workers) > 50 })

	lead := c.leader()
	c.kill(lead)
	before := etcdAcked(workers)
	took := waitFor(t, "etcd writes resume after the leader was killed", 15*time.Second,
		func() bool { return etcdAcked(workers) > before+20 })
	t.Logf("etcd writes resumed %v after kill -9 of node %d", took.Round(time.Millisecond), lead.id)
	// Enough writes while it is down that it must catch up by snapshot,
	// which then has to carry the revision history.
	waitFor(t, "etcd writes while the node is down", 20*time.Second,
		func() bool { return etcdAcked(workers) > before+200 })
	c.start(lead)
	// The restarted node must serve reads while it catches up and after:
	// a read it answers from a state behind the cluster's is not
	// linearizable.
	servedBefore := etcdReadsFrom(workers, lead.id)
	took = waitFor(t, "reads answered by the restarted node", 20*time.Second,
		func() bool { return etcdReadsFrom(workers, lead.id) > servedBefore+50 })
	t.Logf("the restarted node answered 50 reads within %v of its start", took.Round(time.Millisecond))
	stop()
	logEtcdWorkload(t, c, workers)

	final := readEtcdKeys(t, endpoints, rec, keys)
	t.Run("no acknowledged write lost", func(t *testing.T) {
		requireNoLostEtcdWrite(t, workers, final)
	})
	t.Run("history is linearizable", func(t *testing.T) {
		checkLinearizable(t, rec, "keyval-etcd-failover-history")
	})
	t.Run("every member answers the same read at the same revision", func(t *testing.T) {
		requireSameRevisionEverywhere(t, c, final)
	})
	t.Run("the restarted node caught up by snapshot", func(t *testing.T) {
		b, err := os.ReadFile(lead.log)
		require.NoError(t, err)
		require.Contains(t, string(b), "received snapshot", "node %d should have been brought up by a snapshot", lead.id)
	})
}

// etcdKV is a key's value and the revision that wrote it, as a client saw
// them.
type etcdKV struct {
	value string
	rev   int64
}

// etcdWorker is one etcd client running sequential operations, each
// recorded for the linearizability check. The model's version of a key is
// etcd's mod revision: both are the revision of the key's last write. Writes are never retried by the
// worker: etcd has no exactly-once sessions, so a write whose answer was
// lost is recorded with an unknown outcome instead.
type etcdWorker struct {
	id  int
	cli *clientv3.Client
	rec *lin.Recorder
	rng *rand.Rand
	// seen is the last value and revision this worker saw per key, the
	// expected value of its next compare-and-set.
	seen  map[string]etcdKV
	acked atomic.Int64
	// failed counts operations that got an error.
	failed atomic.Int64
	// mu guards written and readsFrom.
	mu sync.Mutex
	// written is the acknowledged write of the highest revision per key.
	written map[string]etcdKV
	// readsFrom counts the reads each member answered, by member id.
	readsFrom map[uint64]int64
}

func etcdDial(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err, "clientv3 on %v", endpoints)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// runEtcdWorkers starts n workers on keys keys; stop ends them and waits
// for their last operations. It also runs when the test ends, before the
// clients are closed and the cluster stopped, should the test fail first.
func runEtcdWorkers(t *testing.T, endpoints []string, rec *lin.Recorder, n, keys int) ([]*etcdWorker, func()) {
	var wg sync.WaitGroup
	done := make(chan struct{})
	var workers []*etcdWorker
	for i := range n {
		w := &etcdWorker{id: i + 1, cli: etcdDial(t, endpoints...), rec: rec, rng: rand.New(rand.NewPCG(uint64(i), 16)),
			seen: map[string]etcdKV{}, written: map[string]etcdKV{}, readsFrom: map[uint64]int64{}}
		workers = append(workers, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 1; ; seq++ {
				select {
				case <-done:
					return
				default:
					w.op(etcdKey(w.rng.IntN(keys)), fmt.Sprintf("w%d-%d", w.id, seq))
				}
			}
		}()
	}
	stop := sync.OnceFunc(func() {
		close(done)
		wg.Wait()
	})
	t.Cleanup(stop)
	return workers, stop
}

func etcdKey(i int) string { return fmt.Sprintf("%sk%d", etcdKeyPrefix, i) }

// wallNanos is the clock of the recorded history.
func wallNanos() int64 { return time.Now().UnixNano() }

// op runs one operation on key; value is unique to this call, so a value
// read names the one write that wrote it.
func (w *etcdWorker) op(key, value string) {
	switch r := w.rng.IntN(10); {
	case r < 4:
		w.get(key)
	case r < 7:
		w.put(key, value)
	default:
		w.cas(key, value)
	}
}

func (w *etcdWorker) get(key string) {
	id := w.rec.Call(w.id, lin.Get(key), wallNanos())
	ctx, cancel := context.WithTimeout(context.Background(), etcdOpTimeout)
	defer cancel()
	resp, err := w.cli.Get(ctx, key)
	if err != nil {
		_ = w.rec.Drop(id) // a read changes nothing
		w.failed.Add(1)
		w.backOff()
		return
	}
	w.mu.Lock()
	w.readsFrom[resp.Header.MemberId]++
	w.mu.Unlock()
	out := lin.GetNotFound()
	if len(resp.Kvs) > 0 {
		kv := resp.Kvs[0]
		out = lin.GetFound(string(kv.Value), uint64(kv.ModRevision))
		w.seen[key] = etcdKV{string(kv.Value), kv.ModRevision}
	}
	_ = w.rec.Return(id, out, wallNanos())
}

func (w *etcdWorker) put(key, value string) {
	id := w.rec.Call(w.id, lin.Put(key, value), wallNanos())
	ctx, cancel := context.WithTimeout(context.Background(), etcdOpTimeout)
	defer cancel()
	resp, err := w.cli.Put(ctx, key, value)
	if err != nil {
		w.unknown(id)
		return
	}
	w.acknowledged(id, key, etcdKV{value, resp.Header.Revision}, lin.PutOK(uint64(resp.Header.Revision)))
}

// cas is the etcd idiom for compare-and-set: a Txn that puts the new value
// if the key still holds the value this worker last saw (or is still
// absent), and otherwise reads the key. Values are unique, so "holds the
// value seen at revision r" is "was last written at r": the model's CAS on
// version r.
func (w *etcdWorker) cas(key, value string) {
	old, known := w.seen[key]
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	if known {
		cmp = clientv3.Compare(clientv3.Value(key), "=", old.value)
	}
	id := w.rec.Call(w.id, lin.CAS(key, uint64(old.rev), value), wallNanos())
	ctx, cancel := context.WithTimeout(context.Background(), etcdOpTimeout)
	defer cancel()
	resp, err := w.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, value)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		w.unknown(id)
		return
	}
	if resp.Succeeded {
		w.acknowledged(id, key, etcdKV{value, resp.Header.Revision}, lin.CASSucceeded(uint64(resp.Header.Revision)))
		return
	}
	out := lin.CASFailedAbsent()
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		out = lin.CASFailed(string(kvs[0].Value), uint64(kvs[0].ModRevision))
		w.seen[key] = etcdKV{string(kvs[0].Value), kvs[0].ModRevision}
	}
	_ = w.rec.Return(id, out, wallNanos())
}

// unknown records a write whose answer was lost: it may have been applied.
func (w *etcdWorker) unknown(id lin.OpID) {
	_ = w.rec.Unknown(id)
	w.failed.Add(1)
	w.backOff()
}

// backOff paces a worker after an error, as a real client would. Until the
// followers notice that the leader is gone, they fail forwarded writes at
// once; without a pause each worker would record thousands of writes of
// unknown outcome there, and each one can double the checker's search.
func (w *etcdWorker) backOff() {
	time.Sleep(time.Duration(10+w.rng.IntN(20)) * time.Millisecond) // backoff between operations after an error
}

func (w *etcdWorker) acknowledged(id lin.OpID, key string, kv etcdKV, out lin.Output) {
	_ = w.rec.Return(id, out, wallNanos())
	w.seen[key] = kv
	w.acked.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if kv.rev > w.written[key].rev {
		w.written[key] = kv
	}
}

func etcdAcked(ws []*etcdWorker) int64 {
	var n int64
	for _, w := range ws {
		n += w.acked.Load()
	}
	return n
}

// etcdReadsFrom is how many reads member id answered.
func etcdReadsFrom(ws []*etcdWorker, id int) int64 {
	var n int64
	for _, w := range ws {
		w.mu.Lock()
		n += w.readsFrom[uint64(id)]
		w.mu.Unlock()
	}
	return n
}

func logEtcdWorkload(t *testing.T, c *cluster, ws []*etcdWorker) {
	var acked, failed int64
	reads := map[int]int64{}
	for _, w := range ws {
		acked += w.acked.Load()
		failed += w.failed.Load()
	}
	for _, m := range c.members {
		reads[m.id] = etcdReadsFrom(ws, m.id)
	}
	t.Logf("etcd workload: %d writes acknowledged, %d operations failed; reads answered by member: %v", acked, failed, reads)
}

// readEtcdKeys reads every key of the workload once more, linearizably and
// recorded after every other operation, so a lost acknowledged write also
// makes the history non-linearizable. It returns the read's answer.
func readEtcdKeys(t *testing.T, endpoints []string, rec *lin.Recorder, keys int) *clientv3.GetResponse {
	t.Helper()
	cli := etcdDial(t, endpoints...)
	const reader = 100
	var ids []lin.OpID
	for k := range keys {
		ids = append(ids, rec.Call(reader, lin.Get(etcdKey(k)), wallNanos()))
	}
	var resp *clientv3.GetResponse
	waitFor(t, "a final read of every key", 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), etcdOpTimeout)
		defer cancel()
		var err error
		resp, err = cli.Get(ctx, etcdKeyPrefix, clientv3.WithPrefix())
		return err == nil
	})
	at := wallNanos()
	byKey := map[string]lin.Output{}
	for _, kv := range resp.Kvs {
		byKey[string(kv.Key)] = lin.GetFound(string(kv.Value), uint64(kv.ModRevision))
	}
	for k, id := range ids {
		out, ok := byKey[etcdKey(k)]
		if !ok {
			out = lin.GetNotFound()
		}
		require.NoError(t, rec.Return(id, out, at))
	}
	return resp
}

// requireNoLostEtcdWrite fails unless each key's final value is its last
// acknowledged write or a write of a later revision (one whose answer was
// lost).
func requireNoLostEtcdWrite(t *testing.T, ws []*etcdWorker, final *clientv3.GetResponse) {
	t.Helper()
	last := map[string]etcdKV{}
	for _, w := range ws {
		w.mu.Lock()
		for key, kv := range w.written {
			if kv.rev > last[key].rev {
				last[key] = kv
			}
		}
		w.mu.Unlock()
	}
	current := map[string]etcdKV{}
	for _, kv := range final.Kvs {
		current[string(kv.Key)] = etcdKV{string(kv.Value), kv.ModRevision}
	}
	for key, want := range last {
		got, ok := current[key]
		require.True(t, ok, "%s: acknowledged %q at revision %d, but the key is gone", key, want.value, want.rev)
		require.GreaterOrEqual(t, got.rev, want.rev, "%s: acknowledged %q at revision %d, but it holds %q of revision %d",
			key, want.value, want.rev, got.value, got.rev)
		if got.rev == want.rev {
			require.Equal(t, want.value, got.value, "%s at revision %d", key, got.rev)
		}
	}
}

// requireSameRevisionEverywhere reads the workload's keys at the final
// read's revision from each member alone (serializable: its own applied
// state), waiting for a member still catching up, and requires each answer
// to be the final read's.
func requireSameRevisionEverywhere(t *testing.T, c *cluster, final *clientv3.GetResponse) {
	t.Helper()
	rev := final.Header.Revision
	for _, m := range c.members {
		cli := etcdDial(t, m.client)
		var resp *clientv3.GetResponse
		waitFor(t, fmt.Sprintf("node %d reads at revision %d", m.id, rev), 20*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), etcdOpTimeout)
			defer cancel()
			var err error
			resp, err = cli.Get(ctx, etcdKeyPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithSerializable())
			return err == nil
		})
		require.Equal(t, describeKVs(final), describeKVs(resp), "node %d at revision %d", m.id, rev)
	}
}

// describeKVs renders a Range's keys with their values and revisions, to
// compare answers of different members.
func describeKVs(resp *clientv3.GetResponse) []string {
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, fmt.Sprintf("%s=%q create=%d mod=%d version=%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version))
	}
	return out
}
