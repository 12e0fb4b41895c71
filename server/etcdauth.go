package server

import (
	"bytes"
	"context"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/auth"
)

// etcdAuth is etcd's Auth service on KeyVal's users and roles: each call
// is the native authService's (same checks, same log commands, same
// forwarding), with etcd's messages and errors. The token Authenticate
// returns is KeyVal's; clientv3 sends it in the "token" metadata, where
// KeyVal's interceptors read it.
type etcdAuth struct {
	pb.UnimplementedAuthServer
	s      *Server
	native *authService
}

func (a *etcdAuth) AuthEnable(ctx context.Context, _ *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	if _, err := a.native.AuthEnable(ctx, &apipb.AuthEnableRequest{}); err != nil {
		return nil, a.refused(ctx, err, reason{userIs(auth.RootUser, false), rpctypes.ErrGRPCRootUserNotExist},
			reason{holdsRole(auth.RootUser, auth.RootRole, false), rpctypes.ErrGRPCRootRoleNotExist})
	}
	return &pb.AuthEnableResponse{Header: a.s.etcdHeader()}, nil
}

func (a *etcdAuth) AuthDisable(ctx context.Context, _ *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	if _, err := a.native.AuthDisable(ctx, &apipb.AuthDisableRequest{}); err != nil {
		return nil, etcdError(err)
	}
	return &pb.AuthDisableResponse{Header: a.s.etcdHeader()}, nil
}

func (a *etcdAuth) AuthStatus(ctx context.Context, _ *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	resp, err := a.native.AuthStatus(ctx, &apipb.AuthStatusRequest{})
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.AuthStatusResponse{Header: a.s.etcdHeader(), Enabled: resp.Enabled}, nil
}

// Authenticate answers as etcd does where clients depend on it: with auth
// off, ErrAuthNotEnabled (clientv3 then goes on without a token); for a
// wrong name or password, ErrAuthFailed.
func (a *etcdAuth) Authenticate(ctx context.Context, req *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	resp, err := a.native.Authenticate(ctx, &apipb.AuthenticateRequest{Name: req.Name, Password: req.Password})
	switch status.Code(err) {
	case codes.OK:
		return &pb.AuthenticateResponse{Header: a.s.etcdHeader(), Token: resp.Token}, nil
	case codes.FailedPrecondition:
		return nil, rpctypes.ErrGRPCAuthNotEnabled
	case codes.Unauthenticated:
		return nil, rpctypes.ErrGRPCAuthFailed
	}
	return nil, etcdError(err)
}

func (a *etcdAuth) UserAdd(ctx context.Context, req *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	if req.HashedPassword != "" {
		return nil, status.Error(codes.InvalidArgument, "KeyVal hashes passwords itself: send the password, not a hash")
	}
	_, err := a.native.UserAdd(ctx, &apipb.UserAddRequest{Name: req.Name, Password: req.Password,
		NoPassword: req.Options != nil && req.Options.NoPassword})
	if err != nil {
		return nil, a.refused(ctx, err, reason{nameEmpty(req.Name), rpctypes.ErrGRPCUserEmpty},
			reason{userIs(req.Name, true), rpctypes.ErrGRPCUserAlreadyExist})
	}
	return &pb.AuthUserAddResponse{Header: a.s.etcdHeader()}, nil
}

func (a *etcdAuth) UserGet(ctx context.Context, req *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	resp, err := a.native.UserGet(ctx, &apipb.UserGetRequest{Name: req.Name})
	if status.Code(err) == codes.NotFound {
		return nil, rpctypes.ErrGRPCUserNotFound
	}
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.AuthUserGetResponse{Header: a.s.etcdHeader(), Roles: resp.Roles}, nil
}

func (a *etcdAuth) UserList(ctx context.Context, _ *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	resp, err := a.native.UserList(ctx, &apipb.UserListRequest{})
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.AuthUserListResponse{Header: a.s.etcdHeader(), Users: resp.Users}, nil
}

func (a *etcdAuth) UserDelete(ctx context.Context, req *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	if _, err := a.native.UserDelete(ctx, &apipb.UserDeleteRequest{Name: req.Name}); err != nil {
		return nil, a.refused(ctx, err, reason{userIs(req.Name, false), rpctypes.ErrGRPCUserNotFound})
	}
	return &pb.AuthUserDeleteResponse{Header: a.s.etcdHeader()}, nil
}

func (a *etcdAuth) UserChangePassword(ctx context.Context, req *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	if req.HashedPassword != "" {
		return nil, status.Error(codes.InvalidArgument, "KeyVal hashes passwords itself: send the password, not a hash")
	}
	if _, err := a.native.UserChangePassword(ctx, &apipb.UserChangePasswordRequest{Name: req.Name, Password: req.Password}); err != nil {
		return nil, a.refused(ctx, err, reason{userIs(req.Name, false), rpctypes.ErrGRPCUserNotFound})
	}
	return &pb.AuthUserChangePasswordResponse{Header: a.s.etcdHeader()}, nil
}

func (a *etcdAuth) UserGrantRole(ctx context.Context, req *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	if _, err := a.native.UserGrantRole(ctx, &apipb.UserGrantRoleRequest{User: req.User, Role: req.Role}); err != nil {
		return nil, a.refused(ctx, err, reason{userIs(req.User, false), rpctypes.ErrGRPCUserNotFound},
			reason{roleIs(req.Role, false), rpctypes.ErrGRPCRoleNotFound})
	}
	return &pb.AuthUserGrantRoleResponse{Header: a.s.etcdHeader()}, nil
}

func (a *etcdAuth) UserRevokeRole(ctx context.Context, req *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	if _, err := a.native.UserRevokeRole(ctx, &apipb.UserRevokeRoleRequest{User: req.Name, Role: req.Role}); err != nil {
		return nil, a.refused(ctx, err, reason{userIs(req.Name, false), rpctypes.ErrGRPCUserNotFound},
			reason{holdsRole(req.Name, req.Role, false), rpctypes.ErrGRPCRoleNotGranted})
	}
	return &pb.AuthUserRevokeRoleResponse{Header: a.s.etcdHeader()}, nil
}

// RoleAdd of the root role succeeds without a change: KeyVal's root role
// is built in, but etcd's has to be added, and etcdctl's auth enable adds
// it (then grants it to user root) when AuthEnable answers that root lacks
// it. Only a caller allowed to add roles gets that answer.
func (a *etcdAuth) RoleAdd(ctx context.Context, req *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	if _, err := a.native.RoleAdd(ctx, &apipb.RoleAddRequest{Name: req.Name}); err != nil {
		if req.Name == auth.RootRole && status.Code(err) == codes.InvalidArgument {
			return &pb.AuthRoleAddResponse{Header: a.s.etcdHeader()}, nil
		}
		return nil, a.refused(ctx, err, reason{nameEmpty(req.Name), rpctypes.ErrGRPCRoleEmpty},
			reason{roleIs(req.Name, true), rpctypes.ErrGRPCRoleAlreadyExist})
	}
	return &pb.AuthRoleAddResponse{Header: a.s.etcdHeader()}, nil
}

func (a *etcdAuth) RoleGet(ctx context.Context, req *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	resp, err := a.native.RoleGet(ctx, &apipb.RoleGetRequest{Role: req.Role})
	if status.Code(err) == codes.NotFound {
		return nil, rpctypes.ErrGRPCRoleNotFound
	}
	if err != nil {
		return nil, etcdError(err)
	}
	out := &pb.AuthRoleGetResponse{Header: a.s.etcdHeader()}
	for _, p := range resp.Permissions {
		out.Perm = append(out.Perm, &authpb.Permission{PermType: etcdPermType(p.Type), Key: p.Key, RangeEnd: p.RangeEnd})
	}
	return out, nil
}

func (a *etcdAuth) RoleList(ctx context.Context, _ *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	resp, err := a.native.RoleList(ctx, &apipb.RoleListRequest{})
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.AuthRoleListResponse{Header: a.s.etcdHeader(), Roles: resp.Roles}, nil
}

func (a *etcdAuth) RoleDelete(ctx context.Context, req *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	if _, err := a.native.RoleDelete(ctx, &apipb.RoleDeleteRequest{Role: req.Role}); err != nil {
		return nil, a.refused(ctx, err, reason{roleIs(req.Role, false), rpctypes.ErrGRPCRoleNotFound})
	}
	return &pb.AuthRoleDeleteResponse{Header: a.s.etcdHeader()}, nil
}

func (a *etcdAuth) RoleGrantPermission(ctx context.Context, req *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	if req.Perm == nil {
		return nil, rpctypes.ErrGRPCPermissionNotGiven
	}
	p := &apipb.Permission{Type: keyvalPermType(req.Perm.PermType), Key: req.Perm.Key, RangeEnd: req.Perm.RangeEnd}
	if _, err := a.native.RoleGrantPermission(ctx, &apipb.RoleGrantPermissionRequest{Role: req.Name, Permission: p}); err != nil {
		return nil, a.refused(ctx, err, reason{roleIs(req.Name, false), rpctypes.ErrGRPCRoleNotFound})
	}
	return &pb.AuthRoleGrantPermissionResponse{Header: a.s.etcdHeader()}, nil
}

// RoleRevokePermission revokes the role's permissions on exactly [key,
// range_end), whatever their type: etcd's request names no type, KeyVal's
// does, so each one found is revoked with its own.
func (a *etcdAuth) RoleRevokePermission(ctx context.Context, req *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	if req.Role == auth.RootRole {
		return nil, status.Error(codes.InvalidArgument, "the root role's permission on every key is built in and cannot be revoked")
	}
	role, err := a.native.RoleGet(ctx, &apipb.RoleGetRequest{Role: req.Role})
	if status.Code(err) == codes.NotFound {
		return nil, rpctypes.ErrGRPCRoleNotFound
	}
	if err != nil {
		return nil, etcdError(err)
	}
	found := false
	for _, p := range role.Permissions {
		if !bytes.Equal(p.Key, req.Key) || !bytes.Equal(p.RangeEnd, req.RangeEnd) {
			continue
		}
		found = true
		if _, err := a.native.RoleRevokePermission(ctx, &apipb.RoleRevokePermissionRequest{Role: req.Role, Permission: p}); err != nil {
			return nil, etcdError(err)
		}
	}
	if !found {
		return nil, rpctypes.ErrGRPCPermissionNotGranted
	}
	return &pb.AuthRoleRevokePermissionResponse{Header: a.s.etcdHeader()}, nil
}

// KeyVal numbers permission types from 1 (0 is unset); etcd from 0.
func keyvalPermType(t authpb.Permission_Type) apipb.Permission_Type {
	return apipb.Permission_Type(t + 1)
}

func etcdPermType(t apipb.Permission_Type) authpb.Permission_Type {
	return authpb.Permission_Type(t - 1)
}

// reason is a refusal's cause as the auth records show it, and the etcd
// error that names it.
type reason struct {
	holds func(auth.Records) bool
	err   error
}

// refused turns a change KeyVal's auth rules refused (INVALID_ARGUMENT,
// with KeyVal's message) into the etcd error of the first reason that
// holds, as of every acknowledged change: etcd's clients compare these.
// Without one, KeyVal's own message stays.
func (a *etcdAuth) refused(ctx context.Context, err error, reasons ...reason) error {
	if status.Code(err) != codes.InvalidArgument {
		return etcdError(err)
	}
	if a.s.readBarrier(ctx) != nil {
		return err
	}
	r := a.s.records()
	for _, why := range reasons {
		if why.holds(r) {
			return why.err
		}
	}
	return err
}

func nameEmpty(name string) func(auth.Records) bool {
	return func(auth.Records) bool { return name == "" }
}

func userIs(name string, present bool) func(auth.Records) bool {
	return func(r auth.Records) bool {
		u, err := auth.User(r, name)
		return err == nil && (u != nil) == present
	}
}

// roleIs counts the built-in root role as present.
func roleIs(name string, present bool) func(auth.Records) bool {
	return func(r auth.Records) bool {
		ro, err := auth.Role(r, name)
		return err == nil && (ro != nil || name == auth.RootRole) == present
	}
}

// holdsRole is true when user exists and holding role is held.
func holdsRole(user, role string, held bool) func(auth.Records) bool {
	return func(r auth.Records) bool {
		u, err := auth.User(r, user)
		return err == nil && u != nil && slices.Contains(u.Roles, role) == held
	}
}
