package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
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
//
// Any other method than GET gets 405, as from etcd.
func (s *Server) handleEtcdProbes(mux *http.ServeMux) {
	mux.HandleFunc("/health", getOnly(s.serveHealth))
	mux.HandleFunc("/livez", getOnly(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	}))
	mux.HandleFunc("/version", getOnly(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, version.Versions{Server: etcdVersion, Cluster: etcdVersion})
	}))
}

// getOnly answers any other method than GET with 405, as etcd's probes
// do (a HEAD included).
func getOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		h(w, r)
	}
}

// etcdHealth is etcd's /health answer.
type etcdHealth struct {
	Health string `json:"health"`
	Reason string `json:"reason"`
}

// serveHealth answers as etcd's /health: unhealthy while an alarm is
// raised (unless ?exclude= names it), or when a read fails: a
// linearizable one (no leader known, or none reached within
// --request-timeout), or with ?serializable=true one from this member's
// own store.
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
	// etcd reads one key, linearizably unless the probe is serializable:
	// the read barrier (bounded by --request-timeout) says a leader that a
	// quorum follows still answers this member, the read that its store
	// answers. A serializable probe asks only the latter: a liveness probe
	// must not fail, and restart the member, while the quorum is lost.
	if !serializable {
		if s.leader.Load() == uint64(core.None) {
			return etcdHealth{Health: "false", Reason: "RAFT NO LEADER"}
		}
		if err := s.readBarrier(ctx); err != nil {
			return etcdHealth{Health: "false", Reason: fmt.Sprintf("RANGE ERROR:%v", err)}
		}
	}
	every := []byte{0}
	if _, err := s.store.EtcdRange(&pb.RangeRequest{Key: every, RangeEnd: every, KeysOnly: true, Limit: 1}, 0); err != nil {
		return etcdHealth{Health: "false", Reason: fmt.Sprintf("RANGE ERROR:%v", err)}
	}
	return etcdHealth{Health: "true"}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client hung up: nothing to do
}
