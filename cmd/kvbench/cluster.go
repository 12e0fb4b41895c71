package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/client"
)

// clusterState is what Status answers say about the cluster as a whole.
type clusterState struct {
	leader         uint64 // 0: no member claims to lead
	leaderEndpoint string
	term           uint64 // highest term any member reported
	reachable      int
	unreachable    []string // "endpoint: error"
}

// clusterStateOf summarises one round of Status answers. If members
// disagree about who leads (a deposed leader has not heard yet), the one
// with the highest term is believed.
func clusterStateOf(sts []client.NodeStatus) clusterState {
	var cs clusterState
	var leaderTerm uint64
	for _, st := range sts {
		if st.Err != nil {
			cs.unreachable = append(cs.unreachable, fmt.Sprintf("%s: %v", st.Endpoint, st.Err))
			continue
		}
		cs.reachable++
		cs.term = max(cs.term, st.Term)
		if strings.EqualFold(st.Role, "leader") && (cs.leader == 0 || st.Term > leaderTerm) {
			cs.leader, cs.leaderEndpoint, leaderTerm = st.ID, st.Endpoint, st.Term
		}
	}
	return cs
}

// waitForCluster asks every endpoint for its status until the cluster can
// take the run: a leader among the endpoints for --target leader, every
// endpoint answering for --target all. It gives up after --request-timeout
// (the cluster may be electing a leader when the run starts); each round
// of questions has --request-timeout to be answered.
func waitForCluster(ctx context.Context, probe *client.Client, cfg config) (clusterState, error) {
	deadline := time.Now().Add(cfg.requestTimeout)
	for {
		actx, cancel := context.WithTimeout(ctx, cfg.requestTimeout)
		cs := clusterStateOf(probe.StatusAll(actx))
		cancel()
		ready := cs.leader != 0
		if cfg.target == targetAll {
			ready = len(cs.unreachable) == 0
		}
		if ready {
			return cs, nil
		}
		if ctx.Err() != nil {
			return cs, ctx.Err()
		}
		if time.Now().After(deadline) {
			switch {
			case cs.reachable == 0:
				return cs, fmt.Errorf("%w: no member answered (is the cluster running? try make cluster-start): %s",
					errUnreachable, strings.Join(cs.unreachable, "; "))
			case cfg.target == targetAll:
				return cs, fmt.Errorf("%w: --target all needs every endpoint, and these did not answer: %s",
					errUnreachable, strings.Join(cs.unreachable, "; "))
			default:
				return cs, fmt.Errorf("%w: no member among --endpoints reports being the leader after %v",
					errUnreachable, cfg.requestTimeout)
			}
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return cs, ctx.Err()
		}
	}
}

// isUnreachable says whether err means the cluster could not be used at
// all.
func isUnreachable(err error) bool { return errors.Is(err, errUnreachable) }
