package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/internal/freeport"
	"github.com/therealutkarshpriyadarshi/keyval/server"
	"github.com/therealutkarshpriyadarshi/keyval/server/testpki"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Loopback()
	require.NoError(t, err)
	return addr
}

// startTLSNode runs a real one-member cluster whose client port speaks TLS
// with a certificate from a throwaway CA; it returns the client address
// and the CA's file.
func startTLSNode(t *testing.T) (addr, caFile string) {
	t.Helper()
	ca := testpki.NewCA(t, "kvctl-test")
	cert, key := ca.Issue(t, "node", "127.0.0.1")
	tlsCfg, err := server.ClientTLS(server.TLSFiles{CertFile: cert, KeyFile: key})
	require.NoError(t, err)
	addr, peer := freeAddr(t), freeAddr(t)
	s, err := server.New(server.Config{
		ID: 1, DataDir: t.TempDir(), ClientAddr: addr, PeerAddr: peer,
		InitialCluster: map[core.NodeID]string{1: peer}, ClientTLS: tlsCfg,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	s.Start()
	t.Cleanup(func() { s.Stop(context.Background()) })
	return addr, ca.File
}

// TestTLSAndSnapshot: kvctl with --cacert talks to a TLS member (and
// without it cannot); snapshot save writes a backup that snapshot status
// checks and describes; a damaged backup is reported.
func TestTLSAndSnapshot(t *testing.T) {
	addr, caFile := startTLSNode(t)
	tls := []string{"--endpoints", addr, "--cacert", caFile}

	r := kvctl(nil, append(tls, "put", "greeting", "hello")...)
	require.Equal(t, 0, r.code, r.stderr)
	r = kvctl(nil, append(tls, "get", "greeting")...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "hello\n", r.stdout)
	r = kvctl(nil, "--endpoints", addr, "--timeout", "1s", "get", "greeting")
	assert.Equal(t, 3, r.code, "plaintext to a TLS member: %s", r.stderr)

	path := filepath.Join(t.TempDir(), "backup.kvb")
	r = kvctl(nil, append(tls, "-o", "json", "snapshot", "save", path)...)
	require.Equal(t, 0, r.code, r.stderr)
	var saved snapshotJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &saved))
	assert.Equal(t, uint64(1), saved.Keys)
	assert.Equal(t, addr, saved.Endpoint)
	assert.Len(t, saved.SHA256, 64)

	r = kvctl(nil, "-o", "json", "snapshot", "status", path)
	require.Equal(t, 0, r.code, r.stderr)
	var st snapshotJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	assert.Equal(t, saved.SHA256, st.SHA256)
	assert.Equal(t, saved.Index, st.Index)
	assert.Equal(t, saved.FileBytes, st.FileBytes)
	assert.Equal(t, uint64(1), st.NodeID)

	r = kvctl(nil, "snapshot", "status", path)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "keys:")
	assert.Contains(t, r.stdout, saved.SHA256)

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[len(b)/2] ^= 1
	require.NoError(t, os.WriteFile(path, b, 0o600))
	r = kvctl(nil, "snapshot", "status", path)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "damaged")

	r = kvctl(nil, "snapshot", "frobnicate")
	assert.Equal(t, 2, r.code)
	r = kvctl(nil, "snapshot", "save")
	assert.Equal(t, 2, r.code)
}
