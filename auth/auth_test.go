package auth

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

func genKey() *rapid.Generator[[]byte] {
	return rapid.Custom(func(t *rapid.T) []byte {
		return []byte(rapid.StringMatching(`[ab]{1,3}`).Draw(t, "key"))
	})
}

func genEnd(key []byte) *rapid.Generator[[]byte] {
	return rapid.Custom(func(t *rapid.T) []byte {
		switch rapid.IntRange(0, 3).Draw(t, "endKind") {
		case 0:
			return nil
		case 1:
			return []byte{0}
		case 2:
			return PrefixEnd(key)
		}
		return append(append([]byte(nil), key...), []byte(rapid.StringMatching(`[ab]{1,2}`).Draw(t, "more"))...)
	})
}

func inRange(k, key, end []byte) bool {
	e := keyEnd(key, end)
	return bytes.Compare(k, key) >= 0 && (e == nil || bytes.Compare(k, e) < 0)
}

// A request is covered exactly when no key in it lies outside every
// permission. Any uncovered stretch of keys begins at the request's key or
// at some permission's end, so checking those keys alone decides it.
func TestCoveredMatchesPointChecks(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var perms []*kvpb.AuthPermission
		candidates := [][]byte{}
		for i := rapid.IntRange(0, 4).Draw(t, "n"); i > 0; i-- {
			k := genKey().Draw(t, "pkey")
			p := &kvpb.AuthPermission{Type: kvpb.AuthPermission_TYPE_READ, Key: k, RangeEnd: genEnd(k).Draw(t, "pend")}
			perms = append(perms, p)
			if e := keyEnd(p.Key, p.RangeEnd); e != nil {
				candidates = append(candidates, e)
			}
		}
		key := genKey().Draw(t, "rkey")
		end := genEnd(key).Draw(t, "rend")
		want := true
		for _, c := range append(candidates, key) {
			if !inRange(c, key, end) {
				continue
			}
			in := false
			for _, p := range perms {
				in = in || inRange(c, p.Key, p.RangeEnd)
			}
			want = want && in
		}
		if got := covered(perms, key, keyEnd(key, end)); got != want {
			t.Fatalf("covered = %v, point checks = %v; perms %v, request [%q, %q)", got, want, perms, key, end)
		}
	})
}

func TestAllowedExplainsRefusals(t *testing.T) {
	r := MemRecords{}
	for _, c := range []*kvpb.AuthChange{
		{Kind: kvpb.AuthChange_KIND_USER_ADD, User: "alice"},
		{Kind: kvpb.AuthChange_KIND_ROLE_ADD, Role: "r"},
		{Kind: kvpb.AuthChange_KIND_ROLE_GRANT, Role: "r", Permission: &kvpb.AuthPermission{Type: kvpb.AuthPermission_TYPE_READ, Key: []byte("a/"), RangeEnd: PrefixEnd([]byte("a/"))}},
		{Kind: kvpb.AuthChange_KIND_ROLE_GRANT, Role: "r", Permission: &kvpb.AuthPermission{Type: kvpb.AuthPermission_TYPE_WRITE, Key: []byte("a/x")}},
		{Kind: kvpb.AuthChange_KIND_USER_GRANT_ROLE, User: "alice", Role: "r"},
	} {
		require.NoError(t, Apply(r, "", c, 1))
	}
	read, write, rw := kvpb.AuthPermission_TYPE_READ, kvpb.AuthPermission_TYPE_WRITE, kvpb.AuthPermission_TYPE_READWRITE
	require.NoError(t, Allowed(r, "alice", read, []byte("a/b"), nil))
	require.NoError(t, Allowed(r, "alice", read, []byte("a/"), PrefixEnd([]byte("a/"))))
	require.NoError(t, Allowed(r, "alice", rw, []byte("a/x"), nil))
	for _, c := range []struct {
		user     string
		want     kvpb.AuthPermission_Type
		key, end string
		says     string
	}{
		{"alice", write, "a/b", "", `user "alice" has no role granting write on key "a/b"`},
		{"alice", read, "a", "\x00", `no role granting read on keys from "a" on`},
		{"alice", read, "", "\x00", `read on keys from "" on`},
		{"bob", read, "a/b", "", `user "bob" does not exist`},
		{"", read, "a/b", "", "authentication required"},
	} {
		err := Allowed(r, c.user, c.want, []byte(c.key), []byte(c.end))
		require.ErrorIs(t, err, ErrDenied)
		require.ErrorContains(t, err, c.says)
	}
}

func TestRolesAreSharedAndRevocable(t *testing.T) {
	r := MemRecords{}
	read := kvpb.AuthPermission_TYPE_READ
	perm := &kvpb.AuthPermission{Type: read, Key: []byte("k")}
	for _, c := range []*kvpb.AuthChange{
		{Kind: kvpb.AuthChange_KIND_USER_ADD, User: "u"},
		{Kind: kvpb.AuthChange_KIND_ROLE_ADD, Role: "r"},
		{Kind: kvpb.AuthChange_KIND_ROLE_GRANT, Role: "r", Permission: perm},
		{Kind: kvpb.AuthChange_KIND_ROLE_GRANT, Role: "r", Permission: perm}, // twice: kept once
		{Kind: kvpb.AuthChange_KIND_USER_GRANT_ROLE, User: "u", Role: "r"},
	} {
		require.NoError(t, Apply(r, "", c, 1))
	}
	ro, err := Role(r, "r")
	require.NoError(t, err)
	require.Len(t, ro.Permissions, 1)
	require.NoError(t, Allowed(r, "u", read, []byte("k"), nil))
	require.NoError(t, Apply(r, "", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ROLE_REVOKE, Role: "r", Permission: perm}, 2))
	require.ErrorIs(t, Allowed(r, "u", read, []byte("k"), nil), ErrDenied)
	err = Apply(r, "", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ROLE_REVOKE, Role: "r", Permission: perm}, 3)
	require.ErrorIs(t, err, ErrRefused)
	require.ErrorContains(t, err, `role "r" has no permission read key "k"`)
}

func TestCheckName(t *testing.T) {
	require.NoError(t, CheckName("user", "alice"))
	for _, bad := range []string{"", string(bytes.Repeat([]byte("x"), MaxNameBytes+1)), "a\nb", "\xff"} {
		require.ErrorIs(t, CheckName("user", bad), ErrRefused, "%q", bad)
	}
}

// Auth is enabled only when root can log in with a password: without one,
// a cluster whose certificates name no root could never be administered.
func TestEnableNeedsARootPassword(t *testing.T) {
	r := MemRecords{}
	for _, c := range []*kvpb.AuthChange{
		{Kind: kvpb.AuthChange_KIND_USER_ADD, User: RootUser},
		{Kind: kvpb.AuthChange_KIND_USER_GRANT_ROLE, User: RootUser, Role: RootRole},
	} {
		require.NoError(t, Apply(r, "", c, 1))
	}
	key := bytes.Repeat([]byte{1}, 32)
	err := Apply(r, "", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ENABLE, TokenKey: key}, 2)
	require.ErrorIs(t, err, ErrRefused)
	require.ErrorContains(t, err, "has no password")
	require.NoError(t, Apply(r, "", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_PASSWORD, User: RootUser, PasswordHash: []byte("h")}, 3))
	require.NoError(t, Apply(r, "", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_ENABLE, TokenKey: key}, 4))
	on, err := Enabled(r)
	require.NoError(t, err)
	require.True(t, on)
}
