package kvstore

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

func authCmd(user string, c *kvpb.AuthChange) []byte {
	return encode(&kvpb.Command{User: user, Op: &kvpb.Command_AuthChange{AuthChange: c}})
}

func putAs(user, key, value string) []byte {
	return encode(&kvpb.Command{User: user, Op: &kvpb.Command_Put{Put: &kvpb.Put{Key: []byte(key), Value: []byte(value)}}})
}

func casAs(user, key string, expected uint64, value string) []byte {
	return encode(&kvpb.Command{User: user, Op: &kvpb.Command_CompareAndSwap{CompareAndSwap: &kvpb.CompareAndSwap{Key: []byte(key), ExpectedVersion: expected, NewValue: []byte(value)}}})
}

var tokenKey = bytes.Repeat([]byte{7}, 32)

func change(kind kvpb.AuthChange_Kind, user, role string) *kvpb.AuthChange {
	return &kvpb.AuthChange{Kind: kind, User: user, Role: role, PasswordHash: []byte("hash")}
}

func grant(role string, t kvpb.AuthPermission_Type, key, end string) *kvpb.AuthChange {
	return &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ROLE_GRANT, Role: role,
		Permission: &kvpb.AuthPermission{Type: t, Key: []byte(key), RangeEnd: []byte(end)}}
}

// enableAuth creates root and alice (role app: readwrite on prefix "app/")
// and turns auth on.
func enableAuth(t *testing.T, a *applier) {
	for _, c := range []*kvpb.AuthChange{
		change(kvpb.AuthChange_KIND_USER_ADD, "root", ""),
		change(kvpb.AuthChange_KIND_USER_GRANT_ROLE, "root", "root"),
		change(kvpb.AuthChange_KIND_USER_ADD, "alice", ""),
		change(kvpb.AuthChange_KIND_ROLE_ADD, "", "app"),
		grant("app", kvpb.AuthPermission_TYPE_READWRITE, "app/", "app0"),
		change(kvpb.AuthChange_KIND_USER_GRANT_ROLE, "alice", "app"),
		{Kind: kvpb.AuthChange_KIND_ENABLE, TokenKey: tokenKey},
	} {
		r := a.one(authCmd("", c))
		require.Equal(t, StatusOK, r.Status, "%v: %s", c.Kind, r.Err)
	}
}

func TestAuthEnableNeedsRoot(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		r := a.one(authCmd("", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ENABLE, TokenKey: tokenKey}))
		require.Equal(t, StatusInvalid, r.Status)
		require.Contains(t, r.Err, `user "root" exists and holds role "root"`)
		// Still off: a put with no user is applied.
		require.Equal(t, StatusOK, a.one(putCmd(0, 0, "k", "v")).Status)
	})
}

func TestAuthChecksEveryCommandAtApply(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		enableAuth(t, a)
		rev := s.Revision()

		for name, cmd := range map[string][]byte{
			"no user":                        putCmd(0, 0, "app/x", "v"),
			"unknown user":                   putAs("mallory", "app/x", "v"),
			"outside the role":               putAs("alice", "other", "v"),
			"register anonymous":             registerCmd(),
			"auth change by a non-root user": authCmd("alice", change(kvpb.AuthChange_KIND_USER_GRANT_ROLE, "alice", "root")),
		} {
			r := a.one(cmd)
			require.Equal(t, StatusPermissionDenied, r.Status, name)
			require.Contains(t, r.Err, "permission denied", name)
		}
		require.Equal(t, rev, s.Revision(), "a denied command changes nothing")

		require.Equal(t, StatusOK, a.one(putAs("alice", "app/x", "v")).Status)
		require.Equal(t, StatusOK, a.one(putAs("root", "anything", "v")).Status)
		require.Equal(t, StatusOK, a.one(encode(&kvpb.Command{User: "alice", Op: &kvpb.Command_Register{Register: &kvpb.Register{}}})).Status)
		// The members' own records are written by the members, with no user.
		require.Equal(t, StatusOK, a.one(putCmd(0, 0, "\x00keyval/member/1", "addr")).Status)

		// A revocation applies from its index on: the same command is
		// refused after it.
		require.Equal(t, StatusOK, a.one(authCmd("root", change(kvpb.AuthChange_KIND_USER_REVOKE_ROLE, "alice", "app"))).Status)
		require.Equal(t, StatusPermissionDenied, a.one(putAs("alice", "app/x", "v2")).Status)
	})
}

// The auth switch is read once and remembered (authMemo) until an auth
// record is written: a switch within one batch, or a batch after one
// that changed it, is still seen by the very next command.
func TestAuthSwitchSeenByTheNextCommand(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		var setUp [][]byte
		for _, c := range []*kvpb.AuthChange{
			change(kvpb.AuthChange_KIND_USER_ADD, "root", ""),
			change(kvpb.AuthChange_KIND_USER_GRANT_ROLE, "root", "root"),
		} {
			setUp = append(setUp, authCmd("", c))
		}
		enable := authCmd("", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ENABLE, TokenKey: tokenKey})
		disable := authCmd("root", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_DISABLE})
		anon := func(v string) []byte { return putCmd(0, 0, "k", v) }

		res := a.apply(append(setUp, anon("1"), enable, anon("2"), disable, anon("3"), enable, anon("4"))...)
		var got []Status
		for _, r := range res[len(setUp):] {
			got = append(got, r.Status)
		}
		require.Equal(t, []Status{StatusOK, StatusOK, StatusPermissionDenied, StatusOK, StatusOK, StatusOK, StatusPermissionDenied}, got)

		// Across batches: the switch left on, then turned off alone.
		require.Equal(t, StatusPermissionDenied, a.one(anon("5")).Status)
		require.Equal(t, StatusOK, a.one(disable).Status)
		require.Equal(t, StatusOK, a.one(anon("6")).Status)
		require.Equal(t, StatusOK, a.one(enable).Status)
		require.Equal(t, StatusPermissionDenied, a.one(anon("7")).Status)
	})
}

func TestAuthCompareAndSwapNeedsReadAndWrite(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		enableAuth(t, a)
		root := func(c *kvpb.AuthChange) {
			require.Equal(t, StatusOK, a.one(authCmd("root", c)).Status)
		}
		root(change(kvpb.AuthChange_KIND_USER_ADD, "bob", ""))
		root(change(kvpb.AuthChange_KIND_ROLE_ADD, "", "writer"))
		root(grant("writer", kvpb.AuthPermission_TYPE_WRITE, "w", ""))
		root(change(kvpb.AuthChange_KIND_USER_GRANT_ROLE, "bob", "writer"))
		require.Equal(t, StatusOK, a.one(putAs("bob", "w", "1")).Status)
		r := a.one(casAs("bob", "w", 0, "2"))
		require.Equal(t, StatusPermissionDenied, r.Status)
		require.Contains(t, r.Err, "readwrite")
		require.Nil(t, r.CurrentValue, "a refused swap must not leak the value")
		root(grant("writer", kvpb.AuthPermission_TYPE_READ, "w", ""))
		require.Equal(t, StatusCASFailed, a.one(casAs("bob", "w", 0, "2")).Status)
	})
}

func TestAuthRefusesLockout(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		enableAuth(t, a)
		for _, c := range []*kvpb.AuthChange{
			change(kvpb.AuthChange_KIND_USER_DELETE, "root", ""),
			change(kvpb.AuthChange_KIND_USER_REVOKE_ROLE, "root", "root"),
			change(kvpb.AuthChange_KIND_ROLE_DELETE, "", "root"),
			change(kvpb.AuthChange_KIND_USER_ADD, "alice", ""),
			change(kvpb.AuthChange_KIND_ROLE_ADD, "", ""),
			change(kvpb.AuthChange_KIND_USER_GRANT_ROLE, "alice", "nosuchrole"),
			grant("app", kvpb.AuthPermission_TYPE_READ, "b", "a"),
			grant("app", kvpb.AuthPermission_TYPE_UNSPECIFIED, "a", ""),
		} {
			r := a.one(authCmd("root", c))
			require.Equal(t, StatusInvalid, r.Status, "%v", c)
			require.NotEmpty(t, r.Err)
		}
		// Disabling first makes deleting root possible.
		require.Equal(t, StatusOK, a.one(authCmd("root", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_DISABLE})).Status)
		require.Equal(t, StatusOK, a.one(authCmd("", change(kvpb.AuthChange_KIND_USER_DELETE, "root", ""))).Status)
		require.Equal(t, StatusOK, a.one(putCmd(0, 0, "k", "v")).Status)
	})
}

// The auth records are ordinary keys of the state, so a snapshot carries
// them and a restored store enforces the same rules.
func TestAuthSurvivesSnapshot(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		enableAuth(t, a)
		var buf bytes.Buffer
		_, err := s.Snapshot(&buf)
		require.NoError(t, err)
		to := NewMemory(Options{})
		defer to.Close()
		require.NoError(t, to.Restore(&buf))
		b := newApplier(t, to)
		require.Equal(t, StatusPermissionDenied, b.one(putAs("alice", "other", "v")).Status)
		require.Equal(t, StatusOK, b.one(putAs("alice", "app/y", "v")).Status)
	})
}

// A session's retry gets the first attempt's outcome whatever the
// permissions say by then: an applied write is not refused, and a refused
// one is not applied later.
func TestAuthRetriesKeepTheirOutcome(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		enableAuth(t, a)
		reg := a.one(encode(&kvpb.Command{User: "alice", Op: &kvpb.Command_Register{Register: &kvpb.Register{}}}))
		require.Equal(t, StatusOK, reg.Status)
		put := func(seq uint64, key string) []byte {
			return encode(&kvpb.Command{ClientId: reg.ClientID, Seq: seq, User: "alice",
				Op: &kvpb.Command_Put{Put: &kvpb.Put{Key: []byte(key), Value: []byte("v")}}})
		}
		root := func(c *kvpb.AuthChange) {
			require.Equal(t, StatusOK, a.one(authCmd("root", c)).Status)
		}
		first := a.one(put(1, "app/a"))
		require.Equal(t, StatusOK, first.Status)
		root(change(kvpb.AuthChange_KIND_USER_REVOKE_ROLE, "alice", "app"))
		retry := a.one(put(1, "app/a"))
		require.True(t, retry.Duplicate)
		require.Equal(t, first.Status, retry.Status)
		require.Equal(t, first.Version, retry.Version)

		require.Equal(t, StatusPermissionDenied, a.one(put(2, "app/b")).Status)
		root(change(kvpb.AuthChange_KIND_USER_GRANT_ROLE, "alice", "app"))
		again := a.one(put(2, "app/b"))
		require.True(t, again.Duplicate)
		require.Equal(t, StatusPermissionDenied, again.Status)
		g, err := s.Get([]byte("app/b"))
		require.NoError(t, err)
		require.False(t, g.Found, "a refused write is never applied by its retry")

		// A snapshot remembers the refusal too.
		var buf bytes.Buffer
		_, err = s.Snapshot(&buf)
		require.NoError(t, err)
		to := NewMemory(Options{})
		defer to.Close()
		require.NoError(t, to.Restore(&buf))
		after := newApplier(t, to).one(put(2, "app/b"))
		require.True(t, after.Duplicate)
		require.Equal(t, StatusPermissionDenied, after.Status)
	})
}

// Once auth is on, a session answers only the user who opened it: another
// user naming it learns nothing of its remembered result and cannot move
// its seq.
func TestAuthSessionsBelongToTheirUser(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		enableAuth(t, a)
		require.Equal(t, StatusOK, a.one(authCmd("root", change(kvpb.AuthChange_KIND_USER_ADD, "bob", ""))).Status)
		require.Equal(t, StatusOK, a.one(authCmd("root", change(kvpb.AuthChange_KIND_USER_GRANT_ROLE, "bob", "app"))).Status)
		reg := a.one(encode(&kvpb.Command{User: "alice", Op: &kvpb.Command_Register{Register: &kvpb.Register{}}}))
		require.Equal(t, StatusOK, reg.Status)
		cas := func(user string, seq uint64) []byte {
			return encode(&kvpb.Command{ClientId: reg.ClientID, Seq: seq, User: user,
				Op: &kvpb.Command_CompareAndSwap{CompareAndSwap: &kvpb.CompareAndSwap{Key: []byte("app/s"), ExpectedVersion: 7, NewValue: []byte("x")}}})
		}
		require.Equal(t, StatusOK, a.one(putAs("alice", "app/s", "secret")).Status)
		first := a.one(cas("alice", 1))
		require.Equal(t, StatusCASFailed, first.Status)
		require.Equal(t, "secret", string(first.CurrentValue))

		stolen := a.one(cas("bob", 1))
		require.Equal(t, StatusSessionExpired, stolen.Status)
		require.Nil(t, stolen.CurrentValue)
		require.Equal(t, StatusSessionExpired, a.one(cas("bob", 1<<62)).Status)
		// alice's session is untouched: her next seq is applied.
		require.Equal(t, StatusCASFailed, a.one(cas("alice", 2)).Status)
	})
}

// The server reads the auth records through AuthView, which keeps what it
// read while AuthGeneration stands still, so the generation must move with
// every applied change to an auth record and every restore, and a view
// taken once it has moved must read the change, even of a record an
// earlier view kept.
func TestBoltAuthGeneration(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{NoSync: true})
	require.NoError(t, err)
	defer s.Close()
	a := newApplier(t, s)
	ok := func(c *kvpb.AuthChange) {
		t.Helper()
		r := a.one(authCmd("", c))
		require.Equal(t, StatusOK, r.Status, "%v: %s", c.Kind, r.Err)
	}
	rootKey := []byte(auth.UserKey("root"))
	// The view's answers, against the store's.
	enabled := func() bool {
		cfg, err := s.AuthView().Config()
		require.NoError(t, err)
		on, err := auth.Enabled(AuthRecords(s))
		require.NoError(t, err)
		require.Equal(t, on, cfg.Enabled, "the view's configuration and the store's")
		return on
	}
	rootRecord := func() []byte {
		got, found, err := s.AuthView().Get(rootKey)
		require.NoError(t, err)
		want, err := s.Get(rootKey)
		require.NoError(t, err)
		require.Equal(t, want.Found, found)
		require.Equal(t, want.Value, got, "the view's record of root and the store's")
		return got
	}
	require.False(t, enabled())
	v := s.AuthView()
	require.Same(t, v, s.AuthView(), "one view while the generation stands")

	g := s.AuthGeneration()
	a.apply(putCmd(0, 0, "k", "v"), putCmd(0, 0, "k2", "v"))
	require.Equal(t, g, s.AuthGeneration(), "plain writes changed no auth record")
	// Neither a record not found nor a key outside the auth records is kept.
	_, found, err := v.Get(rootKey)
	require.NoError(t, err)
	require.False(t, found)
	_, _, err = v.Get([]byte("k"))
	require.NoError(t, err)
	v.read.Range(func(k, _ any) bool { t.Errorf("the view kept %q", k); return true })

	ok(change(kvpb.AuthChange_KIND_USER_ADD, "root", ""))
	require.Greater(t, s.AuthGeneration(), g, "a user added")
	require.NotSame(t, v, s.AuthView(), "a new view once it moved")
	before := rootRecord()
	require.NotNil(t, before, "the new view reads the user added")
	g = s.AuthGeneration()
	ok(change(kvpb.AuthChange_KIND_USER_GRANT_ROLE, "root", "root"))
	require.Greater(t, s.AuthGeneration(), g, "a role granted")
	require.NotEqual(t, before, rootRecord(), "the record an earlier view kept, changed")
	require.False(t, enabled())

	g = s.AuthGeneration()
	var off bytes.Buffer
	_, err = s.Snapshot(&off)
	require.NoError(t, err)
	res := a.apply(putCmd(0, 0, "k3", "v"), authCmd("", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ENABLE, TokenKey: tokenKey}))
	require.Equal(t, StatusOK, res[1].Status, res[1].Err)
	require.Greater(t, s.AuthGeneration(), g, "auth enabled within a batch")
	require.True(t, enabled(), "read after the generation moved")

	g = s.AuthGeneration()
	require.NoError(t, s.Defragment())
	require.Greater(t, s.AuthGeneration(), g, "a defragmentation puts a new file in place")
	require.True(t, enabled())
	rootRecord()

	g = s.AuthGeneration()
	require.NoError(t, s.Restore(&off))
	require.Greater(t, s.AuthGeneration(), g, "a restore")
	require.False(t, enabled(), "the restored state's records")
	rootRecord()
}
