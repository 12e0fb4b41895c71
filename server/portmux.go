package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// http2Preface is what every HTTP/2 connection with prior knowledge, so
// every gRPC connection over plaintext, sends first (RFC 9113, 3.4).
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sniffTimeout bounds how long a new connection may take to send enough
// bytes to tell which protocol it speaks.
const sniffTimeout = 10 * time.Second

// portMux splits the connections of one listener between gRPC and
// HTTP/1, as etcd's client port serves both: gRPC clients and etcd's JSON
// gateway, /health, /metrics and /version share the address clients know.
//
// In plaintext a connection is gRPC's if it opens with the HTTP/2
// preface, and HTTP/1's as soon as its first bytes differ from it; the
// bytes read to tell are handed on with the connection. Over TLS the
// handshake is done here and ALPN tells them apart (routeTLS); gRPC then
// takes a finished connection through handshakenTLS, which hands it the
// handshake's state, so that certificate-named users are named as
// before.
type portMux struct {
	root       net.Listener
	tls        *tls.Config // nil: plaintext
	grpc, http *muxListener

	mu     sync.Mutex
	closed int // children closed; the root closes with the second
}

// newPortMux splits root; with cfg set, its connections are TLS.
func newPortMux(root net.Listener, cfg *tls.Config) *portMux {
	m := &portMux{root: root, tls: cfg}
	m.grpc = &muxListener{m: m, conns: make(chan net.Conn), done: make(chan struct{})}
	m.http = &muxListener{m: m, conns: make(chan net.Conn), done: make(chan struct{})}
	return m
}

// serve accepts from the root until it closes, handing each connection,
// once told, to its side. It returns when the root's Accept fails for
// good; both sides then fail their Accept with that error.
func (m *portMux) serve() {
	var delay time.Duration
	for {
		c, err := m.root.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				m.grpc.fail(err)
				m.http.fail(err)
				return
			}
			// Out of file descriptors and the like: back off and try
			// again, as net/http's and gRPC's servers do, rather than
			// give the port up for good.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go m.route(c)
	}
}

// route reads c's first bytes, just enough to tell its protocol, and
// hands it to that side (closing it if that side is closed).
func (m *portMux) route(c net.Conn) {
	if m.tls != nil {
		m.routeTLS(c)
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	buf := make([]byte, 0, len(http2Preface))
	for len(buf) < len(http2Preface) && bytes.HasPrefix([]byte(http2Preface), buf) {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && n == 0 {
			c.Close()
			return
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	side := m.http
	if string(buf) == http2Preface {
		side = m.grpc
	}
	side.hand(&prefixConn{Conn: c, prefix: buf})
}

// routeTLS completes c's handshake and hands it on: to gRPC if the
// client offered h2 alone, as gRPC's clients do; else to HTTP, which
// serves HTTP/1.1, and HTTP/2 too for a client that offered both (curl,
// Go's HTTP client) — there gRPC calls are told by their content type
// (grpcOrHTTP), for a gRPC client whose TLS configuration an HTTP
// client has added http/1.1 to (Go's does, to one it is given).
func (m *portMux) routeTLS(c net.Conn) {
	var offered []string
	tc := tls.Server(c, &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		offered = hello.SupportedProtos
		return m.tlsFor(hello)
	}})
	ctx, cancel := context.WithTimeout(context.Background(), sniffTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		return
	}
	side := m.http
	if tc.ConnectionState().NegotiatedProtocol == "h2" && !slices.Contains(offered, "http/1.1") {
		side = m.grpc
	}
	side.hand(tc)
}

// tlsFor is the port's configuration for one handshake (the one made
// afresh for it when the files are reloaded), offering h2 first, then
// http/1.1.
func (m *portMux) tlsFor(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	c := m.tls
	if get := m.tls.GetConfigForClient; get != nil {
		got, err := get(hello)
		if err != nil {
			return nil, err
		}
		if got != nil {
			c = got
		}
	}
	c = c.Clone()
	c.GetConfigForClient = nil
	c.NextProtos = []string{"h2", "http/1.1"}
	return c, nil
}

// grpcOrHTTP sends the gRPC calls that come over HTTP/2 to grpcSrv and
// the rest to h.
func grpcOrHTTP(grpcSrv http.Handler, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			grpcSrv.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// handshakenTLS is gRPC's transport credentials for connections whose
// TLS handshake portMux has already done: it hands gRPC the handshake's
// state as credentials.NewTLS would have.
type handshakenTLS struct{}

func (handshakenTLS) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil, fmt.Errorf("client port: a %T where a TLS connection was expected", c)
	}
	return tc, credentials.TLSInfo{State: tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (handshakenTLS) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("handshakenTLS serves only")
}

func (handshakenTLS) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (handshakenTLS) Clone() credentials.TransportCredentials { return handshakenTLS{} }

func (handshakenTLS) OverrideServerName(string) error { return nil }

// closeChild closes the root once both sides are closed.
func (m *portMux) closeChild() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed++
	if m.closed == 2 {
		return m.root.Close()
	}
	return nil
}

// muxListener is one side of a portMux.
type muxListener struct {
	m     *portMux
	conns chan net.Conn
	done  chan struct{} // closed by Close or by the root failing

	once sync.Once
	err  error // why Accept fails, set before done closes
}

func (l *muxListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close stops this side; connections told to be its after that are
// closed. The root listener closes when both sides have.
func (l *muxListener) Close() error {
	closed := false
	l.once.Do(func() {
		l.err = net.ErrClosed
		close(l.done)
		closed = true
	})
	if !closed {
		return nil
	}
	return l.m.closeChild()
}

func (l *muxListener) Addr() net.Addr { return l.m.root.Addr() }

func (l *muxListener) fail(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
	})
}

func (l *muxListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// prefixConn is a connection whose first bytes were already read: Read
// returns them before reading on.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
