package server

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/net/transport"
)

// ignoreAll is the handler of an attacker's transport: it only sends.
type ignoreAll struct{}

func (ignoreAll) Step(core.Message)                             {}
func (ignoreAll) ReceiveSnapshot(core.Message, io.Reader) error { return io.EOF }
func (ignoreAll) ReportUnreachable(core.NodeID)                 {}
func (ignoreAll) ReportSnapshot(core.NodeID, bool)              {}
func (ignoreAll) ReportGone(core.NodeID)                        {}

// attack plays node claimed of cluster (showing cert, if any, over TLS
// trusting ca) and sends target an append of a higher term than the
// cluster's, which would move the target's term and commit its entry if
// it were stepped.
func attack(t *testing.T, cluster uint64, claimed, target core.NodeID, addr string, files *TLSFiles, st *apipb.StatusResponse) {
	t.Helper()
	cfg := transport.Config{ID: claimed, ClusterID: cluster, Peers: map[core.NodeID]string{target: addr},
		Logger: slog.New(slog.DiscardHandler)}
	if files != nil {
		var err error
		cfg.ClientTLS, err = client.TLSConfig(files.CAFile, files.CertFile, files.KeyFile)
		require.NoError(t, err)
	}
	tr, err := transport.New(cfg, ignoreAll{})
	require.NoError(t, err)
	t.Cleanup(func() { tr.Close() })
	tr.Send([]core.Message{{Type: core.MsgApp, From: claimed, To: target, Term: st.Term + 1000,
		Index: st.LastIndex, LogTerm: st.Term, Commit: st.LastIndex + 1,
		Entries: []core.Entry{{Term: st.Term + 1000, Index: st.LastIndex + 1, Data: []byte("forged")}}}})
}

// refused is the node's keyval_peer_refused_total for reason.
func refused(s *Server, reason string) float64 {
	var m dto.Metric
	if err := s.obs.m.peerRefused.WithLabelValues(reason).Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// waitRefused polls until s counted one more refusal for reason than
// before.
func waitRefused(t *testing.T, s *Server, reason string, before float64) {
	t.Helper()
	eventually(t, func() error {
		if got := refused(s, reason); got <= before {
			return fmt.Errorf("keyval_peer_refused_total{reason=%q} = %v, want > %v", reason, got, before)
		}
		return nil
	})
}

// requireUnmoved fails if the target's term, last index or commit moved
// from st (nothing is written meanwhile, so only a forged entry could).
func requireUnmoved(t *testing.T, c *testCluster, target core.NodeID, st *apipb.StatusResponse, what string) {
	t.Helper()
	now, err := c.conns[target].Status(ctx(t), &apipb.StatusRequest{})
	require.NoError(t, err)
	require.Equal(t, st.Term, now.Term, "%s moved the term", what)
	require.Equal(t, st.LastIndex, now.LastIndex, "%s appended to the log", what)
	require.Equal(t, st.Commit, now.Commit, "%s moved the commit index", what)
}

// TestImpersonatedPeerChangesNothing: against a cluster with peer mTLS and
// member certificates, a peer without a certificate, one with a valid
// certificate of member 3 claiming to be the leader, and one with a valid
// certificate of a non-member id each send a forged append of a far higher
// term to a follower: the follower's term, log and commit stay as they
// were, and each attempt is counted by its reason. The cluster then still
// replicates and fails over.
func TestImpersonatedPeerChangesNothing(t *testing.T) {
	p := newPKI(t)
	c := startClusterWith(t, 3, p.secure(t), tlsDial(t, p.ca.File, p.appCert, p.appKey))
	lead := c.leader()
	eventually(t, func() error {
		_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("k"), Value: []byte("v")})
		return err
	})
	target := lead%3 + 1
	other := 6 - lead - target // the third member
	leadSt, err := c.conns[lead].Status(ctx(t), &apipb.StatusRequest{})
	require.NoError(t, err)
	// The follower has the leader's term and has applied everything the
	// leader had: a follower still at term 0 (one the leader has not
	// reached yet, as on a slow machine) would move on its own.
	eventually(t, func() error {
		st, err := c.conns[target].Status(ctx(t), &apipb.StatusRequest{})
		if err == nil && (st.Term != leadSt.Term || st.Applied < leadSt.LastIndex) {
			err = fmt.Errorf("term %d applied %d, want term %d applied %d", st.Term, st.Applied, leadSt.Term, leadSt.LastIndex)
		}
		return err
	})
	st, err := c.conns[target].Status(ctx(t), &apipb.StatusRequest{})
	require.NoError(t, err)
	s, addr := c.servers[target], c.members[target]

	noCert := TLSFiles{CAFile: p.ca.File}
	before := refused(s, transport.RefusedHandshake)
	attack(t, p.cluster, lead, target, addr, &noCert, st)
	waitRefused(t, s, transport.RefusedHandshake, before)
	requireUnmoved(t, c, target, st, "a peer without a certificate")

	otherCert := p.member(t, p.cluster, other)
	before = refused(s, transport.RefusedImpersonation)
	attack(t, p.cluster, lead, target, addr, &otherCert, st)
	waitRefused(t, s, transport.RefusedImpersonation, before)
	requireUnmoved(t, c, target, st, fmt.Sprintf("node %d's certificate claiming node %d", other, lead))

	strangerCert := p.member(t, p.cluster, 9)
	before = refused(s, refusedNotMember)
	attack(t, p.cluster, 9, target, addr, &strangerCert, st)
	waitRefused(t, s, refusedNotMember, before)
	requireUnmoved(t, c, target, st, "a non-member's certificate")

	c.stop(lead)
	delete(c.conns, lead)
	next := c.leader()
	require.NotEqual(t, lead, next)
	eventually(t, func() error {
		_, err := c.conns[next].Put(ctx(t), &apipb.PutRequest{Key: []byte("after-failover"), Value: []byte("v")})
		return err
	})
	eventually(t, func() error {
		for id, conn := range c.conns {
			g, err := conn.Get(ctx(t), &apipb.GetRequest{Key: []byte("after-failover"), Serializable: true})
			if err != nil || !g.Found {
				return fmt.Errorf("node %d: found %v, %v", id, g.GetFound(), err)
			}
		}
		return nil
	})
}

// TestRemovedMemberNotStepped: once a follower is removed, a vote request
// of a far higher term sent in its name (plaintext, so anyone could) to
// either remaining member is counted as from a removed member and moves no
// term.
func TestRemovedMemberNotStepped(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	lead := c.leader()
	gone := lead%3 + 1
	c.stop(gone)
	delete(c.conns, gone)
	eventually(t, func() error {
		_, err := c.admin(lead).MemberRemove(ctx(t), &apipb.MemberRemoveRequest{Id: uint64(gone)})
		return err
	})
	for id, s := range c.servers {
		eventually(t, func() error { // the removal is applied here
			if !s.book.isRemoved(gone) {
				return fmt.Errorf("node %d has not applied the removal", id)
			}
			return nil
		})
		st, err := c.conns[id].Status(ctx(t), &apipb.StatusRequest{})
		require.NoError(t, err)
		before := refused(s, refusedRemoved)
		tr, err := transport.New(transport.Config{ID: gone, ClusterID: s.clusterID, Peers: map[core.NodeID]string{id: c.members[id]},
			Logger: slog.New(slog.DiscardHandler)}, ignoreAll{})
		require.NoError(t, err)
		tr.Send([]core.Message{{Type: core.MsgVote, From: gone, To: id, Term: st.Term + 1000, Index: st.LastIndex + 100, LogTerm: st.Term + 999}})
		waitRefused(t, s, refusedRemoved, before)
		tr.Close()
		now, err := c.conns[id].Status(ctx(t), &apipb.StatusRequest{})
		require.NoError(t, err)
		require.Equal(t, st.Term, now.Term, "node %d stepped a removed member's vote request", id)
	}
}
