package server

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/lease"
)

// lessorUnderTest is a lessor on a store of its own, with the leadership
// set by the test and a clock the test passes in.
type lessorUnderTest struct {
	s    *Server
	next uint64 // the next log index to apply
}

func newLessorUnderTest(t *testing.T) *lessorUnderTest {
	store, err := kvstore.OpenBolt(filepath.Join(t.TempDir(), "state.db"), kvstore.Options{NoSync: true})
	require.NoError(t, err)
	t.Cleanup(func() { store.Close() })
	s := &Server{cfg: Config{ID: 1}, store: store, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s.lessor = newLessor(s)
	return &lessorUnderTest{s: s, next: 1}
}

func (l *lessorUnderTest) grant(t *testing.T, id, ttl int64) {
	res, err := l.s.store.Apply([]kvstore.Entry{{Index: l.next, Data: kvstore.EncodeLeaseGrant(id, ttl, "")}})
	require.NoError(t, err)
	require.Equal(t, kvstore.StatusOK, res[0].Status)
	l.next++
}

func (l *lessorUnderTest) lead(leader, term uint64) {
	l.s.leader.Store(leader)
	l.s.term.Store(term)
}

// TestLeaseLessorNewLeadershipRestartsTTL: every lease gets a full TTL from
// the moment a leadership is first seen, and again from a later one.
func TestLeaseLessorNewLeadershipRestartsTTL(t *testing.T) {
	l := newLessorUnderTest(t)
	l.grant(t, 7, 10)
	l.lead(1, 2)
	t0 := time.Now()
	ids, _ := l.s.lessor.due(t0)
	require.Empty(t, ids)
	ids, _ = l.s.lessor.due(t0.Add(10*time.Second - time.Millisecond))
	require.Empty(t, ids, "expired before a full TTL")
	t1 := t0.Add(10*time.Second + time.Millisecond)
	ids, term := l.s.lessor.due(t1)
	require.Equal(t, []int64{7}, ids)
	require.Equal(t, uint64(2), term)

	l.lead(1, 3) // a new leadership: the revoke under way belongs to the old one
	ids, _ = l.s.lessor.due(t1)
	require.Empty(t, ids)
	ids, _ = l.s.lessor.due(t1.Add(10*time.Second - time.Millisecond))
	require.Empty(t, ids, "a new leadership expired a lease before a full TTL from its start")
	ids, _ = l.s.lessor.due(t1.Add(10*time.Second + time.Millisecond))
	require.Equal(t, []int64{7}, ids)
}

// TestLeaseLessorRetriesLostRevoke: a revoke in flight is not proposed
// twice; one that was lost is proposed again; one that succeeded is
// forgotten.
func TestLeaseLessorRetriesLostRevoke(t *testing.T) {
	l := newLessorUnderTest(t)
	l.grant(t, 7, 1)
	l.lead(1, 2)
	t0 := time.Now()
	_, _ = l.s.lessor.due(t0)
	late := t0.Add(2 * time.Second)
	ids, term := l.s.lessor.due(late)
	require.Equal(t, []int64{7}, ids)
	ids, _ = l.s.lessor.due(late)
	require.Empty(t, ids, "a revoke in flight is proposed once")
	l.s.lessor.revoked(7, term, false)
	ids, _ = l.s.lessor.due(late)
	require.Equal(t, []int64{7}, ids, "a lost revoke is proposed again")
	l.s.lessor.revoked(7, term, true)
	ids, _ = l.s.lessor.due(late)
	require.Empty(t, ids)
}

// TestLeaseLessorForgetsWhenNotLeading: a member that does not lead
// expires nothing and keeps no deadline.
func TestLeaseLessorForgetsWhenNotLeading(t *testing.T) {
	l := newLessorUnderTest(t)
	l.grant(t, 7, 1)
	l.lead(1, 2)
	t0 := time.Now()
	_, _ = l.s.lessor.due(t0)
	l.lead(2, 3)
	ids, _ := l.s.lessor.due(t0.Add(time.Hour))
	require.Empty(t, ids)
	require.Zero(t, l.s.lessor.l.Term(), "no leadership, so no deadline kept")
	l.lead(0, 3)
	ids, _ = l.s.lessor.due(t0.Add(time.Hour))
	require.Empty(t, ids, "no leader known")
}

// TestLeaseLessorBoundsRevokes: at most lease.MaxRevokesInFlight revokes are
// proposed at once, the rest at later checks.
func TestLeaseLessorBoundsRevokes(t *testing.T) {
	l := newLessorUnderTest(t)
	const n = lease.MaxRevokesInFlight + 20
	for id := int64(1); id <= n; id++ {
		l.grant(t, id, 1)
	}
	l.lead(1, 2)
	t0 := time.Now()
	_, _ = l.s.lessor.due(t0)
	late := t0.Add(2 * time.Second)
	first, term := l.s.lessor.due(late)
	require.Len(t, first, lease.MaxRevokesInFlight)
	more, _ := l.s.lessor.due(late)
	require.Empty(t, more, "none until revokes finish")
	for _, id := range first[:20] {
		l.s.lessor.revoked(id, term, true)
	}
	more, _ = l.s.lessor.due(late)
	require.Len(t, more, 20)
	require.NotContains(t, more, first[0])
}
