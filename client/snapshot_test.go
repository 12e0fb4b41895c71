package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/api/backup"
)

// snapshotServer sends a fixed snapshot, possibly mangled: the data is
// cut after cut bytes (no checksum follows), or the checksum is wrong.
type snapshotServer struct {
	apipb.UnimplementedKVServer
	data     []byte
	cut      int // < 0: send everything
	badSum   bool
	extra    int // bytes more than announced
	failWith error
	calls    atomic.Int32
}

func (s *snapshotServer) Snapshot(_ *apipb.SnapshotRequest, stream apipb.KV_SnapshotServer) error {
	s.calls.Add(1)
	if s.failWith != nil {
		return s.failWith
	}
	info := &apipb.SnapshotInfo{AppliedIndex: 42, Revision: 7, KeyCount: 3, Size: uint64(len(s.data)), NodeId: 1}
	if err := stream.Send(&apipb.SnapshotResponse{Header: &apipb.Header{NodeId: 1, LeaderId: 1}, Info: info}); err != nil {
		return err
	}
	data := s.data
	if s.cut >= 0 {
		data = data[:s.cut]
	}
	data = append(data[:len(data):len(data)], make([]byte, s.extra)...)
	for len(data) > 0 {
		n := min(len(data), 1000)
		if err := stream.Send(&apipb.SnapshotResponse{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	if s.cut >= 0 {
		return nil // the stream ends early, as if the member gave up
	}
	sum := sha256.Sum256(s.data)
	if s.badSum {
		sum[0] ^= 1
	}
	return stream.Send(&apipb.SnapshotResponse{Sha256: sum[:]})
}

func serveSnapshots(t *testing.T, srv *snapshotServer) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := grpc.NewServer()
	apipb.RegisterKVServer(g, srv)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

func snapshotData() []byte {
	data := make([]byte, 5000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return data
}

func TestSaveSnapshotWritesAVerifiedFile(t *testing.T) {
	data := snapshotData()
	addr := serveSnapshots(t, &snapshotServer{data: data, cut: -1})
	c, err := New(Config{Endpoints: []string{addr}})
	require.NoError(t, err)
	defer c.Close()
	path := filepath.Join(t.TempDir(), "b.kvb")
	info, err := c.SaveSnapshot(context.Background(), path)
	require.NoError(t, err)
	require.Equal(t, uint64(42), info.AppliedIndex)
	require.Equal(t, uint64(len(data)), info.DataBytes)

	b, err := backup.Open(path)
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, info.SHA256, b.Sum.String())
	require.Equal(t, info.FileBytes, b.Size)
	got := make([]byte, len(data)+1)
	n, _ := b.Data().Read(got)
	require.Equal(t, data, got[:n])
}

// TestSaveSnapshotDetectsDamage: a stream cut short, one with a wrong
// checksum, and one with more data than announced all fail with
// ErrSnapshotDamaged, and leave no file behind (not even a temporary one).
func TestSaveSnapshotDetectsDamage(t *testing.T) {
	data := snapshotData()
	for name, tc := range map[string]struct {
		srv  *snapshotServer
		want string
	}{
		"truncated":        {&snapshotServer{data: data, cut: 3000}, "truncated"},
		"truncated-at-0":   {&snapshotServer{data: data, cut: 0}, "truncated"},
		"wrong checksum":   {&snapshotServer{data: data, cut: -1, badSum: true}, "SHA-256"},
		"more than stated": {&snapshotServer{data: data, cut: -1, extra: 10}, "more than"},
	} {
		t.Run(name, func(t *testing.T) {
			addr := serveSnapshots(t, tc.srv)
			c, err := New(Config{Endpoints: []string{addr}})
			require.NoError(t, err)
			defer c.Close()
			dir := t.TempDir()
			_, err = c.SaveSnapshot(context.Background(), filepath.Join(dir, "b.kvb"))
			require.True(t, errors.Is(err, ErrSnapshotDamaged), "err = %v", err)
			require.ErrorContains(t, err, tc.want)
			left, _ := os.ReadDir(dir)
			require.Empty(t, left, "nothing may be left behind")
		})
	}
}

// TestSaveSnapshotRetriesThenRefuses: a transient refusal moves on to the
// next member; a permanent one is returned as a StatusError.
func TestSaveSnapshotRetriesThenRefuses(t *testing.T) {
	busy := &snapshotServer{failWith: status.Error(codes.Unavailable, "no leader")}
	good := &snapshotServer{data: snapshotData(), cut: -1}
	c, err := New(Config{Endpoints: []string{serveSnapshots(t, busy), serveSnapshots(t, good)}})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.SaveSnapshot(ctx, filepath.Join(t.TempDir(), "b.kvb"))
	require.NoError(t, err)
	require.Equal(t, int32(1), busy.calls.Load())

	denied := &snapshotServer{failWith: status.Error(codes.PermissionDenied, "no")}
	c2, err := New(Config{Endpoints: []string{serveSnapshots(t, denied)}})
	require.NoError(t, err)
	defer c2.Close()
	_, err = c2.SaveSnapshot(ctx, filepath.Join(t.TempDir(), "b.kvb"))
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, codes.PermissionDenied, se.Code)
}
