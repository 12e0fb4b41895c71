package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/net/peerpb"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// TestClusterIDMismatchRefused: a node of another cluster is refused with
// FailedPrecondition and a message that names both clusters; the sender
// reports the peer unreachable and nothing is delivered.
func TestClusterIDMismatchRefused(t *testing.T) {
	lis1, lis2 := listen(t), listen(t)
	peers := map[core.NodeID]string{1: lis1.Addr().String(), 2: lis2.Addr().String()}
	logs := &syncBuffer{}
	cfgA := testConfig(1, peers)
	cfgA.ClusterID = 100
	cfgA.Logger = newTextLogger(logs)
	a := startNode(t, cfgA, newRecorder(), lis1)
	b := startNode(t, testConfig(2, peers), newRecorder(), lis2) // cluster 7

	a.tr.Send([]core.Message{app(1, 2, 0, 8)})
	a.h.waitUnreachable(t, 2)
	eventually(t, "the refusal in the sender's log", func() bool {
		return strings.Contains(logs.String(), "cluster id mismatch")
	})
	if st := a.tr.Stats()[2]; st.Connected || st.Sent != 0 {
		t.Errorf("stream to a foreign cluster counted as live: %+v", st)
	}

	_, err := openRaw(t, b.addr, 100, 1, 2)
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "cluster id mismatch") ||
		!strings.Contains(st.Message(), "cluster 7") || !strings.Contains(st.Message(), "cluster 100") {
		t.Fatalf("refusal: %v", err)
	}
	select {
	case m := <-b.h.msgs:
		t.Fatalf("foreign message delivered: %v", m)
	default:
	}
}

func newTextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// openRaw opens a Messages stream with the given metadata and returns the
// stream and the error of its acceptance.
func openRaw(t *testing.T, addr string, cluster uint64, from, to core.NodeID) (peerpb.Peer_MessagesClient, error) {
	t.Helper()
	stream, err := rawConn(t, addr).Messages(streamCtx(t, cluster, from, to))
	if err != nil {
		return nil, err
	}
	return stream, awaitAccept(stream)
}

// finish sends batches on a raw stream and returns the stream's status.
func finish(stream peerpb.Peer_MessagesClient, batches ...*raftpb.Batch) error {
	for _, b := range batches {
		if err := stream.Send(b); err != nil {
			break
		}
	}
	_, err := stream.CloseAndRecv()
	return err
}

// TestMalformedInputIsAStreamError: misaddressed streams and messages,
// impostors and undecodable messages end that stream with an error status;
// the node keeps serving and delivers nothing from them.
func TestMalformedInputIsAStreamError(t *testing.T) {
	nodes := cluster(t, 2, nil)
	b := nodes[1]
	pb := func(m core.Message) *raftpb.Batch {
		return &raftpb.Batch{Messages: []*raftpb.Message{raftpb.FromCore(&m)}}
	}
	hb := core.Message{Type: core.MsgHeartbeat, From: 1, To: 2}

	if _, err := openRaw(t, b.addr, 7, 1, 3); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "meant for node 3") {
		t.Errorf("stream for another node: %v", err)
	}
	if _, err := openRaw(t, b.addr, 7, 0, 2); status.Code(err) != codes.InvalidArgument {
		t.Errorf("stream from node 0: %v", err)
	}
	if _, err := openRaw(t, b.addr, 7, 2, 2); status.Code(err) != codes.InvalidArgument {
		t.Errorf("stream from itself: %v", err)
	}
	if stream, err := rawConn(t, b.addr).Messages(t.Context()); err == nil {
		if err = awaitAccept(stream); status.Code(err) != codes.InvalidArgument {
			t.Errorf("stream without metadata: %v", err)
		}
	}

	cases := []struct {
		name  string
		batch *raftpb.Batch
		code  codes.Code
	}{
		{"unknown message type", &raftpb.Batch{Messages: []*raftpb.Message{{Type: 99, From: 1, To: 2}}}, codes.InvalidArgument},
		{"unknown entry type", &raftpb.Batch{Messages: []*raftpb.Message{{Type: raftpb.MessageType_MSG_APP, From: 1, To: 2,
			Entries: []*raftpb.Entry{{Type: 5}}}}}, codes.InvalidArgument},
		{"message for another node", pb(core.Message{Type: core.MsgHeartbeat, From: 1, To: 3}), codes.FailedPrecondition},
		{"impostor", pb(core.Message{Type: core.MsgHeartbeat, From: 3, To: 2}), codes.InvalidArgument},
	}
	for _, c := range cases {
		stream, err := openRaw(t, b.addr, 7, 1, 2)
		if err != nil {
			t.Fatalf("%s: open: %v", c.name, err)
		}
		if err := finish(stream, c.batch, pb(hb)); status.Code(err) != c.code {
			t.Errorf("%s: status %v, want %v", c.name, err, c.code)
		}
	}

	// Garbage bytes on the port: gRPC drops the connection; the node serves on.
	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x13garbage"))
	_, _ = io.Copy(io.Discard, conn) // until the server hangs up
	conn.Close()

	select {
	case m := <-b.h.msgs:
		t.Fatalf("a message from a refused stream was delivered: %v", m)
	default:
	}
	// A well-behaved stream still works, and delivers only valid messages.
	stream, err := openRaw(t, b.addr, 7, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	hb.Commit = 9
	if err := finish(stream, pb(hb)); err != nil {
		t.Fatalf("valid stream: %v", err)
	}
	if m := b.h.next(t); m.Commit != 9 {
		t.Fatalf("delivered %v", m)
	}
}

// TestMutualTLS: nodes with certificates from the cluster's CA talk; a
// client without a certificate is refused by the TLS handshake.
func TestMutualTLS(t *testing.T) {
	ca := newCA(t)
	nodes := cluster(t, 2, func(c *Config) {
		cert := ca.issue(t, c.ID)
		c.ServerTLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: ca.pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
		c.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.pool, MinVersion: tls.VersionTLS13}
	})
	a, b := nodes[0], nodes[1]
	a.tr.Send([]core.Message{app(1, 2, 0, 8)})
	if m := b.h.next(t); m.From != 1 {
		t.Fatalf("got %v", m)
	}
	b.tr.SendSnapshot(snapMsg(2, 1), readCloser(strings.NewReader("over tls")))
	if rep := b.h.waitSnapshotReport(t); !rep.ok {
		t.Fatal("snapshot over mTLS failed")
	}

	// A client that trusts the CA but has no certificate of its own.
	conn, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(
		credentials.NewTLS(&tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := peerpb.NewPeerClient(conn).Messages(streamCtx(t, 7, 1, 2))
	if err == nil {
		err = awaitAccept(stream)
	}
	if err == nil {
		t.Fatal("client without a certificate was accepted")
	}
	// And a plaintext client cannot speak to a TLS server at all.
	if _, err := openRaw(t, b.addr, 7, 1, 2); err == nil {
		t.Fatal("plaintext client was accepted")
	}
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "keyval test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue makes a certificate for a node, valid as server and client on
// 127.0.0.1, naming uris (MemberURI) as subject alternative names.
func (ca *testCA) issue(t *testing.T, id core.NodeID, uris ...*url.URL) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(id) + 1),
		Subject:      pkix.Name{CommonName: "node"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		URIs:         uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// refusals counts Config.Refused calls by reason.
type refusals struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *refusals) add(reason string, _ core.NodeID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[reason]++
}

func (r *refusals) count(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[reason]
}

// identityTLS is mutual TLS with PeerIdentity on for cfg, showing cert.
func identityTLS(cfg *Config, ca *testCA, cert tls.Certificate) {
	cfg.ServerTLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: ca.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	cfg.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.pool, MinVersion: tls.VersionTLS13}
	cfg.PeerIdentity = true
}

// tlsConn dials addr showing cert (none if nil), to play another peer.
func tlsConn(t *testing.T, addr string, ca *testCA, cert *tls.Certificate) peerpb.PeerClient {
	t.Helper()
	c := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(c)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return peerpb.NewPeerClient(conn)
}

// TestPeerIdentity: with PeerIdentity, members whose certificates name
// them talk; a stream is refused (PermissionDenied, counted by reason,
// nothing delivered) when the certificate names another member, no member,
// a member of another cluster, and a caller without a certificate is
// refused in the handshake (counted too).
func TestPeerIdentity(t *testing.T) {
	ca := newCA(t)
	var seen refusals
	nodes := cluster(t, 2, func(c *Config) {
		identityTLS(c, ca, ca.issue(t, c.ID, MemberURI(c.ClusterID, c.ID)))
		c.Refused = seen.add
	})
	a, b := nodes[0], nodes[1]
	a.tr.Send([]core.Message{app(1, 2, 0, 8)})
	if m := b.h.next(t); m.From != 1 {
		t.Fatalf("got %v", m)
	}
	b.tr.SendSnapshot(snapMsg(2, 1), readCloser(strings.NewReader("bound to node 2")))
	if rep := b.h.waitSnapshotReport(t); !rep.ok {
		t.Fatal("snapshot between members with identity failed")
	}

	hb := core.Message{Type: core.MsgHeartbeat, From: 1, To: 2, Term: 1}
	batch := &raftpb.Batch{Messages: []*raftpb.Message{raftpb.FromCore(&hb)}}
	cases := []struct {
		name, reason string
		cert         tls.Certificate
	}{
		{"certificate of node 3 claiming node 1", RefusedImpersonation, ca.issue(t, 3, MemberURI(7, 3))},
		{"certificate without a member URI", RefusedCertificate, ca.issue(t, 1)},
		{"certificate of node 1 of another cluster", RefusedCertificate, ca.issue(t, 1, MemberURI(8, 1))},
		{"certificate naming two members", RefusedCertificate, ca.issue(t, 1, MemberURI(7, 1), MemberURI(7, 3))},
	}
	for _, c := range cases {
		before := seen.count(c.reason)
		stream, err := tlsConn(t, b.addr, ca, &c.cert).Messages(streamCtx(t, 7, 1, 2))
		if err == nil {
			if err = awaitAccept(stream); err == nil {
				err = finish(stream, batch)
			}
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PermissionDenied", c.name, err)
		}
		if got := seen.count(c.reason); got != before+1 {
			t.Errorf("%s: %d refusals for %q, want %d", c.name, got, c.reason, before+1)
		}
	}
	stream, err := tlsConn(t, b.addr, ca, nil).Messages(streamCtx(t, 7, 1, 2))
	if err == nil {
		err = awaitAccept(stream)
	}
	if err == nil {
		t.Fatal("a caller without a certificate was accepted")
	}
	eventually(t, "the failed handshake counted", func() bool { return seen.count(RefusedHandshake) > 0 })
	select {
	case m := <-b.h.msgs:
		t.Fatalf("a message of a refused stream was delivered: %v", m)
	default:
	}
}

// TestDialChecksMemberIdentity: a server at node 2's address that answers
// as node 2 but holds a certificate of node 3 (a stranger with a
// certificate of the CA) is never sent anything.
func TestDialChecksMemberIdentity(t *testing.T) {
	ca := newCA(t)
	lis1, lis2 := listen(t), listen(t)
	peers := map[core.NodeID]string{1: lis1.Addr().String(), 2: lis2.Addr().String()}
	cfgA := testConfig(1, peers)
	identityTLS(&cfgA, ca, ca.issue(t, 1, MemberURI(7, 1)))
	a := startNode(t, cfgA, newRecorder(), lis1)
	cfgB := testConfig(2, nil)
	identityTLS(&cfgB, ca, ca.issue(t, 3, MemberURI(7, 3)))
	cfgB.PeerIdentity = false // the impostor checks nothing
	b := startNode(t, cfgB, newRecorder(), lis2)

	a.tr.Send([]core.Message{app(1, 2, 0, 8)})
	a.h.waitUnreachable(t, 2)
	if st := a.tr.Stats()[2]; st.Connected || st.Sent != 0 {
		t.Errorf("stream to a server that is not node 2 counted as live: %+v", st)
	}
	select {
	case m := <-b.h.msgs:
		t.Fatalf("delivered to the wrong member: %v", m)
	default:
	}
}

func TestCertMember(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cid := uint64(0xdfed251b1d404cca)
	if got := MemberURI(cid, 3).String(); got != "keyval://dfed251b1d404cca/member/3" {
		t.Fatalf("MemberURI = %s", got)
	}
	cases := []struct {
		uris []*url.URL
		want core.NodeID // 0: an error
	}{
		{[]*url.URL{MemberURI(cid, 3)}, 3},
		{[]*url.URL{u("spiffe://x/y"), MemberURI(cid, 12), MemberURI(1, 4)}, 12},
		{nil, 0},
		{[]*url.URL{MemberURI(1, 3)}, 0},
		{[]*url.URL{u("keyval://dfed251b1d404cca/member/0")}, 0},
		{[]*url.URL{u("keyval://dfed251b1d404cca/member/x")}, 0},
		{[]*url.URL{u("keyval://dfed251b1d404cca/node/3")}, 0},
		{[]*url.URL{MemberURI(cid, 3), MemberURI(cid, 4)}, 0},
	}
	for _, c := range cases {
		got, err := CertMember(&x509.Certificate{URIs: c.uris}, cid)
		if got != c.want || (err == nil) != (c.want != 0) {
			t.Errorf("%v: %d, %v; want %d", c.uris, got, err, c.want)
		}
	}
}
