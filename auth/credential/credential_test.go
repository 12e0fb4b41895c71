package credential

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

func TestTokens(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	now := time.Unix(1_800_000_000, 0)
	tok := IssueToken(key, "alice.b", 7, now.Add(time.Minute))
	id, err := VerifyToken(key, tok, now)
	require.NoError(t, err)
	require.Equal(t, Identity{User: "alice.b", Generation: 7}, id)

	_, err = VerifyToken(key, tok, now.Add(time.Minute))
	require.ErrorContains(t, err, "expired")
	_, err = VerifyToken(bytes.Repeat([]byte{2}, 32), tok, now)
	require.ErrorContains(t, err, "signature")
	parts := strings.Split(tok, ".")
	parts[3] = "9999999999" // a later expiry, same signature
	_, err = VerifyToken(key, strings.Join(parts, "."), now)
	require.ErrorContains(t, err, "signature")
	for _, bad := range []string{"", "x", "kv1.a.b.c", tok + ".x"} {
		_, err = VerifyToken(key, bad, now)
		require.ErrorIs(t, err, auth.ErrRefused, "%q", bad)
	}
}

func TestPasswordsAndGenerations(t *testing.T) {
	r := auth.MemRecords{}
	h, err := HashPassword("s3cret", bcrypt.MinCost)
	require.NoError(t, err)
	require.NoError(t, auth.Apply(r, "", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_ADD, User: "alice", PasswordHash: h}, 5))

	id, err := CheckPassword(r, "alice", "s3cret", bcrypt.MinCost)
	require.NoError(t, err)
	require.Equal(t, Identity{User: "alice", Generation: 5}, id)
	require.NoError(t, CheckIdentity(r, id))
	_, errWrong := CheckPassword(r, "alice", "nope", bcrypt.MinCost)
	_, errMissing := CheckPassword(r, "bob", "s3cret", bcrypt.MinCost)
	require.EqualError(t, errWrong, errMissing.Error(), "a wrong password and a missing user look alike")

	h2, err := HashPassword("other", bcrypt.MinCost)
	require.NoError(t, err)
	require.NoError(t, auth.Apply(r, "", &kvpb.AuthChange{Kind: kvpb.AuthChange_KIND_USER_PASSWORD, User: "alice", PasswordHash: h2}, 9))
	require.ErrorContains(t, CheckIdentity(r, id), "password changed")
	require.NoError(t, CheckIdentity(r, Identity{User: "alice"}), "a certificate names no generation")

	_, err = HashPassword("", bcrypt.MinCost)
	require.ErrorIs(t, err, auth.ErrRefused)
	_, err = HashPassword(strings.Repeat("x", 73), bcrypt.MinCost)
	require.ErrorIs(t, err, auth.ErrRefused)
}
