package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/internal/freeport"
	"github.com/therealutkarshpriyadarshi/keyval/server"
)

// TestVersionAndStrayArguments: --version prints the build and starts
// nothing; an argument keyvald does not take is a usage error.
func TestVersionAndStrayArguments(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run([]string{"--version"}, &out))
	require.True(t, strings.HasPrefix(out.String(), "keyvald "), out.String())
	require.Contains(t, out.String(), runtime.Version())

	err := run([]string{"--id", "1", "data-dir"}, io.Discard)
	var usage usageError
	require.ErrorAs(t, err, &usage)
	require.ErrorContains(t, err, `unexpected argument "data-dir"`)
	require.ErrorAs(t, run([]string{"--bogus"}, io.Discard), &usage)
}

// TestSetupFlagErrors: incomplete TLS flags and a restore into a data
// directory in use stop keyvald before it starts, saying what to fix.
func TestSetupFlagErrors(t *testing.T) {
	dir := t.TempDir()
	base := []string{"--id", "1", "--data-dir", dir, "--listen-client", "127.0.0.1:0", "--listen-peer", "127.0.0.1:0",
		"--initial-cluster", "1=127.0.0.1:1"}
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, []byte("not a certificate"), 0o600))

	err := run(append(base, "--client-ca-file", ca), io.Discard)
	require.ErrorContains(t, err, "--client-cert-file and --client-key-file go together")
	err = run(append(base, "--peer-cert-file", ca, "--peer-key-file", ca), io.Discard)
	require.ErrorContains(t, err, "--peer-ca-file is required")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "identity.json"), []byte("{}"), 0o600))
	err = run(append(base, "--restore", filepath.Join(dir, "missing.kvb")), io.Discard)
	require.ErrorContains(t, err, "is not empty")
}

// TestAWALCutShortSaysWhatHappenedAndWhatToDo: a data directory whose
// state database is ahead of its WAL (the WAL lost its tail), of a member
// with no other voter to repair from, is refused with the cause and the
// safe way out, not only the two indexes.
func TestAWALCutShortSaysWhatHappenedAndWhatToDo(t *testing.T) {
	dir, peer, last := nodeWithEntries(t, 50)
	b, err := os.ReadFile(last)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(last, int64(disk.RecordsEnd(b)/2)))

	err = run([]string{"--id", "1", "--data-dir", dir, "--listen-client", "127.0.0.1:0", "--listen-peer", peer,
		"--initial-cluster", "1=" + peer, "--listen-metrics", ""}, io.Discard)
	require.ErrorContains(t, err, "is beyond the last log index", "the symptom")
	require.ErrorContains(t, err, "the WAL lost its tail", "what happened")
	require.ErrorContains(t, err, "kvctl member remove --id 1", "what to do")
	require.ErrorContains(t, err, "keyvald --restore", "what to do without a majority")
}

// TestADamagedWALRecordSaysWhichEntries: a bit flipped in the middle of
// the WAL is refused with the entries the record may have held, and the
// safe way out.
func TestADamagedWALRecordSaysWhichEntries(t *testing.T) {
	dir, peer, last := nodeWithEntries(t, 50)
	b, err := os.ReadFile(last)
	require.NoError(t, err)
	b[disk.RecordsEnd(b)/2] ^= 0x10
	require.NoError(t, os.WriteFile(last, b, 0o600))

	err = run([]string{"--id", "1", "--data-dir", dir, "--listen-client", "127.0.0.1:0", "--listen-peer", peer,
		"--initial-cluster", "1=" + peer, "--listen-metrics", ""}, io.Discard)
	var ce *disk.CorruptionError
	require.ErrorAs(t, err, &ce)
	require.NotNil(t, ce.WAL)
	require.ErrorContains(t, err, "the log is final through index", "which entries")
	require.ErrorContains(t, err, "damaged after it was written", "what happened")
	require.ErrorContains(t, err, "kvctl member remove --id 1", "what to do")
}

// nodeWithEntries runs a one-node cluster long enough to apply n writes and
// stops it; it returns its data directory, peer address and newest WAL
// segment.
func nodeWithEntries(t *testing.T, n int) (dir, peer, lastSegment string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "1")
	peer, err := freeport.Loopback()
	require.NoError(t, err)
	writeEntries(t, server.Config{ID: 1, DataDir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: peer,
		InitialCluster: map[core.NodeID]string{1: peer}}, n)
	segs, err := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	require.NoError(t, err)
	require.NotEmpty(t, segs)
	return dir, peer, segs[len(segs)-1]
}

// writeEntries runs a node with cfg long enough to apply n writes, then
// stops it.
func writeEntries(t *testing.T, cfg server.Config, n int) {
	t.Helper()
	s, err := server.New(cfg)
	require.NoError(t, err)
	s.Start()
	defer s.Stop(context.Background())
	conn, err := grpc.NewClient(s.ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	kv := apipb.NewKVClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range n {
		key := []byte(fmt.Sprint("k", i))
		// Until the node has elected itself, puts are refused.
		for {
			_, err := kv.Put(ctx, &apipb.PutRequest{Key: key, Value: key})
			if err == nil {
				break
			}
			require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
			require.NoError(t, ctx.Err(), "no leader in time")
			time.Sleep(10 * time.Millisecond) // polling interval
		}
	}
}

// TestPlaintextPeerPortOnlyOnLoopback: without peer TLS keyvald refuses a
// peer address beyond loopback (before binding anything) unless
// --peer-insecure is given, and warns when it runs a plaintext peer port.
func TestPlaintextPeerPortOnlyOnLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:2380": true, "[::1]:2380": true, "localhost:2380": true,
		"0.0.0.0:2380": false, ":2380": false, "10.0.0.1:2380": false, "db.example:2380": false, "nonsense": false} {
		require.Equal(t, want, loopback(addr), addr)
	}
	dir := t.TempDir()
	err := run([]string{"--id", "1", "--data-dir", dir, "--listen-client", "127.0.0.1:0", "--listen-peer", "0.0.0.0:0",
		"--initial-cluster", "1=127.0.0.1:1", "--listen-metrics", ""}, io.Discard)
	require.ErrorContains(t, err, "--peer-insecure")
	_, statErr := os.Stat(filepath.Join(dir, "identity.json"))
	require.ErrorIs(t, statErr, os.ErrNotExist, "refused before the data directory was touched")

	var logs bytes.Buffer
	peer, err := freeport.Loopback()
	require.NoError(t, err)
	srv, err := (&setupFlags{}).newServer(server.Config{ID: 1, DataDir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: peer,
		InitialCluster: map[core.NodeID]string{1: peer}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	srv.Start()
	srv.Stop(context.Background())
	require.Contains(t, logs.String(), "the peer port is plaintext")
}
