package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/auth/credential"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// authService is the access control API (api/apipb/auth.proto). Changes
// go through the log as kvpb.AuthChange commands; reads wait for a read
// barrier, so a change acknowledged anywhere is seen.
type authService struct {
	apipb.UnimplementedAuthServer
	s *Server
	// logins bounds the bcrypt comparisons running at once: each costs
	// tens of milliseconds of CPU, and a flood of them must not starve
	// the member.
	logins chan struct{}
}

func newAuthService(s *Server) *authService {
	go credential.Prepare(s.cfg.BcryptCost)
	return &authService{s: s, logins: make(chan struct{}, 2)}
}

func (a *authService) header(rev uint64) *apipb.Header {
	return &apipb.Header{Revision: rev, NodeId: uint64(a.s.cfg.ID), LeaderId: a.s.leader.Load()}
}

func (a *authService) Authenticate(ctx context.Context, req *apipb.AuthenticateRequest) (*apipb.AuthenticateResponse, error) {
	if err := a.s.readBarrier(ctx); err != nil {
		return nil, err
	}
	cfg, err := a.s.authConfig()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read auth records: %v", err)
	}
	if !cfg.Enabled {
		return nil, status.Error(codes.FailedPrecondition, "auth is not enabled: calls need no token")
	}
	wait, cancel := context.WithTimeout(ctx, a.s.cfg.RequestTimeout)
	defer cancel()
	select {
	case a.logins <- struct{}{}:
		defer func() { <-a.logins }()
	case <-wait.Done():
		return nil, status.Error(codes.ResourceExhausted, "too many logins at once; retry")
	}
	id, err := credential.CheckPassword(a.s.records(), req.Name, req.Password, a.s.cfg.BcryptCost)
	if err != nil {
		return nil, authStatus(err, codes.Unauthenticated)
	}
	expires := time.Now().Add(a.s.cfg.AuthTokenTTL)
	return &apipb.AuthenticateResponse{Header: a.header(a.s.store.Revision()),
		Token: credential.IssueToken(cfg.TokenKey, id.User, id.Generation, expires), ExpiresUnix: expires.Unix()}, nil
}

func (a *authService) AuthStatus(ctx context.Context, _ *apipb.AuthStatusRequest) (*apipb.AuthStatusResponse, error) {
	if err := a.s.readBarrier(ctx); err != nil {
		return nil, err
	}
	on, err := auth.Enabled(a.s.records())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read auth records: %v", err)
	}
	return &apipb.AuthStatusResponse{Header: a.header(a.s.store.Revision()), Enabled: on}, nil
}

// change proposes an auth change as the caller, who must be root once auth
// is enabled; a follower forwards it to the leader.
func (a *authService) change(ctx context.Context, c *kvpb.AuthChange,
	forward func(apipb.AuthClient) (*apipb.AuthChangeResponse, error)) (*apipb.AuthChangeResponse, error) {
	user, err := a.s.require(ctx, needRoot)
	if err != nil {
		return nil, err
	}
	res, leader, err := a.s.write(ctx, encodeCommand(&kvpb.Command{User: user, Op: &kvpb.Command_AuthChange{AuthChange: c}}))
	if leader != nil {
		return forward(apipb.NewAuthClient(leader))
	}
	if err != nil {
		return nil, err
	}
	return &apipb.AuthChangeResponse{Header: a.header(res.Revision)}, nil
}

func (a *authService) AuthEnable(ctx context.Context, req *apipb.AuthEnableRequest) (*apipb.AuthChangeResponse, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, status.Errorf(codes.Internal, "draw a token key: %v", err)
	}
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ENABLE, TokenKey: key},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.AuthEnable(ctx, req) })
}

func (a *authService) AuthDisable(ctx context.Context, req *apipb.AuthDisableRequest) (*apipb.AuthChangeResponse, error) {
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_DISABLE},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.AuthDisable(ctx, req) })
}

// hash hashes a password before it is proposed: the log, snapshots and
// backups hold only bcrypt hashes.
func (a *authService) hash(password string) ([]byte, error) {
	h, err := credential.HashPassword(password, a.s.cfg.BcryptCost)
	if err != nil {
		return nil, authStatus(err, codes.InvalidArgument)
	}
	return h, nil
}

func (a *authService) UserAdd(ctx context.Context, req *apipb.UserAddRequest) (*apipb.AuthChangeResponse, error) {
	if err := auth.CheckName("user", req.Name); err != nil {
		return nil, authStatus(err, codes.InvalidArgument)
	}
	var h []byte
	switch {
	case req.NoPassword && req.Password != "":
		return nil, status.Error(codes.InvalidArgument, "give a password or no_password, not both")
	case !req.NoPassword:
		var err error
		if h, err = a.hash(req.Password); err != nil {
			return nil, err
		}
	}
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_ADD, User: req.Name, PasswordHash: h},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.UserAdd(ctx, req) })
}

func (a *authService) UserDelete(ctx context.Context, req *apipb.UserDeleteRequest) (*apipb.AuthChangeResponse, error) {
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_DELETE, User: req.Name},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.UserDelete(ctx, req) })
}

func (a *authService) UserChangePassword(ctx context.Context, req *apipb.UserChangePasswordRequest) (*apipb.AuthChangeResponse, error) {
	h, err := a.hash(req.Password)
	if err != nil {
		return nil, err
	}
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_PASSWORD, User: req.Name, PasswordHash: h},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.UserChangePassword(ctx, req) })
}

func (a *authService) UserGrantRole(ctx context.Context, req *apipb.UserGrantRoleRequest) (*apipb.AuthChangeResponse, error) {
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_GRANT_ROLE, User: req.User, Role: req.Role},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.UserGrantRole(ctx, req) })
}

func (a *authService) UserRevokeRole(ctx context.Context, req *apipb.UserRevokeRoleRequest) (*apipb.AuthChangeResponse, error) {
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_REVOKE_ROLE, User: req.User, Role: req.Role},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.UserRevokeRole(ctx, req) })
}

func (a *authService) RoleAdd(ctx context.Context, req *apipb.RoleAddRequest) (*apipb.AuthChangeResponse, error) {
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ROLE_ADD, Role: req.Name},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.RoleAdd(ctx, req) })
}

func (a *authService) RoleDelete(ctx context.Context, req *apipb.RoleDeleteRequest) (*apipb.AuthChangeResponse, error) {
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ROLE_DELETE, Role: req.Role},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.RoleDelete(ctx, req) })
}

func (a *authService) RoleGrantPermission(ctx context.Context, req *apipb.RoleGrantPermissionRequest) (*apipb.AuthChangeResponse, error) {
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ROLE_GRANT, Role: req.Role, Permission: permissionToRecord(req.Permission)},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.RoleGrantPermission(ctx, req) })
}

func (a *authService) RoleRevokePermission(ctx context.Context, req *apipb.RoleRevokePermissionRequest) (*apipb.AuthChangeResponse, error) {
	return a.change(ctx, &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ROLE_REVOKE, Role: req.Role, Permission: permissionToRecord(req.Permission)},
		func(c apipb.AuthClient) (*apipb.AuthChangeResponse, error) { return c.RoleRevokePermission(ctx, req) })
}

// The API's and the records' permission types share their numbers.
func permissionToRecord(p *apipb.Permission) *kvpb.AuthPermission {
	if p == nil {
		return nil
	}
	return &kvpb.AuthPermission{Type: kvpb.AuthPermission_Type(p.Type), Key: p.Key, RangeEnd: p.RangeEnd}
}

func permissionFromRecord(p *kvpb.AuthPermission) *apipb.Permission {
	return &apipb.Permission{Type: apipb.Permission_Type(p.Type), Key: p.Key, RangeEnd: p.RangeEnd}
}

// readAsRoot is what every auth query needs: root (once auth is on) and
// a state that reflects every acknowledged change.
func (a *authService) readAsRoot(ctx context.Context) error {
	return a.s.requireFresh(ctx, needRoot)
}

// readOwn is readAsRoot, except that a user may read what is theirs (its
// own record, a role it holds), as etcd lets them: mine says whether the
// caller's record makes it so.
func (a *authService) readOwn(ctx context.Context, mine func(caller *kvpb.AuthUser) bool) error {
	err := a.readAsRoot(ctx)
	if status.Code(err) != codes.PermissionDenied {
		return err
	}
	user, uerr := a.s.check(ctx, needUser, true) // the barrier is passed
	if uerr != nil {
		return err
	}
	caller, rerr := auth.User(a.s.records(), user)
	if rerr != nil || caller == nil || !mine(caller) {
		return err
	}
	return nil
}

func (a *authService) UserGet(ctx context.Context, req *apipb.UserGetRequest) (*apipb.UserGetResponse, error) {
	if err := a.readOwn(ctx, func(caller *kvpb.AuthUser) bool { return caller.Name == req.Name }); err != nil {
		return nil, err
	}
	u, err := auth.User(a.s.records(), req.Name)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read user %q: %v", req.Name, err)
	}
	if u == nil {
		return nil, status.Errorf(codes.NotFound, "user %q does not exist", req.Name)
	}
	return &apipb.UserGetResponse{Header: a.header(a.s.store.Revision()), Roles: u.Roles}, nil
}

func (a *authService) RoleGet(ctx context.Context, req *apipb.RoleGetRequest) (*apipb.RoleGetResponse, error) {
	if err := a.readOwn(ctx, func(caller *kvpb.AuthUser) bool { return slices.Contains(caller.Roles, req.Role) }); err != nil {
		return nil, err
	}
	resp := &apipb.RoleGetResponse{Header: a.header(a.s.store.Revision())}
	if req.Role == auth.RootRole {
		// Built in: everything, shown as readwrite on every key.
		resp.Permissions = []*apipb.Permission{{Type: apipb.Permission_READWRITE, RangeEnd: []byte{0}}}
		return resp, nil
	}
	ro, err := auth.Role(a.s.records(), req.Role)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read role %q: %v", req.Role, err)
	}
	if ro == nil {
		return nil, status.Errorf(codes.NotFound, "role %q does not exist", req.Role)
	}
	for _, p := range ro.Permissions {
		resp.Permissions = append(resp.Permissions, permissionFromRecord(p))
	}
	return resp, nil
}

func (a *authService) UserList(ctx context.Context, _ *apipb.UserListRequest) (*apipb.UserListResponse, error) {
	if err := a.readAsRoot(ctx); err != nil {
		return nil, err
	}
	names, err := a.names(auth.UserPrefix())
	if err != nil {
		return nil, err
	}
	return &apipb.UserListResponse{Header: a.header(a.s.store.Revision()), Users: names}, nil
}

func (a *authService) RoleList(ctx context.Context, _ *apipb.RoleListRequest) (*apipb.RoleListResponse, error) {
	if err := a.readAsRoot(ctx); err != nil {
		return nil, err
	}
	names, err := a.names(auth.RolePrefix())
	if err != nil {
		return nil, err
	}
	// The built-in root role in its place among the others, as etcd
	// lists roles: by name.
	at, _ := slices.BinarySearch(names, auth.RootRole)
	return &apipb.RoleListResponse{Header: a.header(a.s.store.Revision()), Roles: slices.Insert(names, at, auth.RootRole)}, nil
}

// names lists the records under prefix by name, in order.
func (a *authService) names(prefix []byte) ([]string, error) {
	var names []string
	var after []byte
	for {
		rr, err := a.s.store.Range(prefix, after, 1000)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "list %q: %v", prefix, err)
		}
		for _, kv := range rr.Entries {
			names = append(names, string(bytes.TrimPrefix(kv.Key, prefix)))
			after = kv.Key
		}
		if !rr.More {
			return names, nil
		}
	}
}
