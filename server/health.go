package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"go.etcd.io/etcd/api/v3/version"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// etcd's HTTP probes, served where etcd's users point them: beside
// /metrics on --listen-metrics (kubeadm's liveness probe asks etcd's
// metrics port for /health?exclude=NOSPACE&serializable=true) and on the
// JSON gateway's port (--listen-client-http), which stands for etcd's
// client URL:
//
//	/health   {"health":"true","reason":""}, or 503 with "false" and why
//	/livez    200 "ok" while the process serves HTTP
//	/version  etcd's version JSON, with the etcd API version KeyVal speaks
func (s *Server) handleEtcdProbes(mux *http.ServeMux) {
	mux.HandleFunc("GET /health", s.serveHealth)
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, version.Versions{Server: etcdVersion, Cluster: etcdVersion})
	})
}

// etcdHealth is etcd's /health answer.
type etcdHealth struct {
	Health string `json:"health"`
	Reason string `json:"reason"`
}

// serveHealth answers as etcd's /health: unhealthy while an alarm is
// raised (unless ?exclude= names it), while no leader is known, or when
// a linearizable read cannot be made within --request-timeout (skipped
// with ?serializable=true).
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	h := s.health(r.Context(), q["exclude"], q.Get("serializable") == "true")
	code := http.StatusOK
	if h.Health != "true" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

func (s *Server) health(ctx context.Context, exclude []string, serializable bool) etcdHealth {
	for _, a := range s.store.Usage().Alarms {
		if name := etcdAlarmType(a.Type).String(); !slices.Contains(exclude, name) {
			return etcdHealth{Health: "false", Reason: "ALARM " + name}
		}
	}
	if s.leader.Load() == uint64(core.None) {
		return etcdHealth{Health: "false", Reason: "RAFT NO LEADER"}
	}
	if !serializable {
		// The read barrier a linearizable read waits for (etcd reads a
		// key): this member can still reach a leader that a quorum
		// follows. It bounds itself by --request-timeout.
		if err := s.readBarrier(ctx); err != nil {
			return etcdHealth{Health: "false", Reason: fmt.Sprintf("QGET ERROR: %v", err)}
		}
	}
	return etcdHealth{Health: "true"}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client hung up: nothing to do
}
