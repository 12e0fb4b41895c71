package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/api/backup"
	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// Backups beyond --max-concurrent-backups are refused at once with
// ResourceExhausted naming the flag and counted; a backup that ends frees
// its slot for the next, whose file verifies.
func TestConcurrentBackupsBeyondLimitRefused(t *testing.T) {
	const limit = 2
	c := newTestCluster(t, 0, 0)
	c.members[1], c.clients[1] = freeAddr(t), freeAddr(t)
	c.startWith(1, Config{InitialCluster: c.members, MaxConcurrentBackups: limit})
	s := c.servers[c.leader()]
	// Several 1 MiB chunks: more than a stream's fixed 64 KiB window, so a
	// client that does not read holds its backup open in Send.
	value := bytes.Repeat([]byte("b"), 1<<20)
	for i := range 4 {
		_, err := c.conns[1].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("big/%d", i)), Value: value})
		require.NoError(t, err)
	}

	// A fixed window turns off gRPC's window growth (BDP estimation).
	conn, err := grpc.NewClient(c.clients[1], plaintext(),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	require.NoError(t, err)
	defer conn.Close()
	kv := apipb.NewKVClient(conn)
	cancels := make([]context.CancelFunc, limit)
	for i := range limit {
		sctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cancels[i] = cancel
		stream, err := kv.Snapshot(sctx, &apipb.SnapshotRequest{})
		require.NoError(t, err)
		first, err := stream.Recv() // the info: the call holds its slot now
		require.NoError(t, err)
		require.NotNil(t, first.Info)
	}
	require.Equal(t, float64(limit), metricValue(t, s.obs.m.backupsRunning))

	stream, err := c.conns[1].Snapshot(ctx(t), &apipb.SnapshotRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "--max-concurrent-backups")
	require.Equal(t, 1.0, metricValue(t, s.obs.m.backupsRefused))

	cancels[0]()
	eventually(t, func() error {
		if n := metricValue(t, s.obs.m.backupsRunning); n != limit-1 {
			return fmt.Errorf("%v backups running", n)
		}
		return nil
	})
	kc, err := client.New(client.Config{Endpoints: c.endpoints()})
	require.NoError(t, err)
	defer kc.Close()
	path := filepath.Join(t.TempDir(), "after.kvb")
	info, err := kc.SaveSnapshot(ctx(t), path)
	require.NoError(t, err)
	require.Equal(t, uint64(4), info.Keys)
	f, err := backup.Open(path)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, 1.0, metricValue(t, s.obs.m.backupsRefused), "no other backup was refused")
}

// heldReader is snapshot data that blocks until released, then fails.
type heldReader struct {
	reading, release chan struct{}
}

func (r *heldReader) Read([]byte) (int, error) {
	close(r.reading)
	<-r.release
	return 0, errors.New("sender went away")
}

// A peer's snapshot over --max-snapshot-bytes is refused with
// ResourceExhausted naming the flag, and its spool file removed; while one
// snapshot is being received a second is refused; each refusal is counted.
func TestInboundSnapshotBounded(t *testing.T) {
	const limit = 1 << 20
	c := newTestCluster(t, 0, 0)
	for id := core.NodeID(1); id <= 2; id++ {
		c.members[id], c.clients[id] = freeAddr(t), freeAddr(t)
	}
	c.startWith(1, Config{InitialCluster: c.members, MaxSnapshotBytes: limit})
	s := c.servers[1]
	h := (*peerHandler)(s)
	snap := core.Message{Type: core.MsgSnap, From: 2, To: 1, Term: 1,
		Snapshot: &core.SnapshotMeta{Index: 100, Term: 1, Conf: core.ConfState{Voters: []core.NodeID{1, 2}}}}
	tooLarge := func() io.Reader { return io.LimitReader(zeros{}, limit+1) }

	// Spooling stops just past the limit, however much the sender has.
	endless := &countingReader{r: zeros{}}
	err := h.ReceiveSnapshot(snap, endless)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.Equal(t, int64(limit+1), endless.n)
	require.ErrorContains(t, err, "--max-snapshot-bytes")
	require.Equal(t, 1.0, metricValue(t, s.obs.m.peerSnapsRefused.WithLabelValues(refusedSnapTooLarge)))
	spools, err := filepath.Glob(filepath.Join(s.cfg.DataDir, "incoming-snapshot-*"))
	require.NoError(t, err)
	require.Empty(t, spools, "the refused snapshot's spool file is removed")

	held := &heldReader{reading: make(chan struct{}), release: make(chan struct{})}
	firstDone := make(chan error, 1)
	go func() { firstDone <- h.ReceiveSnapshot(snap, held) }()
	<-held.reading
	err = h.ReceiveSnapshot(snap, tooLarge())
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "one at a time")
	require.Equal(t, 1.0, metricValue(t, s.obs.m.peerSnapsRefused.WithLabelValues(refusedSnapBusy)))
	close(held.release)
	require.ErrorContains(t, <-firstDone, "sender went away")

	// The slot is free again: the next one is judged by its size.
	err = h.ReceiveSnapshot(snap, tooLarge())
	require.ErrorContains(t, err, "--max-snapshot-bytes")
	require.Equal(t, 2.0, metricValue(t, s.obs.m.peerSnapsRefused.WithLabelValues(refusedSnapTooLarge)))
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Unless set, the bound on a peer's snapshot follows the storage quota:
// any state the quota allows fits, and no more than a few times it.
func TestSnapshotBoundFollowsQuota(t *testing.T) {
	cfg := Config{ID: 1, DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", QuotaBackendBytes: 1 << 20}
	require.NoError(t, cfg.setDefaults())
	require.Equal(t, int64(SnapshotBytesPerQuota<<20), cfg.MaxSnapshotBytes)
	set := Config{ID: 1, DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", QuotaBackendBytes: 1 << 20, MaxSnapshotBytes: 5}
	require.NoError(t, set.setDefaults())
	require.Equal(t, int64(5), set.MaxSnapshotBytes)
}
