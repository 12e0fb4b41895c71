package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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
//	/livez    etcd's liveness checks (serializable_read)
//	/version  etcd's version JSON, with the etcd API version KeyVal speaks
//
// Any other method than GET gets 405, as from etcd.
func (s *Server) handleEtcdProbes(mux *http.ServeMux) {
	mux.HandleFunc("/health", getOnly(s.serveHealth))
	s.handleEtcdChecks(mux, "/livez", []etcdCheck{{"serializable_read", s.serializableRead}})
	mux.HandleFunc("/version", getOnly(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, version.Versions{Server: etcdVersion, Cluster: etcdVersion})
	}))
}

// handleEtcdReadyz serves etcd's /readyz, where etcd's users look for it
// (the client port and the JSON gateway's; the metrics address keeps
// KeyVal's own readiness, observer.serveReady): no CORRUPT alarm (KeyVal
// raises none), a read of this member's store, a linearizable read, and
// the member not a learner.
func (s *Server) handleEtcdReadyz(mux *http.ServeMux) {
	s.handleEtcdChecks(mux, "/readyz", []etcdCheck{
		{"data_corruption", func(context.Context) error { return nil }},
		{"serializable_read", s.serializableRead},
		{"linearizable_read", s.linearizableRead},
		{"non_learner", s.nonLearner},
	})
}

// etcdCheck is one of the named checks of etcd's /livez and /readyz.
type etcdCheck struct {
	name  string
	check func(context.Context) error
}

// handleEtcdChecks serves root as etcd serves /livez and /readyz: every
// check but those ?exclude= names, 200 "ok" when all pass (with
// ?verbose, each check's line first), else 503 with each check's line
// ("[+]name ok", "[-]name failed: why"); and root/name, one check alone.
func (s *Server) handleEtcdChecks(mux *http.ServeMux, root string, checks []etcdCheck) {
	mux.HandleFunc(root, getOnly(func(w http.ResponseWriter, r *http.Request) {
		excluded := r.URL.Query()["exclude"]
		run := make([]etcdCheck, 0, len(checks))
		for _, c := range checks {
			if !slices.Contains(excluded, c.name) {
				run = append(run, c)
			}
		}
		answerChecks(w, r, run)
	}))
	for _, c := range checks {
		mux.HandleFunc(root+"/"+c.name, getOnly(func(w http.ResponseWriter, r *http.Request) {
			answerChecks(w, r, []etcdCheck{c})
		}))
	}
}

func answerChecks(w http.ResponseWriter, r *http.Request, checks []etcdCheck) {
	var lines strings.Builder
	failed := false
	for _, c := range checks {
		if err := c.check(r.Context()); err != nil {
			failed = true
			fmt.Fprintf(&lines, "[-]%s failed: %v\n", c.name, err)
		} else {
			fmt.Fprintf(&lines, "[+]%s ok\n", c.name)
		}
	}
	if failed {
		http.Error(w, lines.String(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if _, verbose := r.URL.Query()["verbose"]; verbose {
		fmt.Fprint(w, lines.String())
	}
	fmt.Fprint(w, "ok\n")
}

// serializableRead reads one key of this member's own store, as etcd's
// serializable_read check does.
func (s *Server) serializableRead(context.Context) error {
	every := []byte{0}
	_, err := s.store.EtcdRange(&pb.RangeRequest{Key: every, RangeEnd: every, KeysOnly: true, Limit: 1}, 0)
	return err
}

// linearizableRead is serializableRead after a read barrier (bounded by
// --request-timeout), as etcd's linearizable_read check reads.
func (s *Server) linearizableRead(ctx context.Context) error {
	if s.leader.Load() == uint64(core.None) {
		return rpctypes.ErrNoLeader
	}
	if err := s.readBarrier(ctx); err != nil {
		return err
	}
	return s.serializableRead(ctx)
}

// nonLearner fails while this member is a learner.
func (s *Server) nonLearner(ctx context.Context) error {
	st, err := s.coreStatus(ctx)
	if err != nil {
		return err
	}
	if slices.Contains(st.Conf.Learners, s.cfg.ID) {
		return errors.New("this member is a learner")
	}
	return nil
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
	read := s.linearizableRead
	if serializable {
		read = s.serializableRead
	}
	switch err := read(ctx); {
	case errors.Is(err, rpctypes.ErrNoLeader):
		return etcdHealth{Health: "false", Reason: "RAFT NO LEADER"}
	case err != nil:
		return etcdHealth{Health: "false", Reason: fmt.Sprintf("RANGE ERROR:%v", err)}
	}
	return etcdHealth{Health: "true"}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client hung up: nothing to do
}
