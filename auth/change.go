package auth

import (
	"bytes"
	"slices"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// Apply makes change, proposed on behalf of user at log index index. Once
// auth is enabled only a root user may change anything. A refusal wraps
// ErrRefused (ErrDenied for a missing permission) and changes nothing.
func Apply(r Records, user string, c *kvpb.AuthChange, index uint64) error {
	cfg, err := Config(r)
	if err != nil {
		return err
	}
	if cfg.Enabled {
		if err := RequireRoot(r, user); err != nil {
			return err
		}
	}
	switch c.GetKind() {
	case kvpb.AuthChange_KIND_ENABLE:
		return enable(r, cfg, c.TokenKey)
	case kvpb.AuthChange_KIND_DISABLE:
		if !cfg.Enabled {
			return nil
		}
		return store(r, configKey, &kvpb.AuthConfig{})
	case kvpb.AuthChange_KIND_USER_ADD:
		return userAdd(r, c, index)
	case kvpb.AuthChange_KIND_USER_DELETE:
		return userDelete(r, cfg, c.User)
	case kvpb.AuthChange_KIND_USER_PASSWORD:
		return updateUser(r, c.User, func(u *kvpb.AuthUser) error {
			u.PasswordHash, u.Generation = c.PasswordHash, index
			return nil
		})
	case kvpb.AuthChange_KIND_USER_GRANT_ROLE:
		return userGrant(r, c.User, c.Role)
	case kvpb.AuthChange_KIND_USER_REVOKE_ROLE:
		return userRevoke(r, cfg, c.User, c.Role)
	case kvpb.AuthChange_KIND_ROLE_ADD:
		return roleAdd(r, c.Role)
	case kvpb.AuthChange_KIND_ROLE_DELETE:
		return roleDelete(r, c.Role)
	case kvpb.AuthChange_KIND_ROLE_GRANT:
		return roleGrant(r, c.Role, c.Permission)
	case kvpb.AuthChange_KIND_ROLE_REVOKE:
		return roleRevoke(r, c.Role, c.Permission)
	}
	return refused("unknown auth change %v", c.GetKind())
}

// enable turns auth on only when someone can still administer it after.
func enable(r Records, cfg *kvpb.AuthConfig, tokenKey []byte) error {
	if cfg.Enabled {
		return nil
	}
	root, err := User(r, RootUser)
	if err != nil {
		return err
	}
	if !IsRoot(root) {
		return refused("auth cannot be enabled before user %q exists and holds role %q", RootUser, RootRole)
	}
	if len(root.PasswordHash) == 0 {
		// A certificate could name root too, but if none can, nobody
		// could ever log in to turn auth off again.
		return refused("auth cannot be enabled while user %q has no password: give it one (kvctl user passwd root)", RootUser)
	}
	if len(tokenKey) < 32 {
		return refused("auth enable needs a token key of at least 32 bytes")
	}
	return store(r, configKey, &kvpb.AuthConfig{Enabled: true, TokenKey: tokenKey})
}

func userAdd(r Records, c *kvpb.AuthChange, index uint64) error {
	if err := CheckName("user", c.User); err != nil {
		return err
	}
	u, err := User(r, c.User)
	if err != nil {
		return err
	}
	if u != nil {
		return refused("user %q already exists", c.User)
	}
	return store(r, UserKey(c.User), &kvpb.AuthUser{Name: c.User, PasswordHash: c.PasswordHash, Generation: index})
}

// updateUser reads a user, lets edit change it and stores it back.
func updateUser(r Records, name string, edit func(*kvpb.AuthUser) error) error {
	u, err := User(r, name)
	if err != nil {
		return err
	}
	if u == nil {
		return refused("user %q does not exist", name)
	}
	if err := edit(u); err != nil {
		return err
	}
	return store(r, UserKey(name), u)
}

// lockout refuses a change that would leave auth enabled with no root
// user, after which nobody could administer the cluster.
func lockout(cfg *kvpb.AuthConfig, user, what string) error {
	if cfg.Enabled && user == RootUser {
		return refused("%s while auth is enabled would lock every administrator out; disable auth first", what)
	}
	return nil
}

func userDelete(r Records, cfg *kvpb.AuthConfig, name string) error {
	if err := lockout(cfg, name, "deleting user root"); err != nil {
		return err
	}
	u, err := User(r, name)
	if err != nil {
		return err
	}
	if u == nil {
		return refused("user %q does not exist", name)
	}
	return r.Delete(UserKey(name))
}

func userGrant(r Records, user, role string) error {
	if role != RootRole {
		ro, err := Role(r, role)
		if err != nil {
			return err
		}
		if ro == nil {
			return refused("role %q does not exist", role)
		}
	}
	return updateUser(r, user, func(u *kvpb.AuthUser) error {
		if hasRole(u, role) {
			return nil
		}
		u.Roles = append(u.Roles, role)
		slices.Sort(u.Roles)
		return nil
	})
}

func userRevoke(r Records, cfg *kvpb.AuthConfig, user, role string) error {
	if role == RootRole {
		if err := lockout(cfg, user, "revoking role root from user root"); err != nil {
			return err
		}
	}
	return updateUser(r, user, func(u *kvpb.AuthUser) error {
		if !hasRole(u, role) {
			return refused("user %q does not hold role %q", user, role)
		}
		u.Roles = slices.DeleteFunc(u.Roles, func(r string) bool { return r == role })
		return nil
	})
}

func roleAdd(r Records, name string) error {
	if err := CheckName("role", name); err != nil {
		return err
	}
	if name == RootRole {
		return refused("role %q is built in", RootRole)
	}
	ro, err := Role(r, name)
	if err != nil {
		return err
	}
	if ro != nil {
		return refused("role %q already exists", name)
	}
	return store(r, RoleKey(name), &kvpb.AuthRole{Name: name})
}

// roleDelete removes a role. Its holders keep its name in their records,
// which grants nothing while no such role exists; a role added again under
// the same name is theirs again (docs/security.md says so).
func roleDelete(r Records, name string) error {
	if name == RootRole {
		return refused("role %q is built in and cannot be deleted", RootRole)
	}
	ro, err := Role(r, name)
	if err != nil {
		return err
	}
	if ro == nil {
		return refused("role %q does not exist", name)
	}
	return r.Delete(RoleKey(name))
}

// updateRole reads a role, lets edit change it and stores it back.
func updateRole(r Records, name string, edit func(*kvpb.AuthRole) error) error {
	if name == RootRole {
		return refused("role %q is built in: it may do everything and has no permission list", RootRole)
	}
	ro, err := Role(r, name)
	if err != nil {
		return err
	}
	if ro == nil {
		return refused("role %q does not exist", name)
	}
	if err := edit(ro); err != nil {
		return err
	}
	return store(r, RoleKey(name), ro)
}

func checkPermission(p *kvpb.AuthPermission) error {
	if p == nil {
		return refused("no permission given")
	}
	if _, err := ParseType(typeName(p.Type)); err != nil {
		return err
	}
	if len(p.Key) == 0 && !(len(p.RangeEnd) == 1 && p.RangeEnd[0] == 0) {
		return refused("the permission's key is empty; an empty key is allowed only with range end \"\\x00\" (every key)")
	}
	if end := keyEnd(p.Key, p.RangeEnd); end != nil && bytes.Compare(end, p.Key) <= 0 {
		return refused("the permission's range end %q is not after its key %q", p.RangeEnd, p.Key)
	}
	return nil
}

func samePermission(a, b *kvpb.AuthPermission) bool {
	return a.Type == b.Type && bytes.Equal(a.Key, b.Key) && bytes.Equal(a.RangeEnd, b.RangeEnd)
}

func roleGrant(r Records, role string, p *kvpb.AuthPermission) error {
	if err := checkPermission(p); err != nil {
		return err
	}
	return updateRole(r, role, func(ro *kvpb.AuthRole) error {
		if slices.ContainsFunc(ro.Permissions, func(q *kvpb.AuthPermission) bool { return samePermission(p, q) }) {
			return nil
		}
		ro.Permissions = append(ro.Permissions, &kvpb.AuthPermission{Type: p.Type, Key: p.Key, RangeEnd: p.RangeEnd})
		return nil
	})
}

func roleRevoke(r Records, role string, p *kvpb.AuthPermission) error {
	if p == nil {
		return refused("no permission given")
	}
	return updateRole(r, role, func(ro *kvpb.AuthRole) error {
		n := len(ro.Permissions)
		ro.Permissions = slices.DeleteFunc(ro.Permissions, func(q *kvpb.AuthPermission) bool { return samePermission(p, q) })
		if len(ro.Permissions) == n {
			return refused("role %q has no permission %s", role, DescribePermission(p))
		}
		return nil
	})
}
