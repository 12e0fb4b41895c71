package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/server"
	"github.com/therealutkarshpriyadarshi/keyval/server/testpki"
)

// TestAuthCommands: kvctl sets up users and roles, enables auth, and then
// logs in with a password or is named by its client certificate; each
// refusal says what is missing.
func TestAuthCommands(t *testing.T) {
	ca := testpki.NewCA(t, "kvctl-auth")
	cert, key := ca.Issue(t, "node", "127.0.0.1")
	tlsCfg, err := server.ClientTLS(server.TLSFiles{CertFile: cert, KeyFile: key, CAFile: ca.File})
	require.NoError(t, err)
	addr, peer := freeAddr(t), freeAddr(t)
	s, err := server.New(server.Config{
		ID: 1, DataDir: t.TempDir(), ClientAddr: addr, PeerAddr: peer, BcryptCost: 4,
		InitialCluster: map[core.NodeID]string{1: peer}, ClientTLS: tlsCfg,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	s.Start()
	t.Cleanup(func() { s.Stop(context.Background()) })

	aliceCert, aliceKey := ca.Issue(t, "alice")
	nobodyCert, nobodyKey := ca.Issue(t, "nobody")
	as := func(certFile, keyFile string) func(args ...string) result {
		return func(args ...string) result {
			return kvctl(nil, append([]string{"--endpoints", addr, "--cacert", ca.File, "--cert", certFile, "--key", keyFile}, args...)...)
		}
	}
	nobody, alice := as(nobodyCert, nobodyKey), as(aliceCert, aliceKey)
	ok := func(r result) result {
		t.Helper()
		require.Equal(t, 0, r.code, r.stderr)
		return r
	}
	refused := func(r result, says string) {
		t.Helper()
		require.Equal(t, 1, r.code, "stdout %q stderr %q", r.stdout, r.stderr)
		assert.Contains(t, r.stderr, says)
	}

	refused(nobody("auth", "enable"), `user "root" exists and holds role "root"`)
	ok(nobody("user", "add", "root:rootpw"))
	ok(nobody("user", "grant-role", "root", "root"))
	ok(nobody("role", "add", "app"))
	ok(nobody("role", "grant", "app", "readwrite", "app/", "--prefix"))
	r := kvctlStdin(nil, "alicepw\n", "--endpoints", addr, "--cacert", ca.File, "--cert", nobodyCert, "--key", nobodyKey, "user", "add", "alice")
	require.Equal(t, 0, r.code, r.stderr)
	ok(nobody("user", "grant-role", "alice", "app"))
	ok(nobody("auth", "enable"))

	r = ok(nobody("-o", "json", "auth", "status"))
	assert.JSONEq(t, `{"enabled": true}`, r.stdout)
	refused(nobody("put", "app/x", "1"), `user "nobody" does not exist`)
	refused(nobody("user", "list"), "permission denied")
	ok(nobody("--user", "alice:alicepw", "put", "app/x", "1"))
	refused(nobody("--user", "alice:alicepw", "put", "other", "1"), `user "alice" has no role granting write on key "other"`)
	refused(nobody("--user", "alice:wrong", "get", "app/x"), "wrong user name or password")
	r = ok(nobody("--user", "alice", "--password", "alicepw", "get", "app/x"))
	assert.Equal(t, "1\n", r.stdout)
	r = ok(alice("get", "app/x")) // the certificate's common name is the user
	assert.Equal(t, "1\n", r.stdout)
	refused(alice("snapshot", "save", t.TempDir()+"/b.kvb"), `lacks role "root"`)

	root := func(args ...string) result { return nobody(append([]string{"--user", "root:rootpw"}, args...)...) }
	r = ok(root("user", "list"))
	assert.Equal(t, "alice\nroot\n", r.stdout)
	r = ok(root("-o", "json", "role", "get", "app"))
	var perms map[string][]permissionJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &perms))
	assert.Equal(t, []permissionJSON{{Type: "readwrite", Key: "app/", RangeEnd: "app0"}}, perms["permissions"])
	ok(root("role", "revoke", "app", "readwrite", "app/", "--prefix"))
	refused(alice("get", "app/x"), "no role granting read")
	refused(root("user", "delete", "root"), "lock every administrator out")
	ok(root("auth", "disable"))
	ok(nobody("get", "app/x"))
}
