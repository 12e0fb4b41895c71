package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/server/testpki"
)

// startClusterWith runs n members on loopback like newTestCluster, but lets
// configure adjust each member's Config (TLS, a restore) before it is
// created, and dials the client ports with dial.
func startClusterWith(t *testing.T, n int, configure func(id core.NodeID, cfg *Config), dial grpc.DialOption) *testCluster {
	t.Helper()
	c := &testCluster{t: t, dir: t.TempDir(), members: map[core.NodeID]string{}, clients: map[core.NodeID]string{},
		servers: map[core.NodeID]*Server{}, conns: map[core.NodeID]apipb.KVClient{}}
	for i := 1; i <= n; i++ {
		c.members[core.NodeID(i)] = freeAddr(t)
		c.clients[core.NodeID(i)] = freeAddr(t)
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			s.Stop(context.Background())
		}
	})
	for id := range c.members {
		cfg := Config{
			ID: id, DataDir: filepath.Join(c.dir, fmt.Sprint(id)), ClientAddr: c.clients[id], PeerAddr: c.members[id],
			InitialCluster: c.members, HeartbeatInterval: 20 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		}
		if configure != nil {
			configure(id, &cfg)
		}
		s, err := New(cfg)
		require.NoError(t, err)
		s.Start()
		c.servers[id] = s
		conn, err := grpc.NewClient(c.clients[id], dial)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		c.conns[id] = apipb.NewKVClient(conn)
	}
	return c
}

// pki is one cluster's certificates: a CA, a certificate for each member's
// client port, one for a client application, and peer certificates made
// per member (they name its id) once the cluster id is known.
type pki struct {
	ca                  *testpki.CA
	peerCert, peerKey   string // names no member: refused as a peer
	serveCert, serveKey string
	appCert, appKey     string
	cluster             uint64 // of the last bootstrapping member secured
}

func newPKI(t *testing.T) *pki {
	p := &pki{ca: testpki.NewCA(t, "keyval-test")}
	p.peerCert, p.peerKey = p.ca.Issue(t, "peer", "127.0.0.1")
	p.serveCert, p.serveKey = p.ca.Issue(t, "client-port", "127.0.0.1", "localhost")
	p.appCert, p.appKey = p.ca.Issue(t, "app", "app.example")
	return p
}

// clusterIDOf is the cluster id cfg makes once its defaults are in.
func clusterIDOf(cfg Config) uint64 {
	if cfg.ClusterToken == "" {
		cfg.ClusterToken = DefaultClusterToken
	}
	return cfg.ClusterID()
}

// member issues the peer certificate of member id of cluster, on 127.0.0.1.
func (p *pki) member(t *testing.T, cluster uint64, id core.NodeID) TLSFiles {
	cert, key := p.ca.IssueMember(t, fmt.Sprintf("member-%d", id), cluster, id, "127.0.0.1")
	return TLSFiles{CertFile: cert, KeyFile: key, CAFile: p.ca.File}
}

// secure turns on TLS for clients (certificates required) and mutual TLS
// between members, each with a certificate naming it. A joining member
// (no initial cluster) gets one for the cluster secured before it.
func (p *pki) secure(t *testing.T) func(core.NodeID, *Config) {
	return func(id core.NodeID, cfg *Config) {
		var err error
		cfg.ClientTLS, err = ClientTLS(TLSFiles{CertFile: p.serveCert, KeyFile: p.serveKey, CAFile: p.ca.File})
		require.NoError(t, err)
		if len(cfg.InitialCluster) > 0 {
			p.cluster = clusterIDOf(*cfg)
		}
		cfg.PeerServerTLS, cfg.PeerClientTLS, err = PeerTLS(p.member(t, p.cluster, id))
		require.NoError(t, err)
	}
}

func tlsDial(t *testing.T, caFile, certFile, keyFile string) grpc.DialOption {
	cfg, err := client.TLSConfig(caFile, certFile, keyFile)
	require.NoError(t, err)
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// statusVia asks addr for its status over a fresh connection with dial.
func statusVia(t *testing.T, addr string, dial grpc.DialOption) error {
	conn, err := grpc.NewClient(addr, dial)
	require.NoError(t, err)
	defer conn.Close()
	c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = apipb.NewKVClient(conn).Status(c, &apipb.StatusRequest{}, grpc.WaitForReady(false))
	return err
}

// TestMutualTLSClusterServesPutGet: with TLS on the client port and mutual
// TLS between members, writes through every member (followers forward to
// the leader over the peer port, with the peer certificate) are read back
// from every member.
func TestMutualTLSClusterServesPutGet(t *testing.T) {
	p := newPKI(t)
	c := startClusterWith(t, 3, p.secure(t), tlsDial(t, p.ca.File, p.appCert, p.appKey))
	lead := c.leader()
	for id := range c.members {
		eventually(t, func() error {
			_, err := c.conns[id].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%d", id)), Value: []byte("v")})
			return err
		})
	}
	for id := range c.members {
		for w := range c.members {
			eventually(t, func() error { // retried only if the read fails (a leader change)
				resp, err := c.conns[id].Get(ctx(t), &apipb.GetRequest{Key: []byte(fmt.Sprintf("k%d", w))})
				if err == nil {
					require.True(t, resp.Found, "node %d reading k%d (leader %d)", id, w, lead)
				}
				return err
			})
		}
	}

	// The Go client with the matching options.
	kc, err := client.New(client.Config{Endpoints: []string{c.clients[1], c.clients[2], c.clients[3]}, TLS: mustTLS(t, p.ca.File, p.appCert, p.appKey)})
	require.NoError(t, err)
	defer kc.Close()
	_, err = kc.Put(ctx(t), []byte("via-client"), []byte("x"))
	require.NoError(t, err)
	got, err := kc.Get(ctx(t), []byte("via-client"))
	require.NoError(t, err)
	require.Equal(t, "x", string(got.Value))
}

func mustTLS(t *testing.T, ca, cert, key string) *tls.Config {
	cfg, err := client.TLSConfig(ca, cert, key)
	require.NoError(t, err)
	return cfg
}

// TestTLSRefusals: a client without a certificate, a plaintext client and
// a peer with a certificate of another CA are refused; the same calls with
// the right credentials succeed (so the refusals are about the
// credentials).
func TestTLSRefusals(t *testing.T) {
	p := newPKI(t)
	c := startClusterWith(t, 3, p.secure(t), tlsDial(t, p.ca.File, p.appCert, p.appKey))
	c.leader()
	clientAddr, peerAddr := c.clients[1], c.members[1]

	require.NoError(t, statusVia(t, clientAddr, tlsDial(t, p.ca.File, p.appCert, p.appKey)))
	err := statusVia(t, clientAddr, tlsDial(t, p.ca.File, "", ""))
	require.Equal(t, codes.Unavailable, status.Code(err), "a client without a certificate: %v", err)
	err = statusVia(t, clientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.Equal(t, codes.Unavailable, status.Code(err), "a plaintext client: %v", err)

	// The peer port (which also takes forwarded client requests).
	require.NoError(t, statusVia(t, peerAddr, tlsDial(t, p.ca.File, p.peerCert, p.peerKey)))
	rogue := testpki.NewCA(t, "rogue")
	rogueCert, rogueKey := rogue.Issue(t, "intruder", "127.0.0.1")
	err = statusVia(t, peerAddr, tlsDial(t, p.ca.File, rogueCert, rogueKey))
	require.Equal(t, codes.Unavailable, status.Code(err), "a peer certificate of another CA: %v", err)
	err = statusVia(t, peerAddr, tlsDial(t, p.ca.File, "", ""))
	require.Equal(t, codes.Unavailable, status.Code(err), "a peer without a certificate: %v", err)
}

// TestPeerWithBadCertificateKeptOut: a member whose peer certificate comes
// from another CA, or from the right CA but naming another host than its
// peer address, never joins: the two others elect a leader and serve
// writes, and it never hears from them.
func TestPeerWithBadCertificateKeptOut(t *testing.T) {
	p := newPKI(t)
	rogue := testpki.NewCA(t, "rogue")
	rogueCert, rogueKey := rogue.Issue(t, "peer", "127.0.0.1")
	for name, files := range map[string]TLSFiles{
		"another CA":   {CertFile: rogueCert, KeyFile: rogueKey, CAFile: rogue.File},
		"another host": {CAFile: p.ca.File}, // a certificate of node 3 for 10.9.9.9, issued below
	} {
		t.Run(name, func(t *testing.T) {
			secure := p.secure(t)
			c := startClusterWith(t, 3, func(id core.NodeID, cfg *Config) {
				secure(id, cfg)
				if name == "another host" {
					files.CertFile, files.KeyFile = p.ca.IssueMember(t, "stranger", clusterIDOf(*cfg), 3, "10.9.9.9")
				}
				if id == 3 {
					var err error
					cfg.PeerServerTLS, cfg.PeerClientTLS, err = PeerTLS(files)
					require.NoError(t, err)
				}
			}, tlsDial(t, p.ca.File, p.appCert, p.appKey))
			lead := c.leader()
			require.NotEqual(t, core.NodeID(3), lead)
			eventually(t, func() error {
				_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("k"), Value: []byte("v")})
				return err
			})
			st, err := c.conns[3].Status(ctx(t), &apipb.StatusRequest{})
			require.NoError(t, err)
			require.Zero(t, st.LeaderId, "node 3 must not hear from the leader")
			require.Zero(t, st.Commit, "node 3 must not receive entries")
		})
	}
}

func TestTLSConfigErrors(t *testing.T) {
	p := newPKI(t)
	_, _, err := PeerTLS(TLSFiles{CertFile: p.peerCert, KeyFile: p.peerKey})
	require.ErrorContains(t, err, "--peer-ca-file is required")
	_, err = ClientTLS(TLSFiles{CAFile: p.ca.File})
	require.ErrorContains(t, err, "--client-cert-file and --client-key-file go together")
	_, err = ClientTLS(TLSFiles{CertFile: p.serveCert, KeyFile: p.appKey})
	require.ErrorContains(t, err, "--client-cert-file")
	_, _, err = PeerTLS(TLSFiles{CertFile: p.peerCert, KeyFile: p.peerKey, CAFile: p.peerKey})
	require.ErrorContains(t, err, "holds no PEM certificate")
	cfg, err := ClientTLS(TLSFiles{})
	require.NoError(t, err)
	require.Nil(t, cfg, "no files: plaintext")
}

// TestJoinWithMutualTLS: a member added while the cluster runs joins over
// TLS (--join reaches the client ports with JoinTLS) and then replicates
// over mutual TLS, although no member knew its address at start.
func TestJoinWithMutualTLS(t *testing.T) {
	p := newPKI(t)
	secure := p.secure(t)
	dial := tlsDial(t, p.ca.File, p.appCert, p.appKey)
	c := startClusterWith(t, 3, secure, dial)
	lead := c.leader()
	eventually(t, func() error {
		_, err := c.conns[lead].Put(ctx(t), &apipb.PutRequest{Key: []byte("before-join"), Value: []byte("v")})
		return err
	})
	conn, err := grpc.NewClient(c.clients[lead], dial)
	require.NoError(t, err)
	defer conn.Close()
	c.members[4], c.clients[4] = freeAddr(t), freeAddr(t)
	eventually(t, func() error {
		_, err := apipb.NewClusterClient(conn).MemberAddLearner(ctx(t), &apipb.MemberAddLearnerRequest{Id: 4, PeerAddr: c.members[4]})
		return err
	})

	cfg := Config{ID: 4, DataDir: filepath.Join(c.dir, "4"), ClientAddr: c.clients[4], PeerAddr: c.members[4],
		Join: []string{c.clients[1], c.clients[2], c.clients[3]}, JoinTLS: mustTLS(t, p.ca.File, p.appCert, p.appKey),
		HeartbeatInterval: 20 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	secure(4, &cfg)
	s, err := New(cfg)
	require.NoError(t, err)
	s.Start()
	c.servers[4] = s
	conn4, err := grpc.NewClient(c.clients[4], dial)
	require.NoError(t, err)
	defer conn4.Close()
	eventually(t, func() error {
		g, err := apipb.NewKVClient(conn4).Get(ctx(t), &apipb.GetRequest{Key: []byte("before-join"), Serializable: true})
		if err == nil && !g.Found {
			return fmt.Errorf("not replicated to the new member yet")
		}
		return err
	})
}

// TestTLSClientPortServesHTTPS checks a TLS client port answers HTTP/1.1
// over TLS beside gRPC: etcd's probes and /metrics to a client with a
// certificate (an HTTP client that also offers h2, as curl does, included),
// none without one, and the JSON gateway refused; and that gRPC calls there
// still see the client's certificate: with auth on, it names the user,
// also for a gRPC client that offers http/1.1 too (whose calls come by
// way of the HTTP server).
func TestTLSClientPortServesHTTPS(t *testing.T) {
	p := newPKI(t)
	secure := p.secure(t)
	c := startClusterWith(t, 3, func(id core.NodeID, cfg *Config) {
		secure(id, cfg)
		cfg.BcryptCost = 4 // the least, for a test's passwords
	}, tlsDial(t, p.ca.File, p.appCert, p.appKey))
	c.leader()
	addr := c.clients[1]

	proto := 0 // the HTTP major version of the last answer
	get := func(cfg *tls.Config, h2 bool, method, path string) (int, string, error) {
		tr := &http.Transport{TLSClientConfig: cfg.Clone(), ForceAttemptHTTP2: h2}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx(t), method, "https://"+addr+path, strings.NewReader("{}"))
		require.NoError(t, err)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		proto = resp.ProtoMajor
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	withCert := mustTLS(t, p.ca.File, p.appCert, p.appKey)
	for _, h2 := range []bool{false, true} {
		code, body, err := get(withCert, h2, http.MethodGet, "/health")
		require.NoError(t, err, "h2 offered: %v", h2)
		require.Equal(t, http.StatusOK, code, body)
		require.Contains(t, body, `"health":"true"`)
		require.Equal(t, map[bool]int{false: 1, true: 2}[h2], proto, "HTTP/2 when offered")
	}
	code, body, err := get(withCert, false, http.MethodGet, "/metrics")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "keyval_")
	code, body, err = get(withCert, false, http.MethodPost, "/v3/kv/range")
	require.NoError(t, err)
	require.Equal(t, http.StatusNotImplemented, code, body)
	_, _, err = get(mustTLS(t, p.ca.File, "", ""), false, http.MethodGet, "/health")
	require.Error(t, err, "a client without a certificate")

	// With auth on, the certificate's common name ("app") is the user.
	// (Setting it up takes several writes, each a bcrypt hash or a
	// proposal: a loaded machine may need more than ctx's 3 s for one.)
	setup, cancelSetup := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelSetup()
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, TLS: withCert, DialTimeout: 5 * time.Second,
		Logger: zap.NewNop()})
	require.NoError(t, err)
	defer root.Close()
	_, err = root.UserAdd(setup, "root", "rootpw")
	require.NoError(t, err)
	_, err = root.UserGrantRole(setup, "root", "root")
	require.NoError(t, err)
	_, err = root.UserAddWithOptions(setup, "app", "", &clientv3.UserAddOptions{NoPassword: true})
	require.NoError(t, err)
	_, err = root.RoleAdd(setup, "apps")
	require.NoError(t, err)
	_, err = root.RoleGrantPermission(setup, "apps", "app/", clientv3.GetPrefixRangeEnd("app/"), clientv3.PermissionType(clientv3.PermReadWrite))
	require.NoError(t, err)
	_, err = root.UserGrantRole(setup, "app", "apps")
	require.NoError(t, err)
	_, err = root.AuthEnable(setup)
	require.NoError(t, err)

	both := withCert.Clone()
	both.NextProtos = []string{"h2", "http/1.1"}
	for _, cfg := range []*tls.Config{withCert, both} {
		app, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, TLS: cfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		require.NoError(t, err)
		defer app.Close()
		eventually(t, func() error {
			_, err := app.Put(ctx(t), "app/x", "1")
			return err
		})
		_, err = app.Put(ctx(t), "other", "1")
		require.ErrorIs(t, err, rpctypes.ErrPermissionDenied, "offering %v", cfg.NextProtos)
	}
}
