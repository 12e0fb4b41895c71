package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// credentials splits --user into a name and a password: "name:password",
// or "name" with --password.
func (a *app) credentials() (user, password string, err error) {
	if a.user == "" {
		if a.password != "" {
			return "", "", usageErrorf("--password needs --user")
		}
		return "", "", nil
	}
	user, password, hasColon := strings.Cut(a.user, ":")
	switch {
	case user == "":
		return "", "", usageErrorf("--user %q: the user name is empty", a.user)
	case hasColon && a.password != "":
		return "", "", usageErrorf("give the password in --user name:password or in --password, not both")
	case !hasColon:
		password = a.password
	}
	if password == "" {
		return "", "", usageErrorf("--user %s needs a password: --user %s:PASSWORD or --password (env KVCTL_PASSWORD); a user with a client certificate needs no --user", user, user)
	}
	return user, password, nil
}

// simple runs a change that answers nothing but success.
func (a *app) simple(cmd *cobra.Command, change func(*session) error) error {
	s, err := a.connect(cmd)
	if err != nil {
		return err
	}
	defer s.close()
	if err := change(s); err != nil {
		return a.failure(err)
	}
	if a.output == "json" {
		return a.writeJSON(map[string]bool{"ok": true})
	}
	fmt.Fprintln(a.stdout, "OK")
	return nil
}

// list prints names one per line, or as a JSON list under field.
func (a *app) list(field string, names []string) error {
	if a.output == "json" {
		if names == nil {
			names = []string{}
		}
		return a.writeJSON(map[string][]string{field: names})
	}
	for _, n := range names {
		fmt.Fprintln(a.stdout, n)
	}
	return nil
}

func (a *app) authCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Turn access control on or off, or show whether it is on",
		Long: `auth switches access control. With auth on, every request needs a user:
--user name:password (kvctl logs in for a token), or a client certificate
whose common name is the user's name. Enabling is refused until user root
exists and holds role root; see docs/security.md.`,
	}
	enable := &cobra.Command{Use: "enable", Short: "Turn auth on (needs user root with role root)", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.simple(cmd, func(s *session) error { return s.c.AuthEnable(s.ctx) })
		}}
	disable := &cobra.Command{Use: "disable", Short: "Turn auth off (as root)", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.simple(cmd, func(s *session) error { return s.c.AuthDisable(s.ctx) })
		}}
	status := &cobra.Command{Use: "status", Short: "Say whether auth is on", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			on, err := s.c.AuthStatus(s.ctx)
			if err != nil {
				return a.failure(err)
			}
			if a.output == "json" {
				return a.writeJSON(map[string]bool{"enabled": on})
			}
			fmt.Fprintf(a.stdout, "auth enabled: %v\n", on)
			return nil
		}}
	return commandGroup(cmd, enable, disable, status)
}

// newPassword takes the password from NAME:PASSWORD, or else reads one
// line of standard input.
func (a *app) newPassword(arg string) (name, password string, err error) {
	name, password, ok := strings.Cut(arg, ":")
	if ok {
		return name, password, nil
	}
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", "", usageErrorf("reading the password of %s from standard input: %v", name, err)
	}
	password = strings.TrimRight(line, "\r\n")
	if password == "" {
		return "", "", usageErrorf("no password for %s: give NAME:PASSWORD or a line on standard input", name)
	}
	return name, password, nil
}

func (a *app) userCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Add, list, show and delete users; change passwords; grant and revoke roles"}
	var noPassword bool
	add := &cobra.Command{Use: "add NAME[:PASSWORD]", Short: "Add a user (password from NAME:PASSWORD or standard input)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, password := args[0], ""
			if !noPassword {
				var err error
				if name, password, err = a.newPassword(args[0]); err != nil {
					return err
				}
			}
			return a.simple(cmd, func(s *session) error { return s.c.UserAdd(s.ctx, name, password) })
		}}
	add.Flags().BoolVar(&noPassword, "no-password", false, "the user logs in only with a client certificate whose common name is NAME")
	passwd := &cobra.Command{Use: "passwd NAME[:PASSWORD]", Short: "Change a user's password; the user's tokens end", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, password, err := a.newPassword(args[0])
			if err != nil {
				return err
			}
			return a.simple(cmd, func(s *session) error { return s.c.UserChangePassword(s.ctx, name, password) })
		}}
	del := &cobra.Command{Use: "delete NAME", Short: "Delete a user", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.simple(cmd, func(s *session) error { return s.c.UserDelete(s.ctx, args[0]) })
		}}
	grant := &cobra.Command{Use: "grant-role USER ROLE", Short: "Give a user a role", Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.simple(cmd, func(s *session) error { return s.c.UserGrantRole(s.ctx, args[0], args[1]) })
		}}
	revoke := &cobra.Command{Use: "revoke-role USER ROLE", Short: "Take a role from a user", Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.simple(cmd, func(s *session) error { return s.c.UserRevokeRole(s.ctx, args[0], args[1]) })
		}}
	list := &cobra.Command{Use: "list", Short: "List the users", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.names(cmd, "users", func(s *session) ([]string, error) { return s.c.UserList(s.ctx) })
		}}
	get := &cobra.Command{Use: "get NAME", Short: "Show a user's roles", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.names(cmd, "roles", func(s *session) ([]string, error) { return s.c.UserGet(s.ctx, args[0]) })
		}}
	return commandGroup(cmd, add, list, get, del, passwd, grant, revoke)
}

// names runs a query that answers a list of names and prints it.
func (a *app) names(cmd *cobra.Command, field string, query func(*session) ([]string, error)) error {
	s, err := a.connect(cmd)
	if err != nil {
		return err
	}
	defer s.close()
	names, err := query(s)
	if err != nil {
		return a.failure(err)
	}
	return a.list(field, names)
}

// permission reads TYPE KEY [RANGE_END] (with --prefix: every key starting
// with KEY; with --from-key: every key from KEY on).
func permission(args []string, prefix, fromKey bool) (*client.Permission, error) {
	types := map[string]apipb.Permission_Type{"read": apipb.Permission_READ, "write": apipb.Permission_WRITE, "readwrite": apipb.Permission_READWRITE}
	t, ok := types[args[0]]
	if !ok {
		return nil, usageErrorf("permission type %q: use read, write or readwrite", args[0])
	}
	p := &client.Permission{Type: t, Key: []byte(args[1])}
	switch {
	case (prefix || fromKey) && len(args) == 3:
		return nil, usageErrorf("give a range end or --prefix or --from-key, not both")
	case prefix && fromKey:
		return nil, usageErrorf("give --prefix or --from-key, not both")
	case prefix:
		p.RangeEnd = auth.PrefixEnd(p.Key)
	case fromKey:
		p.RangeEnd = []byte{0}
	case len(args) == 3:
		p.RangeEnd = []byte(args[2])
	}
	return p, nil
}

func (a *app) roleCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "role", Short: "Add, list, show and delete roles; grant and revoke their permissions",
		Long: `role manages roles. A permission is read, write or readwrite on one key, on
the keys in [KEY, RANGE_END), on every key starting with KEY (--prefix), or
on every key from KEY on (--from-key). Role root is built in and may do
everything.`}
	add := &cobra.Command{Use: "add NAME", Short: "Add a role with no permissions", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.simple(cmd, func(s *session) error { return s.c.RoleAdd(s.ctx, args[0]) })
		}}
	del := &cobra.Command{Use: "delete NAME", Short: "Delete a role", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.simple(cmd, func(s *session) error { return s.c.RoleDelete(s.ctx, args[0]) })
		}}
	list := &cobra.Command{Use: "list", Short: "List the roles", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.names(cmd, "roles", func(s *session) ([]string, error) { return s.c.RoleList(s.ctx) })
		}}
	get := &cobra.Command{Use: "get NAME", Short: "Show a role's permissions", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			perms, err := s.c.RoleGet(s.ctx, args[0])
			if err != nil {
				return a.failure(err)
			}
			return a.writePermissions(perms)
		}}
	permCommand := func(use, short string, do func(s *session, role string, p *client.Permission) error) *cobra.Command {
		var prefix, fromKey bool
		c := &cobra.Command{Use: use + " ROLE read|write|readwrite KEY [RANGE_END]", Short: short,
			Args: func(cmd *cobra.Command, args []string) error {
				if len(args) < 3 || len(args) > 4 {
					return usageErrorf("%s takes 3 or 4 arguments, got %d: usage: %s", cmd.Name(), len(args), cmd.UseLine())
				}
				return nil
			},
			RunE: func(cmd *cobra.Command, args []string) error {
				p, err := permission(args[1:], prefix, fromKey)
				if err != nil {
					return err
				}
				return a.simple(cmd, func(s *session) error { return do(s, args[0], p) })
			}}
		c.Flags().BoolVar(&prefix, "prefix", false, "every key starting with KEY")
		c.Flags().BoolVar(&fromKey, "from-key", false, "every key from KEY on")
		return c
	}
	grant := permCommand("grant", "Give a role a permission", func(s *session, role string, p *client.Permission) error {
		return s.c.RoleGrant(s.ctx, role, p)
	})
	revoke := permCommand("revoke", "Take a permission from a role (name it exactly as granted)", func(s *session, role string, p *client.Permission) error {
		return s.c.RoleRevoke(s.ctx, role, p)
	})
	return commandGroup(cmd, add, list, get, del, grant, revoke)
}

type permissionJSON struct {
	Type     string `json:"type"`
	Key      string `json:"key"`
	RangeEnd string `json:"range_end,omitempty"`
}

func (a *app) writePermissions(perms []*client.Permission) error {
	out := []permissionJSON{}
	for _, p := range perms {
		rec := &kvpb.AuthPermission{Type: kvpb.AuthPermission_Type(p.Type), Key: p.Key, RangeEnd: p.RangeEnd}
		if a.output != "json" {
			fmt.Fprintln(a.stdout, auth.DescribePermission(rec))
			continue
		}
		typ, _, _ := strings.Cut(auth.DescribePermission(rec), " ")
		out = append(out, permissionJSON{Type: typ, Key: string(p.Key), RangeEnd: string(p.RangeEnd)})
	}
	if a.output == "json" {
		return a.writeJSON(map[string][]permissionJSON{"permissions": out})
	}
	return nil
}
