package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/internal/freeport"
	"github.com/therealutkarshpriyadarshi/keyval/net/transport"
	"github.com/therealutkarshpriyadarshi/keyval/server"
)

// TestCertsMakeAWorkingMutualTLSCluster: the files kvctl certs writes run
// a 3-member cluster with client TLS and peer mTLS with member identity,
// which kvctl reaches with the client certificate; a second run adds a
// member's certificate with the same CA.
func TestCertsMakeAWorkingMutualTLSCluster(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	peers, clients := map[core.NodeID]string{}, map[core.NodeID]string{}
	for id := core.NodeID(1); id <= 3; id++ {
		var err error
		peers[id], err = freeport.Loopback()
		require.NoError(t, err)
		clients[id], err = freeport.Loopback()
		require.NoError(t, err)
	}
	r := kvctl(nil, "certs", "--dir", dir, "--initial-cluster", server.FormatCluster(peers))
	require.Equal(t, 0, r.code, r.stderr)
	cid := (&server.Config{InitialCluster: peers, ClusterToken: server.DefaultClusterToken}).ClusterID()
	require.Contains(t, r.stdout, fmt.Sprintf("cluster id %016x", cid))
	require.Equal(t, core.NodeID(2), certMember(t, filepath.Join(dir, "member-2.pem"), cid))

	var endpoints []string
	for id := core.NodeID(1); id <= 3; id++ {
		member := server.TLSFiles{CertFile: filepath.Join(dir, fmt.Sprintf("member-%d.pem", id)),
			KeyFile: filepath.Join(dir, fmt.Sprintf("member-%d-key.pem", id)), CAFile: filepath.Join(dir, "ca.pem")}
		cfg := server.Config{ID: id, DataDir: filepath.Join(t.TempDir(), "data"), ClientAddr: clients[id], PeerAddr: peers[id],
			InitialCluster: peers, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		var err error
		cfg.ClientTLS, err = server.ClientTLS(member)
		require.NoError(t, err)
		cfg.PeerServerTLS, cfg.PeerClientTLS, err = server.PeerTLS(member)
		require.NoError(t, err)
		s, err := server.New(cfg)
		require.NoError(t, err)
		s.Start()
		t.Cleanup(func() { s.Stop(context.Background()) })
		endpoints = append(endpoints, clients[id])
	}
	tlsArgs := []string{"--endpoints", strings.Join(endpoints, ","), "--cacert", filepath.Join(dir, "ca.pem"),
		"--cert", filepath.Join(dir, "client.pem"), "--key", filepath.Join(dir, "client-key.pem"), "--timeout", "10s"}
	r = kvctl(nil, append(tlsArgs, "put", "k", "over mTLS")...)
	require.Equal(t, 0, r.code, r.stderr)
	deadline := time.Now().Add(10 * time.Second)
	for _, ep := range endpoints { // replicated to every member
		for {
			r = kvctl(nil, append(tlsArgs[2:], "--endpoints", ep, "get", "k", "--serializable")...)
			if r.code == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
		require.Equal(t, 0, r.code, "%s: %s", ep, r.stderr)
		require.Contains(t, r.stdout, "over mTLS")
	}

	r = kvctl(nil, "certs", "--dir", dir, "--initial-cluster", "4=127.0.0.1:1", "--cluster-id", fmt.Sprintf("%016x", cid))
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "using the CA in")
	require.Equal(t, core.NodeID(4), certMember(t, filepath.Join(dir, "member-4.pem"), cid))
	r = kvctl(nil, "certs", "--dir", dir, "--initial-cluster", "4=127.0.0.1:1", "--cluster-id", fmt.Sprintf("%016x", cid))
	require.Equal(t, exitFailed, r.code, "overwrote member-4.pem")
	require.Contains(t, r.stderr, "file exists")
}

func certMember(t *testing.T, file string, cluster uint64) core.NodeID {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	block, _ := pem.Decode(b)
	require.NotNil(t, block, file)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	id, err := transport.CertMember(cert, cluster)
	require.NoError(t, err)
	return id
}
