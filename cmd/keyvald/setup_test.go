package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSetupFlagErrors: incomplete TLS flags and a restore into a data
// directory in use stop keyvald before it starts, saying what to fix.
func TestSetupFlagErrors(t *testing.T) {
	dir := t.TempDir()
	base := []string{"--id", "1", "--data-dir", dir, "--listen-client", "127.0.0.1:0", "--listen-peer", "127.0.0.1:0",
		"--initial-cluster", "1=127.0.0.1:1"}
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, []byte("not a certificate"), 0o600))

	err := run(append(base, "--client-ca-file", ca))
	require.ErrorContains(t, err, "--client-cert-file and --client-key-file go together")
	err = run(append(base, "--peer-cert-file", ca, "--peer-key-file", ca))
	require.ErrorContains(t, err, "--peer-ca-file is required")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "identity.json"), []byte("{}"), 0o600))
	err = run(append(base, "--restore", filepath.Join(dir, "missing.kvb")))
	require.ErrorContains(t, err, "is not empty")
}
