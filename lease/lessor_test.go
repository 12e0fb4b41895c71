package lease

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/internal/detguard"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// The lessor is driven by the simulator: no clock, threads or map order.
func TestDeterministic(t *testing.T) {
	violations, err := detguard.Check(".", detguard.Sim)
	require.NoError(t, err)
	require.Empty(t, violations)
}

var t0 = time.Unix(1000, 0)

// leading is a lessor leading term at t0 that has read leases.
func leading(term uint64, leases ...kvstore.LeaseInfo) *Lessor {
	l := &Lessor{}
	if l.Lead(term, true, t0) {
		l.Sync(leases, t0)
	}
	return l
}

// A leadership that is lost and won again starts every lease afresh: the
// deadlines of the earlier one, renewed or not since by other leaders,
// are never reused.
func TestNewLeadershipForgetsOldDeadlines(t *testing.T) {
	l := leading(2, kvstore.LeaseInfo{ID: 7, TTL: 10})
	require.Empty(t, l.Due(t0.Add(9*time.Second)))
	l.Lead(3, false, t0.Add(9*time.Second)) // another member leads term 3 and renews 7
	at := t0.Add(30 * time.Second)
	require.True(t, l.Lead(4, true, at), "a new leadership reads the lease list first")
	l.Sync([]kvstore.LeaseInfo{{ID: 7, TTL: 10}}, at)
	require.Empty(t, l.Due(at.Add(10*time.Second-time.Millisecond)), "expired before a full TTL from the new leadership")
	require.Equal(t, []int64{7}, l.Due(at.Add(10*time.Second+time.Millisecond)))
}

// Renewing extends to from + TTL, never shortens, and an expired lease is
// not renewed.
func TestRenew(t *testing.T) {
	l := leading(2, kvstore.LeaseInfo{ID: 7, TTL: 10})
	require.True(t, l.Renew(7, 10, t0.Add(5*time.Second), t0.Add(6*time.Second)))
	require.Equal(t, 9*time.Second, l.Remaining(7, 10, t0.Add(6*time.Second)))
	require.True(t, l.Renew(7, 10, t0.Add(time.Second), t0.Add(6*time.Second)))
	require.Equal(t, 9*time.Second, l.Remaining(7, 10, t0.Add(6*time.Second)), "an older keep-alive does not shorten it")
	require.False(t, l.Renew(7, 10, t0.Add(16*time.Second), t0.Add(16*time.Second)), "expired at 15 s")
	var idle Lessor
	require.False(t, idle.Renew(7, 10, t0, t0), "a lessor that does not lead renews nothing")
}

// Due returns expired leases in id order, at most MaxRevokesInFlight under
// way; a lost revoke comes back, a completed one is forgotten, and one
// from an earlier leadership changes nothing.
func TestDueAndRevoked(t *testing.T) {
	var infos []kvstore.LeaseInfo
	for id := int64(MaxRevokesInFlight + 5); id >= 1; id-- {
		infos = append(infos, kvstore.LeaseInfo{ID: id, TTL: 1})
	}
	l := leading(2, infos...)
	late := t0.Add(2 * time.Second)
	first := l.Due(late)
	require.Len(t, first, MaxRevokesInFlight)
	require.Equal(t, int64(1), first[0])
	require.Empty(t, l.Due(late))
	l.Revoked(1, 2, false)
	l.Revoked(2, 2, true)
	l.Revoked(3, 1, true) // an old term's answer
	require.Equal(t, []int64{1, MaxRevokesInFlight + 1}, l.Due(late))
}
