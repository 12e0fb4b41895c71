package server

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// listenHTTP binds the metrics address, if one is configured. The server
// starts serving in start.
func (o *observer) listenHTTP() error {
	addr := o.s.cfg.MetricsAddr
	if addr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	if o.s.cfg.MetricsTLS != nil {
		lis = tls.NewListener(lis, o.s.cfg.MetricsTLS)
	}
	o.httpLis = lis
	o.httpSrv = &http.Server{Handler: o.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
	return nil
}

// httpHandler serves, on a mux of its own (never http.DefaultServeMux):
//
//	/metrics       Prometheus text format, this node's registry only
//	/healthz       200 while the process serves HTTP
//	/readyz        200 when ready (see observer.ready), else 503 and why
//	/health, /livez, /version   as etcd serves them (handleEtcdProbes)
//	/debug/pprof/  Go's profiler, with EnablePprof only
func (o *observer) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.metricsHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", o.serveReady)
	o.s.handleEtcdProbes(mux)
	if o.s.cfg.EnablePprof {
		handlePprof(mux)
	}
	return mux
}

// metricsHandler serves this node's registry in Prometheus' text format.
func (o *observer) metricsHandler() http.Handler {
	return promhttp.HandlerFor(o.m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slogPrinter{o},
	})
}

// serveReady is /readyz: 200 when ready (see observer.ready), else 503
// and why.
func (o *observer) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if o.ready() {
		fmt.Fprintln(w, "ready")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintln(w, "not ready:", o.notReadyReason())
}

func handlePprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index) // also serves the named profiles: heap, goroutine, …
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// slogPrinter sends promhttp's error messages to the node's log.
type slogPrinter struct{ o *observer }

func (p slogPrinter) Println(v ...any) {
	p.o.log.Warn("serving metrics", "err", fmt.Sprint(v...))
}
