package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// session is one exactly-once session. Its pb is attached to the write in
// flight; pb.Seq is the seq of the last write sent on it. A session is owned
// by one call at a time (the server remembers only the last seq's result, so
// two writes in flight on one session could not both be deduplicated).
type session struct {
	pb apipb.Session
}

// sessionPool holds sessions not in use. It grows to the peak number of
// concurrent writes; a session the server has forgotten is dropped rather
// than returned.
type sessionPool struct {
	mu   sync.Mutex
	free []*session
}

func (p *sessionPool) get() *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.free)
	if n == 0 {
		return nil
	}
	s := p.free[n-1]
	p.free[n-1] = nil
	p.free = p.free[:n-1]
	return s
}

func (p *sessionPool) put(s *session) {
	p.mu.Lock()
	p.free = append(p.free, s)
	p.mu.Unlock()
}

// idle reports how many sessions are in the pool.
func (p *sessionPool) idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// acquireSession takes a free session or registers a new one.
func (c *Client) acquireSession(ctx context.Context) (*session, error) {
	if s := c.sessions.get(); s != nil {
		return s, nil
	}
	return c.register(ctx)
}

var registerRPC = rpc[*apipb.RegisterRequest, *apipb.RegisterResponse]{
	op:   "register",
	call: apipb.KVClient.Register,
}

// register opens a new session. Register is retried like a read: a retry
// after a lost reply merely leaves an unused session for the server to
// expire. A refusal because the cluster's session cap is reached is
// retried too, with backoff, until ctx ends: sessions idle past the
// server's TTL become reclaimable as time passes.
func (c *Client) register(ctx context.Context) (*session, error) {
	var (
		resp    *apipb.RegisterResponse
		refusal error // the last refusal for the session cap
	)
	for round := 1; ; round++ {
		var err error
		resp, err = do(ctx, c, &registerRPC, &apipb.RegisterRequest{})
		if err == nil {
			break
		}
		if refusal != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("register: %w: still refused when the deadline came (%w): %v", ErrSessionLimit, ctx.Err(), refusal)
		}
		if !errors.Is(err, ErrSessionLimit) {
			return nil, err
		}
		refusal = err
		if perr := c.pause(ctx, round); perr != nil {
			return nil, fmt.Errorf("register: %w: still refused when the deadline came (%w): %v", ErrSessionLimit, perr, err)
		}
	}
	if resp.ClientId == 0 {
		// A zero id means "no deduplication": never write with it.
		return nil, fmt.Errorf("register: %s answered with client id 0", c.addrs[c.preferred.Load()])
	}
	return &session{pb: apipb.Session{ClientId: resp.ClientId}}, nil
}
