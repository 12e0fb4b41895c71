package client

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// authenticateMethod is the one call made without a token: it gets one.
const authenticateMethod = "/keyval.api.Auth/Authenticate"

// tokens logs in with Config.Username and Password and keeps the token,
// shared by every endpoint (any member accepts any member's token).
type tokens struct {
	user, password string
	now            func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
	// authOffUntil: the cluster said auth is off; send no token till then.
	authOffUntil time.Time
}

// refreshBefore renews a token this long before it expires, so a call
// does not carry one that lapses on the way.
const refreshBefore = 30 * time.Second

// get returns a token to send ("" while the cluster has auth off),
// logging in through cc when there is none or it is about to expire.
func (t *tokens) get(ctx context.Context, cc *grpc.ClientConn) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if now.Before(t.authOffUntil) {
		return "", nil
	}
	if t.token != "" && now.Add(refreshBefore).Before(t.expires) {
		return t.token, nil
	}
	resp, err := apipb.NewAuthClient(cc).Authenticate(ctx, &apipb.AuthenticateRequest{Name: t.user, Password: t.password})
	if status.Code(err) == codes.FailedPrecondition {
		t.authOffUntil = now.Add(5 * time.Second)
		return "", nil
	}
	if err != nil {
		st := status.Convert(err)
		return "", status.Errorf(st.Code(), "log in as %q: %s", t.user, st.Message())
	}
	t.token, t.expires = resp.Token, time.Unix(resp.ExpiresUnix, 0)
	return t.token, nil
}

// drop forgets token after a member refused it, so the next call logs in
// again.
func (t *tokens) drop(token string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token == token {
		t.token = ""
	}
}

// forget drops the token and what the client believed about auth being
// off, so the next call or stream logs in afresh.
func (t *tokens) forget() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.token, t.authOffUntil = "", time.Time{}
}

// staleCredentials reports whether a member refused a call for its
// credentials (a token it no longer accepts, or none while auth is on)
// rather than for what it asked.
func staleCredentials(err error) bool {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unauthenticated:
		return true
	case codes.PermissionDenied:
		return strings.Contains(st.Message(), "authentication required")
	}
	return false
}

// withToken attaches a token to ctx.
func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "token", token)
}

// dialOptions attach the token to every call and stream, and log in again
// once when a member refuses a token (it expired, or the password changed).
func (t *tokens) dialOptions() []grpc.DialOption {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == authenticateMethod {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		tok, err := t.get(ctx, cc)
		if err != nil {
			return err
		}
		err = invoker(withToken(ctx, tok), method, req, reply, cc, opts...)
		if status.Code(err) != codes.Unauthenticated || tok == "" {
			return err
		}
		t.drop(tok)
		if tok, err = t.get(ctx, cc); err != nil {
			return err
		}
		return invoker(withToken(ctx, tok), method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		tok, err := t.get(ctx, cc)
		if err != nil {
			return nil, err
		}
		return streamer(withToken(ctx, tok), desc, cc, method, opts...)
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}
}

// The auth administration calls. Once auth is enabled they need a user
// with the root role (Config.Username, or a client certificate).

// AuthEnable turns auth on; the cluster refuses until user root exists and
// holds role root.
func (c *Client) AuthEnable(ctx context.Context) error {
	return c.authCall(ctx, "auth enable", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.AuthEnable(ctx, &apipb.AuthEnableRequest{})
		return err
	})
}

// AuthDisable turns auth off.
func (c *Client) AuthDisable(ctx context.Context) error {
	return c.authCall(ctx, "auth disable", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.AuthDisable(ctx, &apipb.AuthDisableRequest{})
		return err
	})
}

// AuthStatus says whether auth is enabled.
func (c *Client) AuthStatus(ctx context.Context) (bool, error) {
	var on bool
	err := c.authCall(ctx, "auth status", func(ctx context.Context, a apipb.AuthClient) error {
		r, err := a.AuthStatus(ctx, &apipb.AuthStatusRequest{})
		on = r.GetEnabled()
		return err
	})
	return on, err
}

// UserAdd adds a user. An empty password makes a user who can only log in
// with a client certificate whose common name is the user's name.
func (c *Client) UserAdd(ctx context.Context, name, password string) error {
	return c.authCall(ctx, "user add", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.UserAdd(ctx, &apipb.UserAddRequest{Name: name, Password: password, NoPassword: password == ""})
		return err
	})
}

// UserDelete deletes a user.
func (c *Client) UserDelete(ctx context.Context, name string) error {
	return c.authCall(ctx, "user delete", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.UserDelete(ctx, &apipb.UserDeleteRequest{Name: name})
		return err
	})
}

// UserChangePassword sets a user's password; the user's tokens end.
func (c *Client) UserChangePassword(ctx context.Context, name, password string) error {
	return c.authCall(ctx, "user passwd", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.UserChangePassword(ctx, &apipb.UserChangePasswordRequest{Name: name, Password: password})
		return err
	})
}

// UserGrantRole gives a user a role.
func (c *Client) UserGrantRole(ctx context.Context, user, role string) error {
	return c.authCall(ctx, "user grant-role", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.UserGrantRole(ctx, &apipb.UserGrantRoleRequest{User: user, Role: role})
		return err
	})
}

// UserRevokeRole takes a role from a user, on every member at once.
func (c *Client) UserRevokeRole(ctx context.Context, user, role string) error {
	return c.authCall(ctx, "user revoke-role", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.UserRevokeRole(ctx, &apipb.UserRevokeRoleRequest{User: user, Role: role})
		return err
	})
}

// UserGet returns a user's roles.
func (c *Client) UserGet(ctx context.Context, name string) ([]string, error) {
	var roles []string
	err := c.authCall(ctx, "user get", func(ctx context.Context, a apipb.AuthClient) error {
		r, err := a.UserGet(ctx, &apipb.UserGetRequest{Name: name})
		roles = r.GetRoles()
		return err
	})
	return roles, err
}

// UserList lists the users by name.
func (c *Client) UserList(ctx context.Context) ([]string, error) {
	var users []string
	err := c.authCall(ctx, "user list", func(ctx context.Context, a apipb.AuthClient) error {
		r, err := a.UserList(ctx, &apipb.UserListRequest{})
		users = r.GetUsers()
		return err
	})
	return users, err
}

// RoleAdd adds a role with no permissions.
func (c *Client) RoleAdd(ctx context.Context, name string) error {
	return c.authCall(ctx, "role add", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.RoleAdd(ctx, &apipb.RoleAddRequest{Name: name})
		return err
	})
}

// RoleDelete deletes a role.
func (c *Client) RoleDelete(ctx context.Context, name string) error {
	return c.authCall(ctx, "role delete", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.RoleDelete(ctx, &apipb.RoleDeleteRequest{Role: name})
		return err
	})
}

// Permission is what a role may do on a key or range of keys.
type Permission = apipb.Permission

// RoleGrant adds a permission to a role.
func (c *Client) RoleGrant(ctx context.Context, role string, p *Permission) error {
	return c.authCall(ctx, "role grant", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.RoleGrantPermission(ctx, &apipb.RoleGrantPermissionRequest{Role: role, Permission: p})
		return err
	})
}

// RoleRevoke removes a permission from a role, on every member at once.
func (c *Client) RoleRevoke(ctx context.Context, role string, p *Permission) error {
	return c.authCall(ctx, "role revoke", func(ctx context.Context, a apipb.AuthClient) error {
		_, err := a.RoleRevokePermission(ctx, &apipb.RoleRevokePermissionRequest{Role: role, Permission: p})
		return err
	})
}

// RoleGet returns a role's permissions.
func (c *Client) RoleGet(ctx context.Context, name string) ([]*Permission, error) {
	var perms []*Permission
	err := c.authCall(ctx, "role get", func(ctx context.Context, a apipb.AuthClient) error {
		r, err := a.RoleGet(ctx, &apipb.RoleGetRequest{Role: name})
		perms = r.GetPermissions()
		return err
	})
	return perms, err
}

// RoleList lists the roles by name (root included).
func (c *Client) RoleList(ctx context.Context) ([]string, error) {
	var roles []string
	err := c.authCall(ctx, "role list", func(ctx context.Context, a apipb.AuthClient) error {
		r, err := a.RoleList(ctx, &apipb.RoleListRequest{})
		roles = r.GetRoles()
		return err
	})
	return roles, err
}

// authCall runs an auth call on one member after another until one
// answers, as membership calls do (a change that timed out may have been
// made; repeating it would be refused, so only "unavailable" is retried).
func (c *Client) authCall(ctx context.Context, op string, f func(context.Context, apipb.AuthClient) error) error {
	return c.onSomeMember(ctx, op, func(ctx context.Context, conn *grpc.ClientConn, _ string) error {
		return f(ctx, apipb.NewAuthClient(conn))
	})
}
