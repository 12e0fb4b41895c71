// Package client is KeyVal's Go client: it talks to any members of a
// cluster over gRPC, retries transient failures without ever applying a write
// twice, and honours the caller's deadline.
//
// A write carries an exactly-once session (client id, sequence number). The
// server applies a given (client id, seq) at most once and answers a retry
// with the original result, so the client can retry a write whose reply was
// lost, on any member, as long as it reuses the same pair. A session allows
// one write in flight at a time; the Client keeps a pool of sessions so that
// many goroutines can write at once.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client/pipeline"
	"github.com/therealutkarshpriyadarshi/keyval/internal/flowwindow"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultDialTimeout    = 2 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultMaxRetries     = 10
	DefaultBackoffBase    = 25 * time.Millisecond
	DefaultBackoffMax     = 500 * time.Millisecond
	// DefaultMaxRecvMsgSize bounds one answer (a Range page of large values
	// can exceed gRPC's own 4 MiB default).
	DefaultMaxRecvMsgSize = 64 << 20
)

// Config says where the cluster is and how patient to be.
type Config struct {
	// Endpoints are client addresses (host:port) of any cluster members.
	// Any member can serve any request; the client starts with the first.
	// An http:// or https:// prefix is accepted; https:// requires TLS.
	Endpoints []string
	// DialTimeout bounds one connection attempt (TCP and TLS handshake).
	DialTimeout time.Duration
	// RequestTimeout is the deadline of a call whose context has none,
	// covering all its retries.
	RequestTimeout time.Duration
	// AttemptTimeout, if set, bounds one attempt; when it expires the call
	// moves on to the next endpoint (useful when a member hangs rather than
	// refusing connections). Zero: an attempt may use the whole deadline.
	AttemptTimeout time.Duration
	// TLS, if set, is used for every connection; nil means plaintext.
	TLS *tls.Config
	// MaxRetries is how many attempts of one call may fail because no
	// member could be reached (connection refused or not completed, or
	// AttemptTimeout expired) before the call gives up with ErrUnavailable.
	// Transient refusals from a member that did answer ("no leader known"
	// during an election, "leader changed") are retried until the deadline
	// whatever this says, since they pass within an election timeout.
	// Zero means DefaultMaxRetries; negative means no retries at all.
	MaxRetries int
	// BackoffBase and BackoffMax shape the pause after each full round of
	// endpoints has failed: it doubles from BackoffBase up to BackoffMax,
	// with jitter.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// MaxRecvMsgSize bounds one answer in bytes.
	MaxRecvMsgSize int
	// DialOptions are appended to the client's own gRPC dial options.
	DialOptions []grpc.DialOption
	// Username and Password log in to a cluster with auth enabled; the
	// token is renewed before it expires and after a member refuses it.
	// Without them a client certificate (TLS) can name the user by its
	// common name. Use TLS too: the password travels in the request.
	Username string
	Password string
	// Unary sends every Put, Get, Delete and CompareAndSwap as its own
	// gRPC call. By default they share one stream per endpoint (see
	// client/pipeline), which costs both ends far less CPU under load;
	// answers and errors are the same either way.
	Unary bool
}

// Client is safe for concurrent use by many goroutines; share one.
type Client struct {
	cfg        Config
	maxRetries int // negative: no retries
	dialOpts   []grpc.DialOption
	eps        []*endpoint
	addrs      []string
	// preferred indexes eps: where the next call starts. It follows the
	// endpoint that last answered, or the leader when that is known.
	preferred atomic.Int32
	sessions  sessionPool
	closed    atomic.Bool
	now       func() time.Time // time.Now; tests replace it
}

// endpoint is one configured member: one gRPC connection, created at New but
// dialled lazily by gRPC on first use and redialled after failures.
type endpoint struct {
	addr string
	conn *grpc.ClientConn
	kv   apipb.KVClient
	// pipe carries calls over one stream; nil with Config.Unary.
	pipe *pipeline.Conn
	// tokens logs in (Config.Username); nil without credentials.
	tokens *tokens
	// nodeID is the member's id as its answers' headers report it (0:
	// unknown), used to find the leader's endpoint.
	nodeID atomic.Uint64
	// suspect is set when an attempt here failed transiently and cleared
	// when one succeeds; a suspect endpoint is not preferred as leader.
	suspect atomic.Bool
}

// New checks cfg and prepares a connection per endpoint. It does no network
// I/O: connections are made on first use, so New succeeds even when no
// member is up.
func New(cfg Config) (*Client, error) {
	addrs, err := cleanEndpoints(cfg.Endpoints, cfg.TLS != nil)
	if err != nil {
		return nil, err
	}
	cfg.Endpoints = addrs
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffBase)
	}
	if cfg.MaxRecvMsgSize <= 0 {
		cfg.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	c := &Client{cfg: cfg, addrs: addrs, now: time.Now, maxRetries: cfg.MaxRetries}
	if cfg.MaxRetries == 0 {
		c.maxRetries = DefaultMaxRetries
	}

	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	c.dialOpts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// gRPC's own reconnect backoff grows to 120s by default, which would
		// keep a restarted member out of use for minutes; the client does
		// its own pacing, so keep gRPC's short.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  50 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: cfg.DialTimeout,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgSize)),
	}, flowwindow.DialOptions()...)
	c.dialOpts = append(c.dialOpts, cfg.DialOptions...)
	var login *tokens
	if cfg.Username != "" {
		login = &tokens{user: cfg.Username, password: cfg.Password, now: time.Now}
		c.dialOpts = append(c.dialOpts, login.dialOptions()...)
	}

	for _, addr := range addrs {
		conn, err := grpc.NewClient(addr, c.dialOpts...)
		if err != nil {
			c.closeConns()
			return nil, fmt.Errorf("client: endpoint %q: %w", addr, err)
		}
		ep := &endpoint{addr: addr, conn: conn, kv: apipb.NewKVClient(conn), tokens: login}
		if !cfg.Unary {
			ep.pipe = pipeline.NewConn(ep.kv)
		}
		c.eps = append(c.eps, ep)
	}
	return c, nil
}

// cleanEndpoints trims, drops empties and duplicates, and refuses an empty
// list. It takes off an http:// or https:// prefix (and a trailing slash),
// as etcd's tools accept them, refusing one that contradicts useTLS.
func cleanEndpoints(in []string, useTLS bool) ([]string, error) {
	var out []string
	seen := make(map[string]bool, len(in))
	for _, e := range in {
		e = strings.TrimSpace(e)
		if rest, ok := strings.CutPrefix(e, "https://"); ok {
			if !useTLS {
				return nil, fmt.Errorf("client: endpoint %q is https:// but no TLS configuration was given", e)
			}
			e = rest
		} else if rest, ok := strings.CutPrefix(e, "http://"); ok {
			if useTLS {
				return nil, fmt.Errorf("client: endpoint %q is http:// (plaintext) but a TLS configuration was given", e)
			}
			e = rest
		}
		e = strings.TrimSuffix(e, "/")
		if e == "" || seen[e] {
			continue
		}
		seen[e] = true
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, errors.New("client: no endpoints configured")
	}
	return out, nil
}

// Endpoints returns the configured endpoints, cleaned, in order.
func (c *Client) Endpoints() []string { return append([]string(nil), c.addrs...) }

// Close closes every connection. Calls in flight fail; later calls return
// ErrClosed.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.closeConns()
}

func (c *Client) closeConns() error {
	var errs []error
	for _, ep := range c.eps {
		if ep.pipe != nil {
			ep.pipe.Close()
		}
		if err := ep.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing %s: %w", ep.addr, err))
		}
	}
	return errors.Join(errs...)
}

// headered is every KV answer: each carries a Header.
type headered interface {
	GetHeader() *apipb.Header
}

// rpc describes one KV method for the retry loop. Values are package-level
// so a call allocates nothing to describe itself.
type rpc[Req any, Resp headered] struct {
	op   string
	call func(apipb.KVClient, context.Context, Req, ...grpc.CallOption) (Resp, error)
	// setSession attaches the exactly-once session; nil for reads.
	setSession func(Req, *apipb.Session)
	// toCall and fromReply carry the method over a pipeline; nil for
	// methods that are only unary. fromReply says false if the reply has
	// no result of the right kind.
	toCall    func(Req) *apipb.Call
	fromReply func(*apipb.Reply) (Resp, bool)
}

// invoke makes one attempt at ep: over its pipeline if it has one and the
// method can go there, otherwise as a unary call.
func invoke[Req any, Resp headered](ctx context.Context, ep *endpoint, m *rpc[Req, Resp], req Req) (resp Resp, reached bool, err error) {
	if ep.pipe != nil && m.toCall != nil {
		r, err := ep.pipe.Call(ctx, m.toCall(req))
		if ep.tokens != nil && staleCredentials(err) {
			// The stream was opened with a token that has lapsed, or
			// with none while auth was off: log in again on a new one.
			ep.tokens.forget()
			ep.pipe.Reset()
			r, err = ep.pipe.Call(ctx, m.toCall(req))
		}
		var refused *pipeline.ReplyError
		switch {
		case err == nil:
			if resp, ok := m.fromReply(r); ok {
				return resp, true, nil
			}
			return resp, true, status.Errorf(codes.Internal, "%s: the server's pipeline reply carries no %s result", ep.addr, m.op)
		case errors.As(err, &refused):
			return resp, true, err
		case !errors.Is(err, pipeline.ErrUnsupported):
			return resp, false, err
		}
		// An older server: unary from now on (the pipeline remembers).
	}
	// A transport stream (hence a peer) exists only if the call reached
	// the member; the connection's state cannot tell, as gRPC may report
	// it Ready only after a call on it has already finished.
	var p peer.Peer
	resp, err = m.call(ep.kv, ctx, req, grpc.Peer(&p))
	return resp, err == nil || p.Addr != nil, err
}

// maxReRegister bounds how often one call replaces an expired session.
const maxReRegister = 3

// MinSessionLifetime is how long the client assumes the server keeps a
// session after the session's last applied write. A write refused with
// "session expired" is re-sent on a new session only if no earlier attempt
// of it that may have been applied is older than this; otherwise the call
// fails with ErrOutcomeUnknown rather than risk applying the write twice.
const MinSessionLifetime = 30 * time.Second

// do runs one call: it takes a session for a write, tries endpoints in turn
// starting with the preferred one, retries transient failures with the same
// session and seq (pausing after each full round of endpoints), and stops at
// the first success, refusal, done context, or when MaxRetries attempts
// found no member to answer.
func do[Req any, Resp headered](ctx context.Context, c *Client, m *rpc[Req, Resp], req Req) (Resp, error) {
	var zero Resp
	if c.closed.Load() {
		return zero, fmt.Errorf("%s: %w", m.op, ErrClosed)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}

	// The session goes back to the pool whatever the outcome, unless the
	// server has forgotten it. After a failure this seq may or may not
	// have been applied, or may still be on its way; the session's next
	// write takes a higher seq, and the server refuses any seq older than
	// the last it applied, so this call can never be applied after that
	// write nor twice. Keeping the session keeps Register, itself a
	// replicated write, off the path of the calls that follow a failover.
	var sess *session
	forgotten := false // the server said it no longer knows sess
	if m.setSession != nil {
		s, err := c.acquireSession(ctx)
		if err != nil {
			return zero, fmt.Errorf("%s: opening a session: %w", m.op, err)
		}
		sess = s
		sess.pb.Seq++
		m.setSession(req, &sess.pb)
		defer func() {
			if !forgotten {
				c.sessions.put(sess)
			}
		}()
	}

	n := len(c.eps)
	idx := int(c.preferred.Load())
	var lastErr error
	unreachable := 0 // attempts that found no member to answer
	// answered[i]: endpoint i answered an attempt but could not serve it
	// (no leader known, leader changed); made on the first such answer.
	var answered []bool
	// When the first attempt of this write that may have been applied
	// failed (zero: none yet).
	var ambiguousSince time.Time
	reRegistered := 0
	for attempt := 0; ; {
		ep := c.eps[idx]
		actx, cancel := ctx, context.CancelFunc(nil)
		if c.cfg.AttemptTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, c.cfg.AttemptTimeout)
		}
		resp, reached, err := invoke(actx, ep, m, req)
		attemptTimedOut := false
		if cancel != nil {
			attemptTimedOut = actx.Err() != nil
			cancel()
		}
		if err == nil {
			c.noteSuccess(idx, resp.GetHeader())
			return resp, nil
		}
		if c.closed.Load() {
			return zero, fmt.Errorf("%s: %w", m.op, ErrClosed)
		}
		if ctx.Err() != nil {
			return zero, contextError(ctx, m.op, lastErr, err)
		}
		class, st := classify(err)
		switch class {
		case classFatal:
			return zero, &StatusError{Op: m.op, Endpoint: ep.addr, Code: st.Code(), Message: st.Message()}
		case classSessionExpired:
			forgotten = true
			// The refused attempt was not applied: the store refuses
			// unknown sessions before applying. An earlier attempt could
			// only have been applied if the server expired the session
			// after that write, and it keeps sessions MinSessionLifetime
			// past their last write; past that, re-sending on a new
			// session could apply the write twice.
			if !ambiguousSince.IsZero() && c.now().Sub(ambiguousSince) >= MinSessionLifetime {
				return zero, fmt.Errorf("%s: %w: session expired more than %v after an attempt that may have been applied (%s: %s)",
					m.op, ErrOutcomeUnknown, MinSessionLifetime, ep.addr, st.Message())
			}
			if reRegistered >= maxReRegister {
				return zero, &StatusError{Op: m.op, Endpoint: ep.addr, Code: st.Code(), Message: st.Message()}
			}
			// Start a fresh session, without counting this against the
			// retry budget.
			s, err := c.register(ctx)
			if err != nil {
				return zero, fmt.Errorf("%s: replacing an expired session: %w", m.op, err)
			}
			reRegistered++
			sess, forgotten = s, false
			sess.pb.Seq = 1
			m.setSession(req, &sess.pb)
			continue
		}

		// Keep the most telling error for the report: a timeout that
		// merely shadows the caller's deadline says less than what came
		// before it.
		if lastErr == nil || !isContextStatus(err) {
			lastErr = err
		}
		if sess != nil && ambiguousSince.IsZero() {
			ambiguousSince = c.now()
		}
		c.noteFailure(idx)
		// A member that answered with a transient refusal was reached;
		// one that could not be reached was not (or hung until
		// AttemptTimeout).
		if attemptTimedOut || !reached {
			unreachable++
		} else if !isContextStatus(err) {
			if answered == nil {
				answered = make([]bool, n)
			}
			answered[idx] = true
		}
		if c.maxRetries < 0 || unreachable > c.maxRetries {
			return zero, &UnavailableError{Op: m.op, Endpoints: c.addrs, Answered: c.pick(answered), Attempts: attempt + 1, Last: err}
		}
		attempt++
		idx = (idx + 1) % n
		if attempt%n == 0 {
			if err := c.pause(ctx, attempt/n); err != nil {
				return zero, contextError(ctx, m.op, lastErr, nil)
			}
		}
	}
}

// pick returns the addresses of the endpoints marked in marks, in order.
func (c *Client) pick(marks []bool) []string {
	var out []string
	for i, marked := range marks {
		if marked {
			out = append(out, c.addrs[i])
		}
	}
	return out
}

// contextError reports that the caller's context ended, with the last
// transient error seen (if any) to say why the call had not finished.
func contextError(ctx context.Context, op string, lastErr, attemptErr error) error {
	if lastErr == nil {
		lastErr = attemptErr
	}
	if lastErr == nil || errors.Is(lastErr, ctx.Err()) || isContextStatus(lastErr) {
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	return fmt.Errorf("%s: %w (last error: %v)", op, ctx.Err(), lastErr)
}

// isContextStatus says whether a gRPC error merely reflects the context
// ending (adding nothing to the context's own error).
func isContextStatus(err error) bool {
	code := status.Code(err)
	return code == codes.DeadlineExceeded || code == codes.Canceled
}

// pause sleeps before retry round `round` (1, 2, ...): BackoffBase doubled
// per round up to BackoffMax, randomly between half and all of that so many
// clients do not retry in step.
func (c *Client) pause(ctx context.Context, round int) error {
	d := c.cfg.BackoffMax
	if round < 30 {
		d = min(c.cfg.BackoffBase<<(round-1), c.cfg.BackoffMax)
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// noteSuccess remembers where to start the next call: the leader's endpoint
// if the answer named a leader whose endpoint is known and healthy,
// otherwise the endpoint that just answered.
func (c *Client) noteSuccess(idx int, h *apipb.Header) {
	ep := c.eps[idx]
	if ep.suspect.Load() {
		ep.suspect.Store(false)
	}
	pref := idx
	if h != nil {
		if h.NodeId != 0 && ep.nodeID.Load() != h.NodeId {
			ep.nodeID.Store(h.NodeId)
		}
		if h.LeaderId != 0 && h.LeaderId != h.NodeId {
			for i, other := range c.eps {
				if other.nodeID.Load() == h.LeaderId && !other.suspect.Load() {
					pref = i
					break
				}
			}
		}
	}
	if int(c.preferred.Load()) != pref {
		c.preferred.Store(int32(pref))
	}
}

// noteFailure moves the starting point off an endpoint that just failed, so
// that other calls do not keep trying it first.
func (c *Client) noteFailure(idx int) {
	c.eps[idx].suspect.Store(true)
	c.preferred.CompareAndSwap(int32(idx), int32((idx+1)%len(c.eps)))
}

// preferredEndpoint returns the address the next call will try first.
func (c *Client) preferredEndpoint() string { return c.eps[c.preferred.Load()].addr }
