package server

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// TestEtcdAuth sets up users and roles with clientv3 through a follower,
// enables auth, and checks that etcd's clients log in, that their token is
// what KeyVal's own API accepts (clientv3 sends it as "token" metadata),
// and that root-only calls and keys outside a role are refused with
// etcd's errors.
func TestEtcdAuth(t *testing.T) {
	a := newAuthCluster(t)
	follower := a.follower()
	endpoint := a.clients[follower]
	admin := etcdClient(t, endpoint, "", "")

	require.NoError(t, tryLogin(endpoint, "root", "rootpw"), "with auth off a login is skipped, as clientv3 does with etcd")
	var err error
	eventually(t, func() error { // until the follower has heard of the leader
		_, err = admin.AuthEnable(ctx(t))
		if etcdCode(err) == codes.Unavailable {
			return err
		}
		return nil
	})
	require.ErrorIs(t, err, rpctypes.ErrRootUserNotExist)
	_, err = admin.UserAdd(ctx(t), "root", "rootpw")
	require.NoError(t, err)
	_, err = admin.AuthEnable(ctx(t))
	require.ErrorIs(t, err, rpctypes.ErrRootRoleNotExist)
	// A client given a password while auth was off sends no token.
	early := etcdClient(t, endpoint, "alice", "alicepw")
	for _, step := range []func() error{
		// etcdctl's auth enable, answered that root lacks the root role,
		// adds the role and grants it: the built-in role's add succeeds.
		func() error { _, err := admin.RoleAdd(ctx(t), "root"); return err },
		func() error { _, err := admin.UserGrantRole(ctx(t), "root", "root"); return err },
		func() error { _, err := admin.UserAdd(ctx(t), "alice", "alicepw"); return err },
		func() error { _, err := admin.RoleAdd(ctx(t), "app"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx(t), "app", "app/", "app0", clientv3.PermissionType(authpb.READWRITE))
			return err
		},
		func() error { _, err := admin.UserGrantRole(ctx(t), "alice", "app"); return err },
		func() error { _, err := admin.AuthEnable(ctx(t)); return err },
	} {
		require.NoError(t, step())
	}

	require.ErrorIs(t, tryLogin(endpoint, "alice", "wrong"), rpctypes.ErrAuthFailed)
	root := etcdClient(t, endpoint, "root", "rootpw")
	alice := etcdClient(t, endpoint, "alice", "alicepw")

	// Changes KeyVal's rules refuse get the errors etcd gives for them.
	_, err = root.UserAdd(ctx(t), "alice", "again")
	require.ErrorIs(t, err, rpctypes.ErrUserAlreadyExist)
	_, err = root.RoleAdd(ctx(t), "app")
	require.ErrorIs(t, err, rpctypes.ErrRoleAlreadyExist)
	_, err = root.UserGrantRole(ctx(t), "nobody", "app")
	require.ErrorIs(t, err, rpctypes.ErrUserNotFound)
	_, err = root.UserGrantRole(ctx(t), "alice", "nothing")
	require.ErrorIs(t, err, rpctypes.ErrRoleNotFound)
	_, err = root.UserRevokeRole(ctx(t), "alice", "root")
	require.ErrorIs(t, err, rpctypes.ErrRoleNotGranted)
	_, err = root.RoleDelete(ctx(t), "nothing")
	require.ErrorIs(t, err, rpctypes.ErrRoleNotFound)
	_, err = root.UserDelete(ctx(t), "nobody")
	require.ErrorIs(t, err, rpctypes.ErrUserNotFound)
	_, err = root.UserDelete(ctx(t), "root")
	require.Equal(t, codes.InvalidArgument, etcdCode(err), "KeyVal's own refusal, which etcd has no error for: %v", err)
	require.ErrorContains(t, err, "lock every administrator out")

	st, err := root.AuthStatus(ctx(t))
	require.NoError(t, err)
	require.True(t, st.Enabled)
	users, err := root.UserList(ctx(t))
	require.NoError(t, err)
	require.Equal(t, []string{"alice", "root"}, users.Users)
	roles, err := root.RoleList(ctx(t))
	require.NoError(t, err)
	require.Equal(t, []string{"app", "root"}, roles.Roles, "by name, as etcd lists them")
	role, err := root.RoleGet(ctx(t), "app")
	require.NoError(t, err)
	require.Equal(t, []*authpb.Permission{{PermType: authpb.READWRITE, Key: []byte("app/"), RangeEnd: []byte("app0")}}, role.Perm)
	user, err := root.UserGet(ctx(t), "alice")
	require.NoError(t, err)
	require.Equal(t, []string{"app"}, user.Roles)
	_, err = root.UserGet(ctx(t), "nobody")
	require.ErrorIs(t, err, rpctypes.ErrUserNotFound)
	_, err = root.RoleGet(ctx(t), "nothing")
	require.ErrorIs(t, err, rpctypes.ErrRoleNotFound)

	// Administration is root's; anonymous callers and alice are refused.
	_, err = alice.UserList(ctx(t))
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied)
	_, err = admin.UserAdd(ctx(t), "mallory", "pw")
	require.ErrorIs(t, err, rpctypes.ErrUserEmpty, "a call without a user gets etcd's answer")
	_, err = alice.MemberAddAsLearner(ctx(t), []string{"http://127.0.0.1:1"})
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied)
	_, err = alice.AlarmDisarm(ctx(t), &clientv3.AlarmMember{Alarm: pb.AlarmType_NOSPACE})
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied)
	// A user may read its own record and the roles it holds, as in etcd.
	self, err := alice.UserGet(ctx(t), "alice")
	require.NoError(t, err)
	require.Equal(t, []string{"app"}, self.Roles)
	_, err = alice.RoleGet(ctx(t), "app")
	require.NoError(t, err)
	_, err = alice.UserGet(ctx(t), "root")
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied)
	_, err = alice.RoleGet(ctx(t), "root")
	require.ErrorIs(t, err, rpctypes.ErrPermissionDenied)
	// But any user may list the alarms, as etcdctl endpoint health does.
	_, err = alice.AlarmList(ctx(t))
	require.NoError(t, err)
	_, err = admin.AlarmList(ctx(t))
	require.ErrorIs(t, err, rpctypes.ErrUserEmpty)
	_, err = admin.Get(ctx(t), "app/x")
	require.ErrorIs(t, err, rpctypes.ErrUserEmpty)
	// On that answer clientv3 logs in and retries: the client that had
	// no token before auth was enabled goes on, as with etcd.
	_, err = early.Put(ctx(t), "app/early", "1")
	require.NoError(t, err)

	// clientv3's connection carries its token to KeyVal's own API too.
	aliceKV := apipb.NewKVClient(alice.ActiveConnection())
	_, err = apipb.NewMaintenanceClient(alice.ActiveConnection()).AlarmList(ctx(t), &apipb.AlarmListRequest{})
	require.Equal(t, codes.PermissionDenied, etcdCode(err), "KeyVal's own list shows the store's use: root's: %v", err)
	_, err = aliceKV.Put(ctx(t), &apipb.PutRequest{Key: []byte("app/x"), Value: []byte("1")})
	require.NoError(t, err)
	_, err = aliceKV.Put(ctx(t), &apipb.PutRequest{Key: []byte("other"), Value: []byte("1")})
	require.Equal(t, codes.PermissionDenied, etcdCode(err), "%v", err)

	// Revoking by key and range (etcd names no type) takes effect.
	_, err = root.RoleRevokePermission(ctx(t), "app", "app/", "app0")
	require.NoError(t, err)
	_, err = root.RoleRevokePermission(ctx(t), "app", "app/", "app0")
	require.ErrorIs(t, err, rpctypes.ErrPermissionNotGranted)
	_, err = aliceKV.Put(ctx(t), &apipb.PutRequest{Key: []byte("app/x"), Value: []byte("2")})
	require.Equal(t, codes.PermissionDenied, etcdCode(err), "%v", err)

	_, err = root.UserChangePassword(ctx(t), "alice", "newpw")
	require.NoError(t, err)
	require.ErrorIs(t, tryLogin(endpoint, "alice", "alicepw"), rpctypes.ErrAuthFailed)
	_, err = root.UserRevokeRole(ctx(t), "alice", "app")
	require.NoError(t, err)
	_, err = root.UserDelete(ctx(t), "alice")
	require.NoError(t, err)
	_, err = root.RoleDelete(ctx(t), "app")
	require.NoError(t, err)
	_, err = root.AuthDisable(ctx(t))
	require.NoError(t, err)
	st, err = admin.AuthStatus(ctx(t))
	require.NoError(t, err)
	require.False(t, st.Enabled)
}

// tryLogin connects as clientv3 does, logging in, and hangs up.
func tryLogin(endpoint, user, password string) error {
	cli, err := etcdDial(endpoint, user, password)
	if err != nil {
		return err
	}
	return cli.Close()
}
