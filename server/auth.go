package server

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/auth/credential"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// tokenKey is the metadata a client sends its token in.
const tokenKey = "token"

// records reads the applied auth records, each once per auth generation
// (kvstore.AuthView): every call is checked against them, twice
// (identify and require). Read from the store each time, under writes
// they committed the store's open write transaction for nearly every
// request (7 % of a busy leader's CPU, with auth off, for the
// configuration alone).
func (s *Server) records() *kvstore.AuthView { return s.store.AuthView() }

// authConfig is the auth configuration of the applied state. The result
// is shared: do not modify it.
func (s *Server) authConfig() (*kvpb.AuthConfig, error) { return s.records().Config() }

// caller is who a request comes from, as its credentials say, resolved
// once per call (once per stream for a stream) and kept in its context.
type caller struct {
	port     string              // "client" or "peer": where the request came in
	resolved bool                // the credentials were read (auth was enabled then)
	id       credential.Identity // User "" when no credentials came
	err      error               // why the credentials were refused
}

type callerKey struct{}

func callerOf(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

// identify resolves the caller's credentials: a token in the metadata,
// or on the client port a verified client certificate, whose common name
// is the user. Nothing is refused here: what a call needs is checked by
// the call (require), after the credentials' user is known.
//
// With auth off there is nothing to read them against; the call's check
// reads them then if auth was enabled meanwhile, so a call that arrives
// while a member applies the switch is judged by who it is.
func (s *Server) identify(ctx context.Context, port string) context.Context {
	c := caller{port: port}
	if cfg, err := s.authConfig(); err == nil && cfg.Enabled {
		c = resolve(ctx, port, cfg)
	}
	return context.WithValue(ctx, callerKey{}, c)
}

func resolve(ctx context.Context, port string, cfg *kvpb.AuthConfig) caller {
	c := caller{port: port, resolved: true}
	if tok := metadata.ValueFromIncomingContext(ctx, tokenKey); len(tok) > 0 {
		// "Bearer <token>" is taken as the token, as etcd takes it (an
		// HTTP client's Authorization header comes here through the
		// gateway).
		c.id, c.err = credential.VerifyToken(cfg.TokenKey, strings.TrimPrefix(tok[0], "Bearer "), time.Now())
	} else if port == "client" {
		c.id.User = certificateUser(ctx)
	}
	return c
}

func hasToken(ctx context.Context) bool {
	return len(metadata.ValueFromIncomingContext(ctx, tokenKey)) > 0
}

// certificateUser is the common name of the client's verified certificate.
func certificateUser(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return ""
	}
	return info.State.VerifiedChains[0][0].Subject.CommonName
}

// authInterceptors attach the caller to every call and stream on a port.
func (s *Server) authInterceptors(port string) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			return next(s.identify(ctx, port), req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
			return next(srv, identifiedStream{ss, s.identify(ss.Context(), port)})
		}),
	}
}

type identifiedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s identifiedStream) Context() context.Context { return s.ctx }

// need is what a call must be allowed, checked by require.
type need struct {
	perm     kvpb.AuthPermission_Type // a permission on [key, end)
	key, end []byte
	root     bool // the root role
	anyUser  bool // only that the caller is a user
}

func needRead(key, end []byte) need {
	return need{perm: kvpb.AuthPermission_TYPE_READ, key: key, end: end}
}
func needWrite(key []byte) need     { return need{perm: kvpb.AuthPermission_TYPE_WRITE, key: key} }
func needReadWrite(key []byte) need { return need{perm: kvpb.AuthPermission_TYPE_READWRITE, key: key} }

var (
	needRoot = need{root: true}
	needUser = need{anyUser: true}
)

// require checks, when auth is enabled, that the caller may do n against
// the applied state (so a read checks after its barrier, and sees every
// revocation committed before it). It returns the user to propose a
// command as ("" with auth off). The state machine checks writes again at
// apply; this check spares the log a command that would be refused.
//
// A refusal is only given against a state as new as the call: this
// member's applied records may lag a change the caller has already seen
// acknowledged elsewhere (auth disabled, a role granted, a password set),
// so a call they refuse is judged again after a read barrier. Only a
// refused call pays for the barrier.
func (s *Server) require(ctx context.Context, n need) (string, error) {
	user, caughtUp, err := s.checkLocal(ctx, n)
	if err == nil || caughtUp || !isRefusal(err) {
		return user, err
	}
	if err := s.readBarrier(ctx); err != nil {
		return "", err
	}
	return s.check(ctx, n, true)
}

// checkLocal is check against this member's records as they stand, unless
// they cannot be the caller's: auth looks off here but the caller logged
// in, so auth was on somewhere and this member may not have applied the
// switch yet. Then it catches up first (a read barrier; caughtUp says so),
// rather than let the call through unchecked: a write proposed without its
// user would be refused at apply, and that refusal remembered.
func (s *Server) checkLocal(ctx context.Context, n need) (user string, caughtUp bool, err error) {
	if cfg, err := s.authConfig(); err == nil && !cfg.Enabled && hasToken(ctx) {
		if err := s.readBarrier(ctx); err != nil {
			return "", false, err
		}
		caughtUp = true
	}
	user, err = s.check(ctx, n, caughtUp)
	return user, caughtUp, err
}

// isRefusal tells an auth refusal from a failure to check.
func isRefusal(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// check judges the call against the applied records, without waiting for
// anything; fresh says they are at least as new as the call (a read
// barrier was passed since it began), so the caller's credentials are
// read again against them.
func (s *Server) check(ctx context.Context, n need, fresh bool) (string, error) {
	r := s.records()
	cfg, err := r.Config() // the configuration of the same view
	if err != nil {
		return "", status.Errorf(codes.Internal, "read auth records: %v", err)
	}
	if !cfg.Enabled {
		return "", nil
	}
	c := callerOf(ctx)
	if !c.resolved || fresh {
		c = resolve(ctx, c.port, cfg)
	}
	if c.err != nil {
		return "", status.Errorf(codes.Unauthenticated, "%v", c.err)
	}
	if c.id.User != "" {
		if err := credential.CheckIdentity(r, c.id); err != nil {
			return "", authStatus(err, codes.Unauthenticated)
		}
	}
	switch {
	case n.root:
		err = auth.RequireRoot(r, c.id.User)
	case n.anyUser:
		err = auth.RequireUser(r, c.id.User)
	default:
		err = auth.Allowed(r, c.id.User, n.perm, n.key, n.end)
	}
	if err != nil {
		return "", authStatus(err, codes.PermissionDenied)
	}
	return c.id.User, nil
}

// requireFresh is require after a read barrier, for calls that are not
// checked again at apply (membership changes, backups): a revocation
// acknowledged anywhere before the call is seen.
func (s *Server) requireFresh(ctx context.Context, n need) error {
	if err := s.readBarrier(ctx); err != nil {
		return err
	}
	_, err := s.check(ctx, n, true)
	return err
}

// authStatus turns an auth refusal into a status with code, and a storage
// failure into Internal.
func authStatus(err error, code codes.Code) error {
	switch {
	case errors.Is(err, auth.ErrDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, auth.ErrRefused):
		return status.Error(code, err.Error())
	}
	return status.Errorf(codes.Internal, "read auth records: %v", err)
}

// forwardCredentials lets the leader know whom a forwarded call is for: a
// short-lived token for the caller, which any member can verify, or, when
// this member cannot vouch for the caller (auth looks off here because it
// has not applied the switch yet, or the token was refused here), the
// caller's own token, for the leader to judge.
func (s *Server) forwardCredentials(ctx context.Context) context.Context {
	cfg, err := s.authConfig()
	c := callerOf(ctx)
	if err == nil && cfg.Enabled {
		if !c.resolved {
			c = resolve(ctx, c.port, cfg)
		}
		if c.id.User != "" && c.err == nil {
			tok := credential.IssueToken(cfg.TokenKey, c.id.User, c.id.Generation, time.Now().Add(s.cfg.RequestTimeout+time.Minute))
			return metadata.AppendToOutgoingContext(ctx, tokenKey, tok)
		}
	}
	if tok := metadata.ValueFromIncomingContext(ctx, tokenKey); len(tok) > 0 {
		return metadata.AppendToOutgoingContext(ctx, tokenKey, tok[0])
	}
	return ctx
}
