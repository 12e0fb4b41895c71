package main

import (
	"crypto/tls"
	"flag"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTLSPolicyFlags: --tls-min-version and the allowed names reach the
// endpoints' files; a wrong version, and metrics certificates without a
// metrics address, stop keyvald before it starts.
func TestTLSPolicyFlags(t *testing.T) {
	dir := t.TempDir()
	base := []string{"--id", "1", "--data-dir", dir, "--listen-client", "127.0.0.1:0", "--listen-peer", "127.0.0.1:0",
		"--initial-cluster", "1=127.0.0.1:1"}
	require.ErrorContains(t, run(append(base, "--tls-min-version", "1.1"), io.Discard), "--tls-min-version")
	require.ErrorContains(t, run(append(base, "--metrics-cert-file", "c.pem", "--metrics-key-file", "k.pem"), io.Discard),
		"need --listen-metrics")

	fs := flag.NewFlagSet("keyvald", flag.ContinueOnError)
	f := addSetupFlags(fs)
	require.NoError(t, fs.Parse([]string{"--client-cert-allowed-cn", "app, ops", "--peer-cert-allowed-hostname", "a.example,127.0.0.1,"}))
	require.NoError(t, f.tls.apply(f))
	require.Equal(t, uint16(tls.VersionTLS13), f.client.MinVersion, "TLS 1.3 by default")
	require.Equal(t, uint16(tls.VersionTLS13), f.peer.MinVersion)
	require.Equal(t, uint16(tls.VersionTLS13), f.tls.metrics.MinVersion)
	require.Equal(t, []string{"app", "ops"}, f.client.AllowedCNs)
	require.Empty(t, f.client.AllowedHostnames)
	require.Equal(t, []string{"a.example", "127.0.0.1"}, f.peer.AllowedHostnames)

	require.NoError(t, fs.Set("tls-min-version", "1.2"))
	require.NoError(t, f.tls.apply(f))
	require.Equal(t, uint16(tls.VersionTLS12), f.peer.MinVersion)
}

// TestEnablePprofFlag: the profiler is off unless --enable-pprof is given.
func TestEnablePprofFlag(t *testing.T) {
	for _, args := range [][]string{nil, {"--enable-pprof"}} {
		fs := flag.NewFlagSet("keyvald", flag.ContinueOnError)
		f := addObservabilityFlags(fs)
		require.NoError(t, fs.Parse(args))
		obs, stop, err := f.start(1, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		stop()
		require.Equal(t, len(args) > 0, obs.EnablePprof, "args %v", args)
	}
}
