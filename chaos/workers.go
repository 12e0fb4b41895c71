package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/client"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// Client ids in the history: workers are 1..N, pinned readers 100+node,
// the final reads finalReader.
const (
	pinnedReaderBase = 100
	finalReader      = 1000
)

// Timeouts of one client operation. A write is retried by the client on
// other members with the same session until its deadline, so an election
// or a killed member does not make its outcome unknown; one attempt is cut
// short so a paused member does not hold the whole operation.
const (
	opTimeout      = 5 * time.Second
	attemptTimeout = time.Second
	// A pinned reader has one member and no attempt timeout: a read sent
	// to a paused member is answered when it wakes, if within this.
	pinnedReadTimeout = 3 * time.Second
)

// workload is what the clients share: the recorder, the log of writes for
// the durability check, and the run clock.
type workload struct {
	rec    *lin.Recorder
	clock  func() int64
	keys   int
	think  time.Duration
	writes writeLog
	// lastAck is the run-clock time of the latest acknowledged write,
	// which tells whether the cluster makes progress.
	lastAck atomic.Int64
}

type writeLog struct {
	mu     sync.Mutex
	writes []Write
}

func (l *writeLog) add(w Write) {
	l.mu.Lock()
	l.writes = append(l.writes, w)
	l.mu.Unlock()
}

func (l *writeLog) all() []Write {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Write(nil), l.writes...)
}

func keyName(k int) string { return fmt.Sprintf("k%d", k) }

// worker is one sequential client: put, get, delete and CAS on the key
// space through its own client.Client (own sessions, own idea of the
// leader), starting at a different member from the others.
type worker struct {
	id  int
	cl  *client.Client
	w   *workload
	rng *rand.Rand
	seq int
	// versions are the last versions this worker saw per key, for its CAS
	// (0: it believes the key absent).
	versions map[string]uint64
}

func newWorker(id int, endpoints []string, w *workload, seed int64) (*worker, error) {
	// Rotate the endpoints so that workers start at different members.
	n := len(endpoints)
	eps := make([]string, n)
	for i := range endpoints {
		eps[i] = endpoints[(i+id)%n]
	}
	cl, err := client.New(client.Config{
		Endpoints: eps, DialTimeout: time.Second, RequestTimeout: opTimeout,
		AttemptTimeout: attemptTimeout, MaxRetries: 1000,
	})
	if err != nil {
		return nil, err
	}
	return &worker{id: id, cl: cl, w: w, rng: rand.New(rand.NewPCG(uint64(seed), uint64(id))), versions: map[string]uint64{}}, nil
}

// run does operations until stop is closed (letting the one in flight
// finish, so stopping adds no unknown outcomes) or ctx ends.
func (wk *worker) run(ctx context.Context, stop <-chan struct{}) {
	for !shouldStop(ctx, stop) {
		wk.op(ctx)
		if wk.w.think > 0 {
			_ = hold(ctx, wk.w.think)
		}
	}
}

// op does one random operation and records it.
func (wk *worker) op(runCtx context.Context) {
	key := keyName(wk.rng.IntN(wk.w.keys))
	ctx, cancel := context.WithTimeout(runCtx, opTimeout)
	defer cancel()
	r := wk.rng.IntN(20)
	if r < 8 {
		recordGet(ctx, wk.w, wk.cl, wk.id, key)
		return
	}
	wk.seq++
	value := fmt.Sprintf("w%d-%d", wk.id, wk.seq)
	rec, now := wk.w.rec, wk.w.clock
	switch {
	case r < 13:
		id := rec.Call(wk.id, lin.Put(key, value), now())
		res, err := wk.cl.Put(ctx, []byte(key), []byte(value))
		if err != nil {
			wk.failedWrite(id, lin.OpPut, key, value, err)
			return
		}
		_ = rec.Return(id, lin.PutOK(res.Version), now())
		wk.versions[key] = res.Version
		wk.acked(Write{Op: id, Kind: lin.OpPut, Key: key, Value: value, Acked: true, Version: res.Version})
	case r < 16:
		id := rec.Call(wk.id, lin.Delete(key), now())
		res, err := wk.cl.Delete(ctx, []byte(key))
		if err != nil {
			wk.failedWrite(id, lin.OpDelete, key, "", err)
			return
		}
		_ = rec.Return(id, lin.DeleteOK(res.Existed), now())
		delete(wk.versions, key)
		wk.acked(Write{Op: id, Kind: lin.OpDelete, Key: key, Acked: true, Existed: res.Existed, Version: res.Revision})
	default:
		expect := wk.versions[key]
		id := rec.Call(wk.id, lin.CAS(key, expect, value), now())
		res, err := wk.cl.CompareAndSwap(ctx, []byte(key), expect, []byte(value))
		if err != nil {
			wk.failedWrite(id, lin.OpCAS, key, value, err)
			return
		}
		var out lin.Output
		switch {
		case res.Succeeded:
			out = lin.CASSucceeded(res.Version)
			wk.versions[key] = res.Version
		case res.Exists:
			out = lin.CASFailed(string(res.CurrentValue), res.Version)
			wk.versions[key] = res.Version
		default:
			out = lin.CASFailedAbsent()
			delete(wk.versions, key)
		}
		_ = rec.Return(id, out, now())
		wk.acked(Write{Op: id, Kind: lin.OpCAS, Key: key, Value: value, Acked: true, Succeeded: res.Succeeded, Version: res.Version})
	}
}

func (wk *worker) acked(w Write) {
	wk.w.writes.add(w)
	wk.w.lastAck.Store(wk.w.clock())
}

// failedWrite records a write that did not return. Only a refusal of the
// input proves it was not applied; after any other error (deadline, no
// member reachable, connection lost after sending) it may have been, at
// any time after its call.
func (wk *worker) failedWrite(id lin.OpID, kind lin.OpKind, key, value string, err error) {
	if errors.Is(err, client.ErrInvalid) {
		_ = wk.w.rec.Drop(id)
		return
	}
	_ = wk.w.rec.Unknown(id)
	wk.w.writes.add(Write{Op: id, Kind: kind, Key: key, Value: value})
}

// recordGet does one linearizable read and records it; a read that fails
// is left out of the check (it changed nothing).
func recordGet(ctx context.Context, w *workload, cl *client.Client, clientID int, key string) (lin.Output, bool) {
	id := w.rec.Call(clientID, lin.Get(key), w.clock())
	res, err := cl.Get(ctx, []byte(key))
	if err != nil {
		_ = w.rec.Drop(id)
		return lin.Output{}, false
	}
	out := lin.GetNotFound()
	if res.Found {
		out = lin.GetFound(string(res.Value), res.Version)
	}
	_ = w.rec.Return(id, out, w.clock())
	return out, true
}

// pinnedReader reads only, from one member, never failing over: when that
// member is paused or cut off while it believed it led, this is the client
// that would be served a stale value.
type pinnedReader struct {
	id  int
	cl  *client.Client
	w   *workload
	rng *rand.Rand
}

func newPinnedReader(node int, endpoint string, w *workload, seed int64) (*pinnedReader, error) {
	cl, err := client.New(client.Config{
		Endpoints: []string{endpoint}, DialTimeout: time.Second, RequestTimeout: pinnedReadTimeout, MaxRetries: 1000,
	})
	if err != nil {
		return nil, err
	}
	id := pinnedReaderBase + node + 1
	return &pinnedReader{id: id, cl: cl, w: w, rng: rand.New(rand.NewPCG(uint64(seed), uint64(id)))}, nil
}

func (p *pinnedReader) run(ctx context.Context, stop <-chan struct{}) {
	for !shouldStop(ctx, stop) {
		opCtx, cancel := context.WithTimeout(ctx, pinnedReadTimeout)
		recordGet(opCtx, p.w, p.cl, p.id, keyName(p.rng.IntN(p.w.keys)))
		cancel()
		if p.w.think > 0 {
			_ = hold(ctx, p.w.think)
		}
	}
}

func shouldStop(ctx context.Context, stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}
