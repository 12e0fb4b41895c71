package server

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// scriptedListener returns the accepts it is given, in order, then
// net.ErrClosed once closed.
type scriptedListener struct {
	accepts chan accepted
	closed  chan struct{}
}

type accepted struct {
	c   net.Conn
	err error
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	select {
	case a := <-l.accepts:
		return a.c, a.err
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *scriptedListener) Close() error {
	select {
	case <-l.closed:
		return net.ErrClosed
	default:
		close(l.closed)
		return nil
	}
}

func (l *scriptedListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// dialPipe is a connection whose client end has written first.
func dialPipe(t *testing.T, first string) net.Conn {
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close() })
	go func() { _, _ = io.WriteString(client, first) }()
	return server
}

// TestPortMuxRoutesAndSurvivesAcceptErrors checks a connection that opens
// with HTTP/2's preface goes to gRPC and one that does not to HTTP, each
// with the bytes read to tell still to be read; that an accept error
// other than the listener's closing (out of file descriptors) does not end
// the port; and that the listener closes once both sides have.
func TestPortMuxRoutesAndSurvivesAcceptErrors(t *testing.T) {
	root := &scriptedListener{accepts: make(chan accepted, 4), closed: make(chan struct{})}
	m := newPortMux(root, nil)
	served := make(chan struct{})
	go func() {
		m.serve()
		close(served)
	}()

	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	root.accepts <- accepted{err: emfile}
	root.accepts <- accepted{c: dialPipe(t, "GET /health HTTP/1.1\r\n\r\n")}
	root.accepts <- accepted{c: dialPipe(t, http2Preface+"rest")}

	read := func(l net.Listener, n int) string {
		c, err := l.Accept()
		require.NoError(t, err)
		buf := make([]byte, n)
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		return string(buf)
	}
	require.Equal(t, "GET /health", read(m.http, len("GET /health")), "after an accept error, the port goes on")
	require.Equal(t, http2Preface+"rest", read(m.grpc, len(http2Preface)+4))

	require.NoError(t, m.http.Close())
	select {
	case <-root.closed:
		t.Fatal("the listener closed while gRPC's side was open")
	default:
	}
	require.NoError(t, m.grpc.Close())
	<-root.closed
	<-served
	_, err := m.grpc.Accept()
	require.True(t, errors.Is(err, net.ErrClosed), "%v", err)
}
