package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/grpclog"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/server"
)

// observabilityFlags are keyvald's metrics and tracing flags.
type observabilityFlags struct {
	metricsAddr string
	exporter    string
	endpoint    string
	sampleRatio float64
	enablePprof bool
}

func addObservabilityFlags(fs *flag.FlagSet) *observabilityFlags {
	f := &observabilityFlags{}
	fs.StringVar(&f.metricsAddr, "listen-metrics", "", "HTTP address for /metrics (Prometheus), /healthz, /readyz (and /debug/pprof/ with --enable-pprof), e.g. 127.0.0.1:2381; empty: off")
	fs.BoolVar(&f.enablePprof, "enable-pprof", false, "serve Go's profiler at /debug/pprof/ on --listen-metrics (it shows keyvald's command line and runs profiles on demand)")
	fs.StringVar(&f.exporter, "trace-exporter", "none", "where OpenTelemetry traces go: none (off, no cost), stdout, or otlp (OTLP over gRPC to --trace-endpoint)")
	fs.StringVar(&f.endpoint, "trace-endpoint", "", "OTLP gRPC collector for --trace-exporter otlp: host:port (plaintext) or http(s)://host:port; empty: OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317")
	fs.Float64Var(&f.sampleRatio, "trace-sample-ratio", 1, "fraction of requests traced (0 to 1) when tracing is on; a request forwarded from another member follows that member's choice")
	return f
}

// start sets up tracing as the flags say and routes gRPC's and
// OpenTelemetry's own messages to log. stop flushes the traces still
// buffered; call it after the server has stopped.
func (f *observabilityFlags) start(id core.NodeID, log *slog.Logger) (obs server.Observability, stop func(), err error) {
	log = log.With("node", uint64(id))
	grpcLogOnce.Do(func() { grpclog.SetLoggerV2(grpcLogger{log}) }) // before any gRPC use; once per process
	obs.MetricsAddr = f.metricsAddr
	obs.EnablePprof = f.enablePprof
	stop = func() {}
	if f.sampleRatio < 0 || f.sampleRatio > 1 {
		return obs, stop, fmt.Errorf("--trace-sample-ratio %v: want a fraction from 0 to 1", f.sampleRatio)
	}
	var exp sdktrace.SpanExporter
	switch f.exporter {
	case "none", "":
		return obs, stop, nil
	case "stdout":
		exp, err = stdouttrace.New() // traces on stdout; the log is on stderr
	case "otlp":
		exp, err = otlptracegrpc.New(context.Background(), otlpOptions(f.endpoint)...) // connects lazily
	default:
		return obs, stop, fmt.Errorf("--trace-exporter %q: want none, stdout or otlp", f.exporter)
	}
	if err != nil {
		return obs, stop, fmt.Errorf("--trace-exporter %s: %w", f.exporter, err)
	}
	otel.SetErrorHandler(&otelErrorLog{log: log})
	tp := sdktrace.NewTracerProvider(
		// The batcher exports from a goroutine of its own and drops spans
		// when its queue is full: requests never wait for the exporter.
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(f.sampleRatio))),
		sdktrace.WithResource(resource.NewSchemaless(
			attribute.String("service.name", "keyvald"),
			attribute.String("service.instance.id", strconv.FormatUint(uint64(id), 10)),
		)),
	)
	obs.TracerProvider = tp
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("flushing traces", "err", err)
		}
	}
	return obs, stop, nil
}

// otlpOptions: an explicit endpoint is plaintext unless given as an
// https:// URL; without one the exporter reads OTEL_EXPORTER_OTLP_* and
// falls back to plaintext localhost:4317.
func otlpOptions(endpoint string) []otlptracegrpc.Option {
	if endpoint == "" && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		endpoint = "localhost:4317"
	}
	switch {
	case endpoint == "":
		return nil
	case strings.Contains(endpoint, "://"):
		return []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(endpoint)}
	default:
		return []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure()}
	}
}

// otelErrorLog logs OpenTelemetry's errors (an unreachable collector, say)
// at most once a minute, with how many were left out: an exporter retries
// every few seconds and must not flood the log.
type otelErrorLog struct {
	log     *slog.Logger
	mu      sync.Mutex
	last    time.Time
	skipped int
}

func (h *otelErrorLog) Handle(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now := time.Now(); h.last.IsZero() || now.Sub(h.last) >= time.Minute {
		h.log.Warn("tracing", "err", err, "similar_not_logged", h.skipped)
		h.last, h.skipped = now, 0
		return
	}
	h.skipped++
}

// grpcLogger sends gRPC's own log to slog with the node id. Like gRPC's
// default logger, it shows only errors unless asked for more: its info and
// warning messages (a connection attempt failed, a stream closed) repeat
// with every retry while a peer is down, and the transport already logs
// such a streak once; they are debug here.
type grpcLogger struct{ log *slog.Logger }

func (g grpcLogger) Info(args ...any)   { g.log.Debug("grpc: " + fmt.Sprint(args...)) }
func (g grpcLogger) Infoln(args ...any) { g.log.Debug("grpc: " + sprintln(args...)) }
func (g grpcLogger) Infof(format string, args ...any) {
	g.log.Debug("grpc: " + fmt.Sprintf(format, args...))
}
func (g grpcLogger) Warning(args ...any)   { g.log.Debug("grpc: " + fmt.Sprint(args...)) }
func (g grpcLogger) Warningln(args ...any) { g.log.Debug("grpc: " + sprintln(args...)) }
func (g grpcLogger) Warningf(format string, args ...any) {
	g.log.Debug("grpc: " + fmt.Sprintf(format, args...))
}
func (g grpcLogger) Error(args ...any)   { g.log.Error("grpc: " + fmt.Sprint(args...)) }
func (g grpcLogger) Errorln(args ...any) { g.log.Error("grpc: " + sprintln(args...)) }
func (g grpcLogger) Errorf(format string, args ...any) {
	g.log.Error("grpc: " + fmt.Sprintf(format, args...))
}
func (g grpcLogger) Fatal(args ...any)   { g.log.Error("grpc: " + fmt.Sprint(args...)); os.Exit(1) }
func (g grpcLogger) Fatalln(args ...any) { g.log.Error("grpc: " + sprintln(args...)); os.Exit(1) }
func (g grpcLogger) Fatalf(format string, args ...any) {
	g.log.Error("grpc: " + fmt.Sprintf(format, args...))
	os.Exit(1)
}

// V reports whether gRPC's verbose messages of level l are wanted: only
// level 0, and only when debug is on.
func (g grpcLogger) V(l int) bool {
	return l <= 0 && g.log.Enabled(context.Background(), slog.LevelDebug)
}

func sprintln(args ...any) string { return strings.TrimSuffix(fmt.Sprintln(args...), "\n") }

var (
	_           grpclog.LoggerV2 = grpcLogger{}
	grpcLogOnce sync.Once
)
