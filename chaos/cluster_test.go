package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/therealutkarshpriyadarshi/keyval/client"
)

// fakeMembers is a membership that changes when a call succeeds or, for a
// call that "times out after the change", without the call succeeding.
type fakeMembers struct {
	members client.Members
	calls   int
	lists   int
}

func (f *fakeMembers) list(context.Context) (client.Members, error) {
	f.lists++
	return f.members, nil
}

func members(ids ...uint64) client.Members {
	var ms client.Members
	for _, id := range ids {
		ms.Members = append(ms.Members, client.Member{ID: id})
	}
	return ms
}

func refusal(code codes.Code, msg string) error {
	return &client.StatusError{Op: "member promote", Endpoint: "x", Code: code, Message: msg}
}

func TestChangeMembersRetriesUntilPromoted(t *testing.T) {
	// A learner not caught up is refused twice, then promoted.
	var notes []string
	note := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }
	f := &fakeMembers{members: client.Members{Members: []client.Member{{ID: 1}, {ID: 3}, {ID: 100, Learner: true}}}}
	call := func(context.Context) error {
		f.calls++
		if f.calls <= 2 {
			return refusal(codes.FailedPrecondition, "learner is not caught up with the leader")
		}
		f.members.Members[2].Learner = false
		return nil
	}
	failed, err := changeMembers(context.Background(), "promote id 100", time.Minute, call, f.list,
		func(ms client.Members) bool { return isVoter(ms, 100) }, note)
	require.NoError(t, err)
	require.Equal(t, 2, failed)
	require.Len(t, notes, 1, "the same refusal twice is noted once")
	require.Contains(t, notes[0], "promote id 100: attempt 1 failed")
	require.Equal(t, 3, f.calls)
	require.True(t, isVoter(f.members, 100))
}

func TestChangeMembersSeesAChangeMadeDespiteAnError(t *testing.T) {
	// The removal was made, but the answer was lost: not repeated.
	f := &fakeMembers{members: members(1, 2, 3)}
	call := func(context.Context) error {
		f.calls++
		f.members = members(1, 3)
		return errors.New("member remove: context deadline exceeded")
	}
	failed, err := changeMembers(context.Background(), "remove id 2", time.Minute, call, f.list,
		func(ms client.Members) bool { return !hasMember(ms, 2) }, nil)
	require.NoError(t, err)
	require.Equal(t, 1, failed)
	require.Equal(t, 1, f.calls)
}

func TestChangeMembersGivesUp(t *testing.T) {
	// An invalid request is not retried.
	f := &fakeMembers{members: members(1, 2, 3)}
	call := func(context.Context) error { f.calls++; return refusal(codes.InvalidArgument, "bad peer address") }
	_, err := changeMembers(context.Background(), "add learner id 100", time.Minute, call, f.list,
		func(ms client.Members) bool { return hasMember(ms, 100) }, nil)
	require.ErrorContains(t, err, "bad peer address")
	require.Equal(t, 1, f.calls)

	// A refusal that lasts is retried until the deadline, then reported
	// with the last error.
	f = &fakeMembers{members: client.Members{Members: []client.Member{{ID: 1}, {ID: 100, Learner: true}}}}
	call = func(context.Context) error {
		f.calls++
		return refusal(codes.FailedPrecondition, "learner is not caught up with the leader")
	}
	failed, err := changeMembers(context.Background(), "promote id 100", 300*time.Millisecond, call, f.list,
		func(ms client.Members) bool { return isVoter(ms, 100) }, nil)
	require.ErrorContains(t, err, "promote id 100: not done within 300ms")
	require.ErrorContains(t, err, "not caught up")
	require.Greater(t, f.calls, 1)
	require.Equal(t, f.calls, failed)

	// Cancelled: stops at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = changeMembers(ctx, "promote id 100", time.Minute, call, f.list, func(client.Members) bool { return false }, nil)
	require.ErrorIs(t, err, context.Canceled)
}

func TestMembershipHelpers(t *testing.T) {
	ms := client.Members{Members: []client.Member{{ID: 1}, {ID: 3}, {ID: 100, Learner: true}}}
	require.True(t, hasMember(ms, 100))
	require.False(t, hasMember(ms, 2))
	require.False(t, isVoter(ms, 100))
	require.True(t, isVoter(ms, 3))
	require.Equal(t, 2, voters(ms))
	require.Equal(t, "1 3 100(learner)", describeMembers(ms))

	require.Equal(t, "n2", hostAndID(1, 2))
	require.Equal(t, "n2 (id 100)", hostAndID(1, 100))
}

// A replaced member restarts as its new id with --join (the addresses of
// the other hosts), never with --initial-cluster, whose ids include the
// removed one.
func TestCommandLineFollowsTheCurrentID(t *testing.T) {
	hosts := &loopbackHosts{client: []string{"c1", "c2", "c3"}, peer: []string{"p1", "p2", "p3"}}
	c := &cluster{hosts: hosts, initial: "1=p1,2=p2,3=p3", args: []string{"--snapshot-interval", "1000"}, nextID: firstReplacementID}
	for i := 0; i < 3; i++ {
		c.nodes = append(c.nodes, &node{idx: i, id: uint64(i + 1), dataDir: "d" + nodeName(i)})
	}
	require.Equal(t, "--id 2 --data-dir dn2 --listen-client c2 --listen-peer p2 --initial-cluster 1=p1,2=p2,3=p3 --snapshot-interval 1000",
		strings.Join(c.keyvaldArgs(1), " "))
	c.nodes[1].id, c.nodes[1].joined = 100, true
	require.Equal(t, "--id 100 --data-dir dn2 --listen-client c2 --listen-peer p2 --join c1,c3 --snapshot-interval 1000",
		strings.Join(c.keyvaldArgs(1), " "))
	require.Equal(t, []uint64{1, 100, 3}, c.IDs())
	require.Equal(t, "n2 (id 100)", c.name(1))
	require.Equal(t, "n3", c.name(2))
}

func TestRemovalSeenInTheLastStartOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n2.log")
	log := startMarker + "1 of n2 (raft id 2) at t=0.1s ===\n" +
		"keyvald: this node was removed from the cluster (configuration change at log index 7)\n" +
		startMarker + "2 of n2 (raft id 100, joining) at t=9.0s ===\n" +
		"level=INFO msg=started\n"
	require.NoError(t, os.WriteFile(path, []byte(log), 0o644))
	require.False(t, exitedAsRemoved(readLastStart(path)), "an earlier identity's removal does not count")

	require.NoError(t, os.WriteFile(path, []byte(log+"keyvald: this node was removed from the cluster (configuration change at log index 90)\n"), 0o644))
	require.True(t, exitedAsRemoved(readLastStart(path)))

	require.False(t, exitedAsRemoved(readLastStart(filepath.Join(t.TempDir(), "missing.log"))))
}
