package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/net/transport"
	"github.com/therealutkarshpriyadarshi/keyval/server/testpki"
)

// handshake runs one TLS handshake over loopback, through gRPC's
// credentials as the ports and the transport use them, the client dialling
// 127.0.0.1. It returns the certificate the server showed (nil if the
// client refused it), the server's error and the client's.
func handshake(t *testing.T, server, client *tls.Config) (shown *x509.Certificate, serverErr, clientErr error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		tc, _, err := credentials.NewTLS(server).ServerHandshake(conn)
		if err == nil {
			// TLS 1.3 clients finish first: wait for the client's close so
			// that a refused certificate reaches it as an alert.
			_, _ = io.Copy(io.Discard, tc)
		}
		done <- err
	}()
	conn, err := net.Dial("tcp", lis.Addr().String())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc, info, clientErr := transport.DialCreds(client).ClientHandshake(ctx, lis.Addr().String(), conn)
	if clientErr == nil {
		shown = info.(credentials.TLSInfo).State.PeerCertificates[0]
		tc.Close()
	} else {
		conn.Close()
	}
	return shown, <-done, clientErr
}

// appClient is how an application dials a client port: CA and, if given,
// its certificate.
func appClient(t *testing.T, ca, cert, key string) *tls.Config {
	cfg := mustTLS(t, ca, cert, key)
	cfg.ServerName = "127.0.0.1"
	return cfg
}

func replaceFile(t *testing.T, dst, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst, b, 0o600))
}

// TestTLSMinVersion: TLS 1.3 unless 1.2 is allowed, on the ports and when
// dialling members.
func TestTLSMinVersion(t *testing.T) {
	p := newPKI(t)
	old := appClient(t, p.ca.File, "", "")
	old.MaxVersion = tls.VersionTLS12

	port, err := ClientTLS(TLSFiles{CertFile: p.serveCert, KeyFile: p.serveKey})
	require.NoError(t, err)
	_, serverErr, _ := handshake(t, port, old)
	require.ErrorContains(t, serverErr, "unsupported versions", "a TLS 1.2 client by default")
	_, serverErr, clientErr := handshake(t, port, appClient(t, p.ca.File, "", ""))
	require.NoError(t, serverErr)
	require.NoError(t, clientErr)

	port, err = ClientTLS(TLSFiles{CertFile: p.serveCert, KeyFile: p.serveKey, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	_, serverErr, clientErr = handshake(t, port, old)
	require.NoError(t, serverErr, "a TLS 1.2 client with 1.2 allowed")
	require.NoError(t, clientErr)

	// Dialling a member that speaks only TLS 1.2.
	pair, err := tls.LoadX509KeyPair(p.peerCert, p.peerKey)
	require.NoError(t, err)
	oldPeer := &tls.Config{Certificates: []tls.Certificate{pair}, MaxVersion: tls.VersionTLS12}
	files := TLSFiles{CertFile: p.peerCert, KeyFile: p.peerKey, CAFile: p.ca.File}
	_, dial, err := PeerTLS(files)
	require.NoError(t, err)
	_, _, clientErr = handshake(t, oldPeer, dial)
	require.ErrorContains(t, clientErr, "protocol version")
	files.MinVersion = tls.VersionTLS12
	_, dial, err = PeerTLS(files)
	require.NoError(t, err)
	_, _, clientErr = handshake(t, oldPeer, dial)
	require.NoError(t, clientErr)
}

// TestTLSReloadsCertificatesAndCAs: certificates and CA files replaced on
// disk are used by the next handshake, on the server side and when
// dialling; files that do not load leave the last good ones in use.
func TestTLSReloadsCertificatesAndCAs(t *testing.T) {
	p := newPKI(t)
	firstCA := filepath.Join(t.TempDir(), "first-ca.pem") // the first CA only, for the member below
	replaceFile(t, firstCA, p.ca.File)
	port, err := ClientTLS(TLSFiles{CertFile: p.serveCert, KeyFile: p.serveKey, CAFile: p.ca.File})
	require.NoError(t, err)
	app := appClient(t, p.ca.File, p.appCert, p.appKey)
	shown, serverErr, clientErr := handshake(t, port, app)
	require.NoError(t, errors.Join(serverErr, clientErr))
	require.Equal(t, "client-port", shown.Subject.CommonName)

	renewedCert, renewedKey := p.ca.Issue(t, "client-port-renewed", "127.0.0.1")
	replaceFile(t, p.serveKey, renewedKey)
	replaceFile(t, p.serveCert, renewedCert)
	shown, serverErr, clientErr = handshake(t, port, app)
	require.NoError(t, errors.Join(serverErr, clientErr))
	require.Equal(t, "client-port-renewed", shown.Subject.CommonName, "a new handshake shows the new certificate")

	require.NoError(t, os.WriteFile(p.serveCert, []byte("half written"), 0o600))
	shown, serverErr, clientErr = handshake(t, port, app)
	require.NoError(t, errors.Join(serverErr, clientErr), "a certificate file that does not load")
	require.Equal(t, "client-port-renewed", shown.Subject.CommonName)

	// A new CA for clients: refused until the CA file names it.
	next := testpki.NewCA(t, "next")
	nextCert, nextKey := next.Issue(t, "app2", "app2.example")
	nextApp := appClient(t, p.ca.File, nextCert, nextKey)
	_, serverErr, _ = handshake(t, port, nextApp)
	require.Error(t, serverErr, "a client certificate of a CA not yet trusted")
	appendFile(t, p.ca.File, next.File)
	_, serverErr, clientErr = handshake(t, port, nextApp)
	require.NoError(t, errors.Join(serverErr, clientErr), "the CA file now holds both CAs")

	// Dialling a member: its certificate of the new CA is refused until
	// this member's CA file names it, and the certificate it shows changes
	// with its file.
	peerCert, peerKey := next.IssueMember(t, "member-2", 7, core.NodeID(2), "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(peerCert, peerKey)
	require.NoError(t, err)
	other := &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAnyClientCert}
	myCert, myKey := p.ca.IssueMember(t, "member-1", 7, core.NodeID(1), "127.0.0.1")
	_, dial, err := PeerTLS(TLSFiles{CertFile: myCert, KeyFile: myKey, CAFile: firstCA})
	require.NoError(t, err)
	_, _, clientErr = handshake(t, other, dial)
	require.ErrorContains(t, clientErr, "unknown authority")
	appendFile(t, firstCA, next.File)
	shown, _, clientErr = handshake(t, other, dial)
	require.NoError(t, clientErr)
	require.Equal(t, "member-2", shown.Subject.CommonName)
}

// TestTLSAllowedNames: with allowed names, a certificate the CA signed but
// that matches none of them is refused, on the client port and between
// members (both ways); one that matches is accepted.
func TestTLSAllowedNames(t *testing.T) {
	p := newPKI(t)
	otherCert, otherKey := p.ca.Issue(t, "other", "other.example")
	serve := func(f TLSFiles) *tls.Config {
		f.CertFile, f.KeyFile, f.CAFile = p.serveCert, p.serveKey, p.ca.File
		cfg, err := ClientTLS(f)
		require.NoError(t, err)
		return cfg
	}
	for name, port := range map[string]*tls.Config{
		"common name": serve(TLSFiles{AllowedCNs: []string{"app"}}),
		"hostname":    serve(TLSFiles{AllowedHostnames: []string{"app.example"}}),
	} {
		_, serverErr, clientErr := handshake(t, port, appClient(t, p.ca.File, p.appCert, p.appKey))
		require.NoError(t, errors.Join(serverErr, clientErr), name)
		_, serverErr, _ = handshake(t, port, appClient(t, p.ca.File, otherCert, otherKey))
		require.ErrorContains(t, serverErr, "matches none of the allowed names", name)
	}
	_, err := ClientTLS(TLSFiles{CertFile: p.serveCert, KeyFile: p.serveKey, AllowedCNs: []string{"app"}})
	require.ErrorContains(t, err, "need --client-ca-file")

	// Members: only certificates valid for 127.0.0.1.
	member := func(name, host string) TLSFiles {
		cert, key := p.ca.IssueMember(t, name, 7, core.NodeID(len(name)), host)
		return TLSFiles{CertFile: cert, KeyFile: key, CAFile: p.ca.File, AllowedHostnames: []string{"127.0.0.1"}}
	}
	local, stranger := member("local", "127.0.0.1"), member("stranger", "localhost")
	localServer, localDial, err := PeerTLS(local)
	require.NoError(t, err)
	_, strangerDial, err := PeerTLS(stranger)
	require.NoError(t, err)
	_, serverErr, clientErr := handshake(t, localServer, localDial)
	require.NoError(t, errors.Join(serverErr, clientErr))
	_, serverErr, _ = handshake(t, localServer, strangerDial)
	require.ErrorContains(t, serverErr, "matches none of the allowed names", "accepting a member")

	// Dialling a member (its certificate valid for the host dialled,
	// localhost, but not for the allowed 127.0.0.1).
	pair, err := tls.LoadX509KeyPair(stranger.CertFile, stranger.KeyFile)
	require.NoError(t, err)
	local.AllowedHostnames = nil
	_, plainDial, err := PeerTLS(local)
	require.NoError(t, err)
	plainDial.ServerName, localDial.ServerName = "localhost", "localhost"
	strangerPort := &tls.Config{Certificates: []tls.Certificate{pair}}
	_, _, clientErr = handshake(t, strangerPort, plainDial)
	require.NoError(t, clientErr, "without allowed names")
	_, _, clientErr = handshake(t, strangerPort, localDial)
	require.ErrorContains(t, clientErr, "matches none of the allowed names", "dialling a member")
}

// TestMetricsOverTLS: with a certificate the metrics address serves HTTPS
// (TLS 1.3) and answers no plain HTTP request.
func TestMetricsOverTLS(t *testing.T) {
	p := newPKI(t)
	metricsTLS, err := MetricsTLS(TLSFiles{CertFile: p.serveCert, KeyFile: p.serveKey})
	require.NoError(t, err)
	c := startClusterWith(t, 1, func(_ core.NodeID, cfg *Config) {
		cfg.MetricsAddr, cfg.MetricsTLS = "127.0.0.1:0", metricsTLS
	}, grpc.WithTransportCredentials(insecure.NewCredentials()))
	addr := c.servers[1].MetricsAddr()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: appClient(t, p.ca.File, "", "")}, Timeout: 5 * time.Second}
	resp, err := hc.Get("https://" + addr + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, uint16(tls.VersionTLS13), resp.TLS.Version)
	plain, err := http.Get("http://" + addr + "/metrics")
	if err == nil {
		plain.Body.Close()
		require.NotEqual(t, http.StatusOK, plain.StatusCode, "plain HTTP on the TLS metrics port")
	}
}

func appendFile(t *testing.T, dst, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	old, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst, append(old, b...), 0o600))
}
