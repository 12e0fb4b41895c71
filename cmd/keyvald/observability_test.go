package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTracingFlags: each exporter makes a tracer provider (none makes
// none), and bad values stop keyvald before it starts.
func TestTracingFlags(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		exporter, endpoint string
		on                 bool
	}{
		{"none", "", false},
		{"stdout", "", true},
		{"otlp", "127.0.0.1:1", true}, // connects lazily: no collector needed to start
		{"otlp", "http://127.0.0.1:1", true},
	} {
		f := &observabilityFlags{exporter: tc.exporter, endpoint: tc.endpoint, sampleRatio: 1, metricsAddr: "127.0.0.1:0"}
		obs, stop, err := f.start(1, log)
		require.NoError(t, err, tc.exporter)
		require.Equal(t, tc.on, obs.TracerProvider != nil, tc.exporter)
		require.Equal(t, "127.0.0.1:0", obs.MetricsAddr)
		stop()
	}

	dir := t.TempDir()
	base := []string{"--id", "1", "--data-dir", dir, "--listen-client", "127.0.0.1:0", "--listen-peer", "127.0.0.1:0",
		"--initial-cluster", "1=127.0.0.1:1"}
	require.ErrorContains(t, run(append(base, "--trace-exporter", "jaeger"), io.Discard), "want none, stdout or otlp")
	require.ErrorContains(t, run(append(base, "--trace-sample-ratio", "2"), io.Discard), "want a fraction from 0 to 1")
	require.ErrorContains(t, run(append(base, "--listen-metrics", "127.0.0.1:-1"), io.Discard), "listen for metrics")
}

func TestOTLPEndpoint(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	require.Len(t, otlpOptions(""), 2, "default: localhost:4317, plaintext")
	require.Len(t, otlpOptions("collector:4317"), 2, "host:port: plaintext")
	require.Len(t, otlpOptions("https://collector:4317"), 1, "a URL says for itself")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317")
	require.Empty(t, otlpOptions(""), "the environment decides")
}

// TestTracingErrorsLoggedOnce: an exporter failing again and again makes
// one line a minute, not one per failure.
func TestTracingErrorsLoggedOnce(t *testing.T) {
	var buf bytes.Buffer
	h := &otelErrorLog{log: slog.New(slog.NewTextHandler(&buf, nil)).With("node", 7)}
	for range 50 {
		h.Handle(errors.New("collector unreachable"))
	}
	require.Equal(t, 1, strings.Count(buf.String(), "collector unreachable"), buf.String())
	require.Contains(t, buf.String(), "node=7")
	require.Equal(t, 49, h.skipped)
}

// TestGRPCLogCarriesNodeID: gRPC's own messages go to slog with the node.
func TestGRPCLogCarriesNodeID(t *testing.T) {
	var buf bytes.Buffer
	g := grpcLogger{slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", 3)}
	g.Errorf("server: %s", "failed")
	g.Warning("a connection attempt failed") // debug: not shown at info
	g.Info("a connection came and went")     // likewise
	require.Equal(t, 1, strings.Count(buf.String(), "\n"), buf.String())
	require.Contains(t, buf.String(), `"node":3`)
	require.Contains(t, buf.String(), `"msg":"grpc: server: failed"`)
	require.False(t, g.V(0))
}
