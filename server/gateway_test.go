package server

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// gatewayCluster is three members, each serving the JSON gateway; gw is a
// follower's, so writes through it are forwarded to the leader.
func gatewayCluster(t *testing.T) (c *testCluster, gw string) {
	c = newTestCluster(t, 0, 0)
	for i := 1; i <= 3; i++ {
		c.members[core.NodeID(i)], c.clients[core.NodeID(i)] = freeAddr(t), freeAddr(t)
	}
	for id := range c.members {
		c.startWith(id, Config{InitialCluster: c.members, ClientHTTPAddr: freeAddr(t), BcryptCost: 4})
	}
	follower := c.leader()%3 + 1
	return c, c.servers[follower].ClientHTTPAddr()
}

// post sends body as JSON to the gateway, as curl -d would, and decodes
// the answer.
func post(t *testing.T, addr, path string, body map[string]any, token string) (int, map[string]any) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(ctx(t), http.MethodPost, "http://"+addr+path, bytes.NewReader(b))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := map[string]any{}
	require.NoError(t, json.Unmarshal(raw, &out), "answer %s", raw)
	return resp.StatusCode, out
}

// ok posts and insists on 200.
func ok(t *testing.T, addr, path string, body map[string]any, token string) map[string]any {
	t.Helper()
	code, out := post(t, addr, path, body, token)
	require.Equal(t, http.StatusOK, code, "%s: %v", path, out)
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// field follows a path of object keys and array indexes through decoded
// JSON, failing the test where it does not lead anywhere.
func field(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, isMap := v.(map[string]any)
			require.True(t, isMap, "%v at %q is not an object", v, k)
			v = m[k]
		case int:
			a, isArray := v.([]any)
			require.True(t, isArray && k < len(a), "%v has no element %d", v, k)
			v = a[k]
		}
	}
	return v
}

// revision reads an answer's header revision (an int64: a JSON string).
func revision(t *testing.T, resp map[string]any) int64 {
	t.Helper()
	r, err := strconv.ParseInt(fmt.Sprint(field(t, resp, "header", "revision")), 10, 64)
	require.NoError(t, err)
	return r
}

// TestGateway drives etcd's JSON gateway with plain HTTP, as curl would:
// put, range by key and prefix (base64 bytes), a transaction whose compare
// holds and one whose compare fails, deleterange, compaction and a read of
// the compacted past, maintenance status, a body over the bound, a lease
// granted, put with, asked about and revoked, and etcd's error for an
// empty key with its HTTP code.
func TestGateway(t *testing.T) {
	_, gw := gatewayCluster(t)
	eventually(t, func() error { // until the follower knows the leader
		if code, out := post(t, gw, "/v3/kv/put", map[string]any{"key": b64("/app/a"), "value": b64("1")}, ""); code != http.StatusOK {
			return fmt.Errorf("put: %d %v", code, out)
		}
		return nil
	})
	put := ok(t, gw, "/v3/kv/put", map[string]any{"key": b64("/app/b"), "value": b64("2"), "prev_kv": true}, "")
	first := revision(t, put)
	require.Nil(t, put["prev_kv"], "a new key has no previous value")

	got := ok(t, gw, "/v3/kv/range", map[string]any{"key": b64("/app/a")}, "")
	require.Equal(t, b64("1"), field(t, got, "kvs", 0, "value"))
	require.Equal(t, "1", field(t, got, "count"))
	prefix := ok(t, gw, "/v3/kv/range", map[string]any{"key": b64("/app/"), "range_end": b64("/app0")}, "")
	require.Equal(t, "2", field(t, prefix, "count"))
	require.Equal(t, b64("/app/b"), field(t, prefix, "kvs", 1, "key"))

	txn := func(want string) map[string]any {
		return ok(t, gw, "/v3/kv/txn", map[string]any{
			"compare": []any{map[string]any{"key": b64("/app/a"), "target": "VALUE", "result": "EQUAL", "value": b64(want)}},
			"success": []any{map[string]any{"request_put": map[string]any{"key": b64("/app/c"), "value": b64("then")}}},
			"failure": []any{map[string]any{"request_range": map[string]any{"key": b64("/app/a")}}},
		}, "")
	}
	then := txn("1")
	require.Equal(t, true, then["succeeded"])
	require.Equal(t, first+1, revision(t, then), "a transaction that writes is one revision")
	otherwise := txn("nope")
	require.Nil(t, otherwise["succeeded"], "false is left out, as etcd's gateway leaves it")
	require.Equal(t, b64("1"), field(t, otherwise, "responses", 0, "response_range", "kvs", 0, "value"))

	del := ok(t, gw, "/v3/kv/deleterange", map[string]any{"key": b64("/app/c"), "prev_kv": true}, "")
	require.Equal(t, "1", field(t, del, "deleted"))
	require.Equal(t, b64("then"), field(t, del, "prev_kvs", 0, "value"))
	last := revision(t, del)

	ok(t, gw, "/v3/kv/compaction", map[string]any{"revision": last, "physical": true}, "")
	code, compacted := post(t, gw, "/v3/kv/range", map[string]any{"key": b64("/app/a"), "revision": first}, "")
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "etcdserver: mvcc: required revision has been compacted", compacted["message"])

	st := ok(t, gw, "/v3/maintenance/status", map[string]any{}, "")
	require.Equal(t, etcdVersion, st["version"])
	require.NotEmpty(t, field(t, st, "header", "member_id"))
	require.NotEmpty(t, st["leader"])

	huge := strings.Repeat("A", 2*DefaultMaxRequestBytes+128<<10)
	code, tooLong := post(t, gw, "/v3/kv/put", map[string]any{"key": b64("big"), "value": huge}, "")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, tooLong["message"], "request body too large", "refused before its call is made")

	lease := ok(t, gw, "/v3/lease/grant", map[string]any{"TTL": 60}, "")
	require.Equal(t, "60", lease["TTL"])
	id := lease["ID"]
	ok(t, gw, "/v3/kv/put", map[string]any{"key": b64("/leased"), "value": b64("v"), "lease": id}, "")
	left := ok(t, gw, "/v3/lease/timetolive", map[string]any{"ID": id, "keys": true}, "")
	require.Equal(t, "60", left["grantedTTL"])
	require.Equal(t, b64("/leased"), field(t, left, "keys", 0))
	ok(t, gw, "/v3/lease/revoke", map[string]any{"ID": id}, "")
	code, gone := post(t, gw, "/v3/kv/range", map[string]any{"key": b64("/leased")}, "")
	require.Equal(t, http.StatusOK, code)
	require.Nil(t, gone["kvs"], "revoking the lease deleted its key")

	code, refused := post(t, gw, "/v3/kv/put", map[string]any{"value": b64("no key")}, "")
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "etcdserver: key is not provided", refused["message"])
	require.Equal(t, float64(3), refused["code"], "InvalidArgument, as etcd answers")
}

// TestGatewayAuth sets up auth through the gateway and checks that the
// token /v3/auth/authenticate returns, sent back as the Authorization
// header, is who the call is made as; without it, or with a forged one,
// the call is refused.
func TestGatewayAuth(t *testing.T) {
	_, gw := gatewayCluster(t)
	eventually(t, func() error {
		if code, out := post(t, gw, "/v3/auth/user/add", map[string]any{"name": "root", "password": "rootpw"}, ""); code != http.StatusOK {
			return fmt.Errorf("user add: %d %v", code, out)
		}
		return nil
	})
	ok(t, gw, "/v3/auth/user/grant", map[string]any{"user": "root", "role": "root"}, "")
	ok(t, gw, "/v3/auth/enable", map[string]any{}, "")

	code, _ := post(t, gw, "/v3/auth/authenticate", map[string]any{"name": "root", "password": "wrong"}, "")
	require.Equal(t, http.StatusBadRequest, code)
	login := ok(t, gw, "/v3/auth/authenticate", map[string]any{"name": "root", "password": "rootpw"}, "")
	token, _ := login["token"].(string)
	require.NotEmpty(t, token)

	ok(t, gw, "/v3/kv/put", map[string]any{"key": b64("k"), "value": b64("v")}, token)
	got := ok(t, gw, "/v3/kv/range", map[string]any{"key": b64("k")}, token)
	require.Equal(t, b64("v"), field(t, got, "kvs", 0, "value"))
	got = ok(t, gw, "/v3/kv/range", map[string]any{"key": b64("k")}, "Bearer "+token)
	require.Equal(t, b64("v"), field(t, got, "kvs", 0, "value"), "as a bearer token, as etcd takes it")

	code, _ = post(t, gw, "/v3/kv/range", map[string]any{"key": b64("k")}, "")
	require.NotEqual(t, http.StatusOK, code, "no token, no read")
	code, forged := post(t, gw, "/v3/kv/range", map[string]any{"key": b64("k")}, token+"x")
	require.Equal(t, http.StatusUnauthorized, code, "%v", forged)
}

// TestGatewayRefusedWithClientTLS: the gateway would be a plaintext door
// beside a TLS client port, so a node configured so does not start.
func TestGatewayRefusedWithClientTLS(t *testing.T) {
	addr := freeAddr(t)
	_, err := New(Config{ID: 1, DataDir: t.TempDir(), ClientAddr: freeAddr(t), PeerAddr: addr, ClientHTTPAddr: freeAddr(t),
		InitialCluster: map[core.NodeID]string{1: addr}, ClientTLS: &tls.Config{}})
	require.ErrorIs(t, err, errGatewayTLS)
}

func TestGatewayDialsLoopbackForAnUnspecifiedHost(t *testing.T) {
	require.Equal(t, "127.0.0.1:2379", dialable("0.0.0.0:2379"))
	require.Equal(t, "[::1]:2379", dialable("[::]:2379"))
	require.Equal(t, "127.0.0.1:2379", dialable("127.0.0.1:2379"))
}

// TestGatewayServesEtcdProbes: the gateway's port answers etcd's probes,
// as etcd's client URL does, beside the /v3 paths.
func TestGatewayServesEtcdProbes(t *testing.T) {
	_, gw := gatewayCluster(t)
	eventually(t, func() error {
		if code, h := getHealth(t, gw, ""); code != http.StatusOK || h.Health != "true" {
			return fmt.Errorf("/health: %d %+v", code, h)
		}
		return nil
	})
	for path, want := range map[string]string{"/livez": "ok\n", "/readyz": "ok\n",
		"/readyz?verbose": "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\nok\n"} {
		code, body := httpGet(t, gw, path)
		require.Equal(t, http.StatusOK, code, path)
		require.Equal(t, want, body, path)
	}
	code, out := post(t, gw, "/v3/kv/put", map[string]any{"key": "YQ==", "value": "MQ=="}, "")
	require.Equal(t, http.StatusOK, code, "%v", out)
}

// TestClientPortServesHTTP checks the plaintext client port serves, beside
// gRPC, what etcd serves there over HTTP/1: the JSON gateway, the probes,
// /version and /metrics; and that a connection that has sent nothing yet
// holds up neither kind.
func TestClientPortServesHTTP(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	follower := c.leader()%3 + 1
	addr := c.clients[follower]
	require.Empty(t, c.servers[follower].ClientHTTPAddr())

	silent, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer silent.Close()

	ok(t, addr, "/v3/kv/put", map[string]any{"key": b64("a"), "value": b64("1")}, "")
	out := ok(t, addr, "/v3/kv/range", map[string]any{"key": b64("a")}, "")
	require.Equal(t, b64("1"), field(t, out, "kvs", 0, "value"))

	cli := etcdClient(t, addr, "", "")
	got, err := cli.Get(ctx(t), "a")
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)
	require.Equal(t, "1", string(got.Kvs[0].Value))

	code, h := getHealth(t, addr, "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "true", h.Health)
	code, body := httpGet(t, addr, "/version")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `"etcdserver"`)
	code, body = httpGet(t, addr, "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "keyval_")
	code, _ = httpGet(t, addr, "/no/such/path")
	require.Equal(t, http.StatusNotFound, code)
	for _, path := range []string{"/health", "/livez", "/readyz", "/version"} {
		resp, err := http.Post("http://"+addr+path, "application/json", strings.NewReader("{}"))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s: GET only, as etcd's", path)
	}
}
