package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// authCluster is a 3-member cluster with cheap password hashes, and a
// connection to each member for the auth, KV and cluster APIs.
type authCluster struct {
	*testCluster
	conns map[core.NodeID]*grpc.ClientConn
}

func newAuthCluster(t *testing.T) *authCluster {
	c := newTestCluster(t, 0, 0)
	for i := 1; i <= 3; i++ {
		c.members[core.NodeID(i)], c.clients[core.NodeID(i)] = freeAddr(t), freeAddr(t)
	}
	for id := range c.members {
		c.startWith(id, Config{InitialCluster: c.members, BcryptCost: 4})
	}
	a := &authCluster{testCluster: c, conns: map[core.NodeID]*grpc.ClientConn{}}
	for id, addr := range c.clients {
		conn, err := grpc.NewClient(addr, plaintext())
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		a.conns[id] = conn
	}
	return a
}

func (a *authCluster) auth(id core.NodeID) apipb.AuthClient { return apipb.NewAuthClient(a.conns[id]) }
func (a *authCluster) kv(id core.NodeID) apipb.KVClient     { return apipb.NewKVClient(a.conns[id]) }

// follower is some member that is not the leader and already knows who
// the leader is, so a call through it that needs the leader (a login's read
// barrier, a forwarded write) does not fail with "no leader" only because
// the first heartbeat has not reached it yet.
func (a *authCluster) follower() core.NodeID {
	lead := a.leader()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for id := range a.members {
			if id == lead {
				continue
			}
			c, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := a.testCluster.conns[id].Status(c, &apipb.StatusRequest{})
			cancel()
			if err == nil && core.NodeID(st.LeaderId) == lead {
				return id
			}
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
	a.t.Fatalf("no follower heard of leader %d within 10s", lead)
	return 0
}

func as(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, tokenKey, token)
}

func login(t *testing.T, c apipb.AuthClient, user, password string) string {
	t.Helper()
	resp, err := c.Authenticate(ctx(t), &apipb.AuthenticateRequest{Name: user, Password: password})
	require.NoError(t, err)
	return resp.Token
}

func requireCode(t *testing.T, code codes.Code, err error, what string) {
	t.Helper()
	require.Error(t, err, what)
	require.Equal(t, code, status.Code(err), "%s: %v", what, err)
}

// setUp creates root and alice (readwrite on prefix app/) through a
// follower, which forwards to the leader, and enables auth.
func (a *authCluster) setUp(t *testing.T) {
	t.Helper()
	ac := a.auth(a.follower())
	var err error
	eventually(t, func() error { // until the follower has heard of the leader
		_, err = ac.AuthEnable(ctx(t), &apipb.AuthEnableRequest{})
		if status.Code(err) == codes.Unavailable {
			return err
		}
		return nil
	})
	requireCode(t, codes.InvalidArgument, err, "enable before root exists")
	for _, step := range []func() error{
		func() error {
			_, err := ac.UserAdd(ctx(t), &apipb.UserAddRequest{Name: "root", Password: "rootpw"})
			return err
		},
		func() error {
			_, err := ac.UserGrantRole(ctx(t), &apipb.UserGrantRoleRequest{User: "root", Role: "root"})
			return err
		},
		func() error {
			_, err := ac.UserAdd(ctx(t), &apipb.UserAddRequest{Name: "alice", Password: "alicepw"})
			return err
		},
		func() error { _, err := ac.RoleAdd(ctx(t), &apipb.RoleAddRequest{Name: "app"}); return err },
		func() error {
			_, err := ac.RoleGrantPermission(ctx(t), &apipb.RoleGrantPermissionRequest{Role: "app",
				Permission: &apipb.Permission{Type: apipb.Permission_READWRITE, Key: []byte("app/"), RangeEnd: []byte("app0")}})
			return err
		},
		func() error {
			_, err := ac.UserGrantRole(ctx(t), &apipb.UserGrantRoleRequest{User: "alice", Role: "app"})
			return err
		},
		func() error { _, err := ac.AuthEnable(ctx(t), &apipb.AuthEnableRequest{}); return err },
	} {
		require.NoError(t, step())
	}
}

// Anonymous and unauthorized callers get PermissionDenied for reads,
// writes, membership and backups, and change nothing; an authorized user
// succeeds through any member.
func TestAuthDeniesWhoDoesNotBelong(t *testing.T) {
	a := newAuthCluster(t)
	lead := a.leader()
	_, err := a.kv(lead).Put(ctx(t), &apipb.PutRequest{Key: []byte("app/x"), Value: []byte("before")})
	require.NoError(t, err)
	a.setUp(t)

	alice := login(t, a.auth(a.follower()), "alice", "alicepw")
	root := login(t, a.auth(lead), "root", "rootpw")
	for _, who := range []struct {
		name string
		ctx  context.Context
	}{{"anonymous", ctx(t)}, {"alice", as(ctx(t), alice)}} {
		for id := range a.members {
			kv, cl := a.kv(id), apipb.NewClusterClient(a.conns[id])
			_, err := kv.Put(who.ctx, &apipb.PutRequest{Key: []byte("other"), Value: []byte("v")})
			requireCode(t, codes.PermissionDenied, err, who.name+" put")
			_, err = kv.Get(who.ctx, &apipb.GetRequest{Key: []byte("other")})
			requireCode(t, codes.PermissionDenied, err, who.name+" get")
			_, err = kv.Range(who.ctx, &apipb.RangeRequest{Prefix: []byte("")})
			requireCode(t, codes.PermissionDenied, err, who.name+" range")
			_, err = cl.MemberRemove(who.ctx, &apipb.MemberRemoveRequest{Id: uint64(id)})
			requireCode(t, codes.PermissionDenied, err, who.name+" member remove")
			stream, err := kv.Snapshot(who.ctx, &apipb.SnapshotRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			requireCode(t, codes.PermissionDenied, err, who.name+" backup")
			_, err = a.auth(id).UserAdd(who.ctx, &apipb.UserAddRequest{Name: "mallory", Password: "x"})
			requireCode(t, codes.PermissionDenied, err, who.name+" user add")
			_, err = apipb.NewMaintenanceClient(a.conns[id]).AlarmDisarm(who.ctx, &apipb.AlarmDisarmRequest{Type: apipb.AlarmType_ALARM_TYPE_NOSPACE})
			requireCode(t, codes.PermissionDenied, err, who.name+" alarm disarm")
		}
	}
	_, err = a.kv(lead).Put(ctx(t), &apipb.PutRequest{Key: []byte("app/x"), Value: []byte("anon")})
	requireCode(t, codes.PermissionDenied, err, "anonymous put inside alice's prefix")

	// Alice writes through a follower (forwarded to the leader) and reads
	// from every member; root may back up.
	_, err = a.kv(a.follower()).Put(as(ctx(t), alice), &apipb.PutRequest{Key: []byte("app/x"), Value: []byte("alice")})
	require.NoError(t, err)
	for id := range a.members {
		g, err := a.kv(id).Get(as(ctx(t), alice), &apipb.GetRequest{Key: []byte("app/x")})
		require.NoError(t, err)
		require.Equal(t, "alice", string(g.Value), "nothing the refused calls sent was applied")
		_, err = a.kv(id).Range(as(ctx(t), alice), &apipb.RangeRequest{Prefix: []byte("app/")})
		require.NoError(t, err)
	}
	stream, err := a.kv(a.follower()).Snapshot(as(ctx(t), root), &apipb.SnapshotRequest{})
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err)
	require.NotNil(t, first.Info)
	// Root may change the membership, through a follower.
	cl := apipb.NewClusterClient(a.conns[a.follower()])
	_, err = cl.MemberAddLearner(as(ctx(t), root), &apipb.MemberAddLearnerRequest{Id: 9, PeerAddr: freeAddr(t)})
	require.NoError(t, err)
	_, err = cl.MemberRemove(as(ctx(t), root), &apipb.MemberRemoveRequest{Id: 9})
	require.NoError(t, err)
	users, err := a.auth(lead).UserList(as(ctx(t), root), &apipb.UserListRequest{})
	require.NoError(t, err)
	require.Equal(t, []string{"alice", "root"}, users.Users)
}

// Revoking a role takes effect at once on every member: the next read,
// wherever it goes, is refused. Tokens outlive a leader change; changing a
// password ends the tokens issued before.
func TestAuthRevocationAndTokens(t *testing.T) {
	a := newAuthCluster(t)
	a.setUp(t)
	alice := login(t, a.auth(a.follower()), "alice", "alicepw")
	root := login(t, a.auth(a.follower()), "root", "rootpw")
	_, err := a.kv(a.leader()).Put(as(ctx(t), alice), &apipb.PutRequest{Key: []byte("app/k"), Value: []byte("v")})
	require.NoError(t, err)

	_, err = a.auth(a.follower()).UserRevokeRole(as(ctx(t), root), &apipb.UserRevokeRoleRequest{User: "alice", Role: "app"})
	require.NoError(t, err)
	for id := range a.members {
		_, err := a.kv(id).Get(as(ctx(t), alice), &apipb.GetRequest{Key: []byte("app/k")})
		requireCode(t, codes.PermissionDenied, err, "read right after the revocation")
	}
	_, err = a.auth(a.leader()).UserGrantRole(as(ctx(t), root), &apipb.UserGrantRoleRequest{User: "alice", Role: "app"})
	require.NoError(t, err)

	old := a.leader()
	a.stop(old)
	eventually(t, func() error {
		for id := range a.servers {
			if _, err := a.kv(id).Put(as(ctx(t), alice), &apipb.PutRequest{Key: []byte("app/k"), Value: []byte("after")}); err != nil {
				return err
			}
		}
		return nil
	})

	_, err = a.kv(a.leader()).Get(as(ctx(t), "kv1.bad.token.x.y"), &apipb.GetRequest{Key: []byte("app/k")})
	requireCode(t, codes.Unauthenticated, err, "a forged token")
	_, err = a.auth(a.leader()).UserChangePassword(as(ctx(t), root), &apipb.UserChangePasswordRequest{Name: "alice", Password: "new"})
	require.NoError(t, err)
	_, err = a.kv(a.leader()).Get(as(ctx(t), alice), &apipb.GetRequest{Key: []byte("app/k")})
	requireCode(t, codes.Unauthenticated, err, "a token from before the password change")
	_, err = a.auth(a.leader()).Authenticate(ctx(t), &apipb.AuthenticateRequest{Name: "alice", Password: "alicepw"})
	requireCode(t, codes.Unauthenticated, err, "the old password")
	fresh := login(t, a.auth(a.leader()), "alice", "new")
	g, err := a.kv(a.leader()).Get(as(ctx(t), fresh), &apipb.GetRequest{Key: []byte("app/k")})
	require.NoError(t, err)
	require.Equal(t, "after", string(g.Value))
}

// The Go client logs in with its credentials, over pipelines and unary
// calls alike, and logs in again by itself when a member refuses its token
// (here: auth was disabled and enabled again, which ends every token).
func TestClientLogsInAgain(t *testing.T) {
	a := newAuthCluster(t)
	a.setUp(t)
	for _, unary := range []bool{false, true} {
		var eps []string
		for _, addr := range a.clients {
			eps = append(eps, addr)
		}
		cl, err := client.New(client.Config{Endpoints: eps, Username: "alice", Password: "alicepw", Unary: unary})
		require.NoError(t, err)
		defer cl.Close()
		_, err = cl.Put(ctx(t), []byte("app/a"), []byte("1"))
		require.NoError(t, err)
		_, err = cl.Put(ctx(t), []byte("other"), []byte("1"))
		requireCode(t, codes.PermissionDenied, status.Convert(unwrapStatus(err)).Err(), "outside alice's role")

		root := login(t, a.auth(a.leader()), "root", "rootpw")
		_, err = a.auth(a.leader()).AuthDisable(as(ctx(t), root), &apipb.AuthDisableRequest{})
		require.NoError(t, err)
		_, err = a.auth(a.leader()).AuthEnable(ctx(t), &apipb.AuthEnableRequest{})
		require.NoError(t, err)
		_, err = cl.Put(ctx(t), []byte("app/a"), []byte("2"))
		require.NoError(t, err, "unary %v: the client logs in again after its token was refused", unary)

		bad, err := client.New(client.Config{Endpoints: eps, Username: "alice", Password: "wrong", Unary: unary})
		require.NoError(t, err)
		defer bad.Close()
		_, err = bad.Get(ctx(t), []byte("app/a"))
		requireCode(t, codes.Unauthenticated, status.Convert(unwrapStatus(err)).Err(), "a wrong password")
	}
}

// unwrapStatus finds the gRPC status a client error carries.
func unwrapStatus(err error) error {
	var se *client.StatusError
	if errors.As(err, &se) {
		return status.Error(se.Code, se.Message)
	}
	return err
}

// A client that began while auth was off (no token, sessions of no user)
// carries on once it is enabled: its stream is reopened with a login and
// its session replaced, without the caller seeing a refusal.
func TestClientCarriesOnWhenAuthIsEnabled(t *testing.T) {
	a := newAuthCluster(t)
	a.setUp(t)
	root := login(t, a.auth(a.leader()), "root", "rootpw")
	_, err := a.auth(a.leader()).AuthDisable(as(ctx(t), root), &apipb.AuthDisableRequest{})
	require.NoError(t, err)
	var eps []string
	for _, addr := range a.clients {
		eps = append(eps, addr)
	}
	cl, err := client.New(client.Config{Endpoints: eps, Username: "alice", Password: "alicepw"})
	require.NoError(t, err)
	defer cl.Close()
	_, err = cl.Put(ctx(t), []byte("app/a"), []byte("before"))
	require.NoError(t, err)
	_, err = a.auth(a.follower()).AuthEnable(ctx(t), &apipb.AuthEnableRequest{})
	require.NoError(t, err)
	_, err = cl.Put(ctx(t), []byte("app/a"), []byte("after"))
	require.NoError(t, err)
	g, err := cl.Get(ctx(t), []byte("app/a"))
	require.NoError(t, err)
	require.Equal(t, "after", string(g.Value))
}

// A follower whose applied auth records lag a change acknowledged through
// the leader does not refuse a call that the change allows: it catches up
// before refusing. Here auth is disabled through the leader while the
// follower's state machine is held, so the follower still has it on; a
// change without a token (which needs root only while auth is on) must
// wait for the follower to apply the disable, not be refused.
func TestFollowerCatchesUpBeforeRefusing(t *testing.T) {
	a := newAuthCluster(t)
	a.setUp(t)
	lead, f := a.leader(), a.follower()
	// setUp enabled auth through some follower; f must have applied that
	// before its state machine is held, or it sees auth off throughout and
	// lets the AuthEnable below through.
	leadSt, err := a.testCluster.conns[lead].Status(ctx(t), &apipb.StatusRequest{})
	require.NoError(t, err)
	eventually(t, func() error {
		st, err := a.testCluster.conns[f].Status(ctx(t), &apipb.StatusRequest{})
		if err != nil {
			return err
		}
		if st.Applied < leadSt.Applied {
			return fmt.Errorf("node %d applied %d of the leader's %d", f, st.Applied, leadSt.Applied)
		}
		return nil
	})
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	a.servers[f].storeQ <- replica.StoreJob{Do: func() { <-gate }}

	root := login(t, a.auth(lead), "root", "rootpw")
	_, err = a.auth(lead).AuthDisable(as(ctx(t), root), &apipb.AuthDisableRequest{})
	require.NoError(t, err)

	// The follower cannot catch up while its state machine is held, so a
	// call that needs root while auth is on waits until its deadline
	// instead of being refused. The probe is a harmless change: a call the
	// client saw time out can still take effect (the member's deadline
	// comes a little after the client's, and the held state machine is
	// released right after), and an AuthEnable taking effect then would
	// rightly refuse the one below (a CI rehearsal saw that).
	short, cancel := context.WithTimeout(ctx(t), 500*time.Millisecond)
	_, err = a.auth(f).RoleAdd(short, &apipb.RoleAddRequest{Name: "probe"})
	cancel()
	requireCode(t, codes.DeadlineExceeded, err, "RoleAdd on a follower that has not applied the disable")

	done := make(chan error, 1)
	go func() {
		_, err := a.auth(f).AuthEnable(ctx(t), &apipb.AuthEnableRequest{})
		done <- err
	}()
	release()
	require.NoError(t, <-done, "AuthEnable once the follower has caught up")
}

// A backup carries users, roles and the auth switch: a cluster restored
// from it enforces the same rules, and its users log in as before.
func TestBackupKeepsAuth(t *testing.T) {
	a := newAuthCluster(t)
	a.setUp(t)
	var eps []string
	for _, addr := range a.clients {
		eps = append(eps, addr)
	}
	root, err := client.New(client.Config{Endpoints: eps, Username: "root", Password: "rootpw"})
	require.NoError(t, err)
	defer root.Close()
	_, err = root.Put(ctx(t), []byte("app/x"), []byte("1"))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "backup.kvb")
	_, err = root.SaveSnapshot(ctx(t), path)
	require.NoError(t, err)

	c := startClusterWith(t, 3, func(_ core.NodeID, cfg *Config) {
		require.NoError(t, Restore(*cfg, path))
	}, plaintext())
	_, err = c.conns[c.leader()].Get(ctx(t), &apipb.GetRequest{Key: []byte("app/x")})
	requireCode(t, codes.PermissionDenied, err, "anonymous read in the restored cluster")
	alice, err := client.New(client.Config{Endpoints: c.endpoints(), Username: "alice", Password: "alicepw"})
	require.NoError(t, err)
	defer alice.Close()
	g, err := alice.Get(ctx(t), []byte("app/x"))
	require.NoError(t, err)
	require.Equal(t, "1", string(g.Value))
}
