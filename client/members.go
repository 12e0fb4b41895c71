package client

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// Members is the cluster's membership as one member sees it.
type Members struct {
	Endpoint  string
	ClusterID string
	LeaderID  uint64
	// LastIndex is the leader's last log index (0 unless the answering
	// member is the leader): Match against it is a learner's lag.
	LastIndex uint64
	Members   []Member
	// Index is the log index of the change that produced this membership
	// (set by the change methods).
	Index uint64
}

// MemberList asks a member for the cluster's membership.
func (c *Client) MemberList(ctx context.Context) (Members, error) {
	var out Members
	err := c.cluster(ctx, "member list", func(ctx context.Context, cl apipb.ClusterClient, ep string) error {
		r, err := cl.MemberList(ctx, &apipb.MemberListRequest{})
		if err == nil {
			out = Members{Endpoint: ep, ClusterID: r.ClusterId, LeaderID: r.LeaderId, LastIndex: r.LastIndex, Members: toMembers(r.Members)}
		}
		return err
	})
	return out, err
}

// MemberAddLearner adds node id, reachable by its peers at peerAddr, as a
// learner. Start it afterwards with keyvald --join.
func (c *Client) MemberAddLearner(ctx context.Context, id uint64, peerAddr string) (Members, error) {
	return c.change(ctx, "member add-learner", func(ctx context.Context, cl apipb.ClusterClient) (*apipb.MemberChangeResponse, error) {
		return cl.MemberAddLearner(ctx, &apipb.MemberAddLearnerRequest{Id: id, PeerAddr: peerAddr})
	})
}

// MemberPromote makes learner id a voter; a lagging learner is refused.
func (c *Client) MemberPromote(ctx context.Context, id uint64) (Members, error) {
	return c.change(ctx, "member promote", func(ctx context.Context, cl apipb.ClusterClient) (*apipb.MemberChangeResponse, error) {
		return cl.MemberPromote(ctx, &apipb.MemberPromoteRequest{Id: id})
	})
}

// MemberRemove removes member id (a voter, a learner, or the leader).
func (c *Client) MemberRemove(ctx context.Context, id uint64) (Members, error) {
	return c.change(ctx, "member remove", func(ctx context.Context, cl apipb.ClusterClient) (*apipb.MemberChangeResponse, error) {
		return cl.MemberRemove(ctx, &apipb.MemberRemoveRequest{Id: id})
	})
}

func (c *Client) change(ctx context.Context, op string, call func(context.Context, apipb.ClusterClient) (*apipb.MemberChangeResponse, error)) (Members, error) {
	var out Members
	err := c.cluster(ctx, op, func(ctx context.Context, cl apipb.ClusterClient, ep string) error {
		r, err := call(ctx, cl)
		if err == nil {
			out = Members{Endpoint: ep, Index: r.Index, Members: toMembers(r.Members)}
		}
		return err
	})
	return out, err
}

func toMembers(ms []*apipb.Member) []Member {
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, Member{ID: m.Id, PeerAddress: m.PeerAddress, ClientAddress: m.ClientAddress,
			Match: m.Match, State: m.State, Learner: m.Learner})
	}
	return out
}

// cluster runs a membership call on one member after another until one
// answers. Only "unavailable" is retried (elsewhere, and after a pause):
// a change that timed out may have been made, and repeating it would be
// refused as redundant — the caller checks with MemberList instead.
func (c *Client) cluster(ctx context.Context, op string, f func(context.Context, apipb.ClusterClient, string) error) error {
	return c.onSomeMember(ctx, op, func(ctx context.Context, conn *grpc.ClientConn, ep string) error {
		return f(ctx, apipb.NewClusterClient(conn), ep)
	})
}

// onSomeMember runs f on one member after another until one answers; only
// "unavailable" moves on (after a pause once every member was tried).
func (c *Client) onSomeMember(ctx context.Context, op string, f func(context.Context, *grpc.ClientConn, string) error) error {
	if c.closed.Load() {
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	n := len(c.eps)
	start := int(c.preferred.Load())
	var lastErr error
	for round := 1; ; round++ {
		for k := range n {
			ep := c.eps[(start+k)%n]
			err := f(ctx, ep.conn, ep.addr)
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return contextError(ctx, op, lastErr, err)
			}
			st, _ := status.FromError(err)
			if st.Code() != codes.Unavailable {
				return &StatusError{Op: op, Endpoint: ep.addr, Code: st.Code(), Message: st.Message()}
			}
			lastErr = err
		}
		if err := c.pause(ctx, round); err != nil {
			return contextError(ctx, op, lastErr, err)
		}
	}
}
