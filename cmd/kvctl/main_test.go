package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/internal/fakekv"
)

// cluster is a fake three-member cluster for kvctl to talk to.
type cluster struct {
	store *fakekv.Store
	nodes []*fakekv.Node
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{store: fakekv.NewStore()}
	t.Cleanup(c.store.Close)
	for id := uint64(1); id <= 3; id++ {
		n, err := c.store.StartNode(id)
		require.NoError(t, err)
		c.nodes = append(c.nodes, n)
	}
	return c
}

func (c *cluster) endpoints() string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.Addr())
	}
	return strings.Join(out, ",")
}

type result struct {
	stdout, stderr string
	code           int
}

// kvctl runs the command in-process with env as its whole environment and
// nothing on stdin.
func kvctl(env map[string]string, args ...string) result {
	return kvctlStdin(env, "", args...)
}

func kvctlStdin(env map[string]string, stdin string, args ...string) result {
	var stdout, stderr bytes.Buffer
	lookup := func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
	code := run(context.Background(), args, strings.NewReader(stdin), &stdout, &stderr, lookup)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// kvctl runs kvctl against the cluster.
func (c *cluster) kvctl(args ...string) result {
	return kvctl(nil, append([]string{"--endpoints", c.endpoints()}, args...)...)
}

func TestDefaultEndpointsAreTheLocalCluster(t *testing.T) {
	a := &app{}
	f := a.rootCommand().PersistentFlags().Lookup("endpoints")
	require.NotNil(t, f)
	assert.Equal(t, "127.0.0.1:2379,127.0.0.1:12379,127.0.0.1:22379", f.DefValue)
}

func TestPutGetDelete(t *testing.T) {
	c := startCluster(t)

	r := c.kvctl("put", "greeting", "hello")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "OK (version 1)\n", r.stdout)

	r = c.kvctl("get", "greeting")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "hello\n", r.stdout)

	r = c.kvctl("get", "greeting", "--serializable")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "hello\n", r.stdout)

	r = c.kvctl("delete", "greeting")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "deleted \"greeting\"\n", r.stdout)

	r = c.kvctl("delete", "greeting")
	require.Equal(t, 0, r.code, "deleting a missing key is not an error")
	assert.Contains(t, r.stdout, "did not exist")

	r = c.kvctl("get", "greeting")
	assert.Equal(t, 1, r.code)
	assert.Empty(t, r.stdout)
	assert.Equal(t, "key \"greeting\" not found\n", r.stderr)
	assert.Empty(t, c.store.Violations())
}

func TestJSONOutput(t *testing.T) {
	c := startCluster(t)

	r := c.kvctl("-o", "json", "put", "k", "v")
	require.Equal(t, 0, r.code, r.stderr)
	assert.JSONEq(t, `{"key":"k","version":1,"existed":false,"revision":1}`, r.stdout)

	r = c.kvctl("--output", "json", "get", "k")
	require.Equal(t, 0, r.code, r.stderr)
	assert.JSONEq(t, `{"key":"k","found":true,"value":"v","version":1,"revision":1}`, r.stdout)

	r = c.kvctl("--output", "json", "get", "nope")
	assert.Equal(t, 1, r.code, "a missing key exits 1 in JSON mode too")
	assert.JSONEq(t, `{"key":"nope","found":false,"version":0,"revision":1}`, r.stdout)

	// Bytes that are not UTF-8 are base64 encoded under a _base64 name.
	r = c.kvctl("put", "bin", "\xff\x00")
	require.Equal(t, 0, r.code, r.stderr)
	r = c.kvctl("-o", "json", "get", "bin")
	require.Equal(t, 0, r.code, r.stderr)
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	assert.Equal(t, "/wA=", got["value_base64"])
	assert.NotContains(t, got, "value")

	r = c.kvctl("-o", "json", "delete", "k")
	require.Equal(t, 0, r.code, r.stderr)
	assert.JSONEq(t, `{"key":"k","existed":true,"revision":3}`, r.stdout)
}

func TestCompareAndSwap(t *testing.T) {
	c := startCluster(t)

	r := c.kvctl("cas", "k", "0", "first")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "OK (version 1)\n", r.stdout)

	r = c.kvctl("cas", "k", "0", "again")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "cas failed: key \"k\" already exists at version 1, expected it absent (version 0)\n", r.stderr)

	for range 6 {
		require.Equal(t, 0, c.kvctl("put", "k", "x").code)
	}
	_, version := c.store.Value("k")
	require.Equal(t, uint64(7), version)
	r = c.kvctl("cas", "k", "5", "late")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "cas failed: key \"k\" is at version 7, expected 5\n", r.stderr)
	val, _ := c.store.Value("k")
	assert.Equal(t, "x", string(val), "a failed cas writes nothing")

	r = c.kvctl("cas", "absent", "3", "v")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "key \"absent\" does not exist, expected version 3")

	r = c.kvctl("-o", "json", "cas", "k", "5", "late")
	assert.Equal(t, 1, r.code)
	assert.JSONEq(t, `{"key":"k","succeeded":false,"version":7,"exists":true,"current_value":"x","revision":7}`, r.stdout)

	r = c.kvctl("cas", "k", "7", "now")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "OK (version 8)\n", r.stdout)

	r = c.kvctl("cas", "k", "seven", "v")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "not a version number")
}

func TestList(t *testing.T) {
	c := startCluster(t)
	for _, kv := range [][2]string{{"app/b", "2"}, {"app/a", "1"}, {"app/c", "line1\nline2"}, {"other", "x"}} {
		require.Equal(t, 0, c.kvctl("put", kv[0], kv[1]).code)
	}

	r := c.kvctl("list", "app/")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	require.Len(t, lines, 4)
	assert.Equal(t, []string{"KEY", "VERSION", "VALUE"}, strings.Fields(lines[0]))
	assert.Equal(t, []string{"app/a", "2", "1"}, strings.Fields(lines[1]))
	assert.Equal(t, []string{"app/b", "1", "2"}, strings.Fields(lines[2]))
	assert.Equal(t, []string{"app/c", "3", `"line1\nline2"`}, strings.Fields(lines[3]), "control characters are quoted")

	r = c.kvctl("list", "app/", "--limit", "2")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Len(t, strings.Split(strings.TrimRight(r.stdout, "\n"), "\n"), 3)
	assert.Contains(t, r.stderr, "more keys follow")

	r = c.kvctl("list")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Len(t, strings.Split(strings.TrimRight(r.stdout, "\n"), "\n"), 5, "no prefix lists every key")

	r = c.kvctl("list", "zzz")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stdout)
	assert.Contains(t, r.stderr, `no keys with prefix "zzz"`)

	r = c.kvctl("-o", "json", "list", "app/", "--limit", "1")
	require.Equal(t, 0, r.code, r.stderr)
	assert.JSONEq(t, `{"prefix":"app/","kvs":[{"key":"app/a","value":"1","version":2}],"more":true,"revision":4}`, r.stdout)

	r = c.kvctl("list", "app/", "--limit", "-1")
	assert.Equal(t, 2, r.code)
	r = c.kvctl("list", "a", "b")
	assert.Equal(t, 2, r.code)
}

func TestListManyPages(t *testing.T) {
	c := startCluster(t)
	// Write with the client library: a kvctl run per key would be slow.
	cl, err := client.New(client.Config{Endpoints: strings.Split(c.endpoints(), ",")})
	require.NoError(t, err)
	defer cl.Close()
	const n = 1100
	for i := range n {
		_, err := cl.Put(context.Background(), []byte(fmt.Sprintf("p/%05d", i)), []byte("v"))
		require.NoError(t, err)
	}
	r := c.kvctl("-o", "json", "list", "p/")
	require.Equal(t, 0, r.code, r.stderr)
	var out listJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	assert.Len(t, out.KVs, n)
	assert.False(t, out.More)
}

func TestStatus(t *testing.T) {
	c := startCluster(t)

	r := c.kvctl("status")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	require.Len(t, lines, 4)
	assert.Equal(t, []string{"ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER"}, strings.Fields(lines[0]))
	assert.Equal(t, []string{"1", c.nodes[0].Addr(), "leader", "1", "0", "0", "1"}, strings.Fields(lines[1]))
	assert.Equal(t, []string{"2", c.nodes[1].Addr(), "follower", "1", "0", "0", "1"}, strings.Fields(lines[2]))

	c.nodes[1].Stop()
	r = c.kvctl("status")
	require.Equal(t, 0, r.code, "some members answered")
	lines = strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	assert.Equal(t, []string{"-", c.nodes[1].Addr(), "unreachable", "-", "-", "-", "-"}, strings.Fields(lines[2]))
	assert.Contains(t, r.stderr, c.nodes[1].Addr()+": ")

	r = c.kvctl("-o", "json", "status")
	require.Equal(t, 0, r.code, r.stderr)
	var out statusJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.Len(t, out.Members, 3)
	assert.True(t, out.Members[0].Reachable)
	assert.Equal(t, "leader", out.Members[0].Role)
	assert.False(t, out.Members[1].Reachable)
	assert.NotEmpty(t, out.Members[1].Error)

	c.nodes[0].Stop()
	c.nodes[2].Stop()
	r = c.kvctl("status")
	assert.Equal(t, 3, r.code)
	assert.Contains(t, r.stderr, "no member answered at "+strings.ReplaceAll(c.endpoints(), ",", ", ")+": is the cluster running? try make cluster-start")
}

func TestNoMemberAnswers(t *testing.T) {
	c := startCluster(t)
	for _, n := range c.nodes {
		n.Stop()
	}
	for _, args := range [][]string{{"put", "k", "v"}, {"get", "k"}, {"delete", "k"}, {"cas", "k", "0", "v"}, {"list", "k"}} {
		r := c.kvctl(args...)
		assert.Equal(t, 3, r.code, "%v: %s", args, r.stderr)
		assert.Contains(t, r.stderr, "no member answered at "+c.nodes[0].Addr(), args)
		assert.Contains(t, r.stderr, "try make cluster-start", args)
	}
}

// With members 1 and 2 down and member 3 up but without a leader, the
// cluster has lost its quorum: kvctl says so and names the member that
// answered, rather than asking whether the cluster runs at all.
func TestLostQuorum(t *testing.T) {
	c := startCluster(t)
	c.nodes[0].Stop()
	c.nodes[1].Stop()
	c.nodes[2].Fail("", codes.Unavailable, "no leader is known right now (an election may be under way); retry shortly", 1000)
	r := c.kvctl("put", "q", "1")
	assert.Equal(t, 3, r.code, r.stderr)
	assert.Contains(t, r.stderr, "no leader: a quorum of members is not reachable (1 of 3 answered: "+c.nodes[2].Addr()+")")
	assert.NotContains(t, r.stderr, "make cluster-start")
}

func TestTimeout(t *testing.T) {
	c := startCluster(t)
	for _, n := range c.nodes {
		h := n.Hold()
		defer h.Release()
	}
	r := c.kvctl("--timeout", "100ms", "get", "k")
	assert.Equal(t, 3, r.code)
	assert.Contains(t, r.stderr, "timed out after 100ms")
}

func TestServerRefusal(t *testing.T) {
	c := startCluster(t)
	r := c.kvctl("put", "", "v")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "key is empty", "the server's message reaches the user")

	r = c.kvctl("get", strings.Repeat("k", fakekv.MaxKeySize+1))
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "over the limit")
}

func TestUsageErrors(t *testing.T) {
	c := startCluster(t)
	for _, args := range [][]string{
		{"put", "k"},
		{"put", "k", "v", "extra"},
		{"get"},
		{"cas", "k", "1"},
		{"status", "extra"},
		{"frobnicate"},
		{"get", "--bogus", "k"},
		{"--output", "xml", "get", "k"},
		{"--timeout", "0s", "get", "k"},
		{"--timeout", "soon", "get", "k"},
		{"--cert", "c.pem", "get", "k"},
		{"--cacert", "/nonexistent/ca.pem", "get", "k"},
		{"get", "k", "--endpoints", " , "},
	} {
		r := kvctl(nil, append([]string{"--endpoints", c.endpoints()}, args...)...)
		assert.Equal(t, 2, r.code, "%v: stdout %q stderr %q", args, r.stdout, r.stderr)
		assert.Contains(t, r.stderr, "--help' for usage", args)
	}
	assert.Zero(t, c.nodes[0].Calls("")+c.nodes[1].Calls("")+c.nodes[2].Calls(""), "usage errors reach no member")

	r := kvctl(nil, "--help")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "Usage:")
	assert.Contains(t, r.stdout, "Exit codes")
}

// Values too large for the command line, or not text, come from stdin
// (VALUE -) or a file (--from-file), byte for byte.
func TestValueFromStdinOrFile(t *testing.T) {
	c := startCluster(t)
	r := kvctlStdin(nil, "from\x00stdin\n", "--endpoints", c.endpoints(), "put", "k", "-")
	require.Equal(t, 0, r.code, r.stderr)
	v, _ := c.store.Value("k")
	assert.Equal(t, "from\x00stdin\n", string(v))

	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	file := filepath.Join(t.TempDir(), "value")
	require.NoError(t, os.WriteFile(file, big, 0o600))
	r = c.kvctl("put", "big", "--from-file", file)
	require.Equal(t, 0, r.code, r.stderr)
	v, version := c.store.Value("big")
	assert.Equal(t, big, v)

	r = c.kvctl("cas", "big", fmt.Sprint(version), "--from-file", file)
	require.Equal(t, 0, r.code, r.stderr)
	_, version = c.store.Value("big")
	r = kvctlStdin(nil, "new", "--endpoints", c.endpoints(), "cas", "big", fmt.Sprint(version), "-")
	require.Equal(t, 0, r.code, r.stderr)
	v, _ = c.store.Value("big")
	assert.Equal(t, "new", string(v))

	// Over the server's limit: the server says so (the shell did before).
	r = kvctlStdin(nil, strings.Repeat("x", 2<<20), "--endpoints", c.endpoints(), "put", "huge", "-")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "over the limit")

	for _, args := range [][]string{
		{"put", "k", "v", "--from-file", file},
		{"put", "--from-file", file},
		{"put", "k", "--from-file", filepath.Join(t.TempDir(), "missing")},
		{"cas", "k", "--from-file", file},
	} {
		r = c.kvctl(args...)
		assert.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
	}
}

func TestVersion(t *testing.T) {
	r := kvctl(nil, "--version")
	require.Equal(t, 0, r.code, r.stderr)
	assert.True(t, strings.HasPrefix(r.stdout, "kvctl "), r.stdout)
	assert.Contains(t, r.stdout, runtime.Version())
}

// Endpoints as etcdctl users write them.
func TestEndpointsWithAScheme(t *testing.T) {
	c := startCluster(t)
	urls := "http://" + strings.ReplaceAll(c.endpoints(), ",", ",http://")
	r := kvctl(nil, "--endpoints", urls, "put", "k", "v")
	require.Equal(t, 0, r.code, r.stderr)

	r = kvctl(nil, "--endpoints", "https://"+c.nodes[0].Addr(), "get", "k")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "https:// needs TLS: give --cacert")
}

// A command group refuses a subcommand it does not have, as the top level
// does, and an unknown flag is named as such wherever it stands.
func TestUnknownSubcommandsAndFlags(t *testing.T) {
	for _, args := range [][]string{{"member", "lst"}, {"snapshot", "lst"}, {"member"}, {"snapshot"}, {"frobnicate"}} {
		r := kvctl(nil, args...)
		assert.Equal(t, 2, r.code, "%v: stdout %q stderr %q", args, r.stdout, r.stderr)
		assert.Empty(t, r.stdout, args)
	}
	r := kvctl(nil, "member", "lst")
	assert.Contains(t, r.stderr, `unknown member command "lst" (did you mean list?)`)

	for _, args := range [][]string{{"--bogus", "get", "k"}, {"get", "--bogus", "k"}, {"--endpoints", "127.0.0.1:1", "--bogus", "get", "k"}} {
		r := kvctl(nil, args...)
		assert.Equal(t, 2, r.code, args)
		assert.Contains(t, r.stderr, "unknown flag: --bogus", args)
		assert.NotContains(t, r.stderr, "unknown command", args)
	}
}

func TestEnvironmentSetsDefaults(t *testing.T) {
	c := startCluster(t)
	env := map[string]string{"KVCTL_ENDPOINTS": c.endpoints(), "KVCTL_OUTPUT": "json"}
	r := kvctl(env, "put", "k", "v")
	require.Equal(t, 0, r.code, r.stderr)
	assert.JSONEq(t, `{"key":"k","version":1,"existed":false,"revision":1}`, r.stdout)

	// A flag on the command line wins over the environment.
	r = kvctl(env, "--output", "table", "get", "k")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "v\n", r.stdout)

	r = kvctl(map[string]string{"KVCTL_ENDPOINTS": c.endpoints(), "KVCTL_TIMEOUT": "later"}, "get", "k")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "KVCTL_TIMEOUT")
}
