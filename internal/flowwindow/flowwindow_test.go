package flowwindow

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// With gRPC's default windows, small calls one at a time make each side
// ping to estimate the bandwidth (the test first shows that it sees those
// pings); with the fixed windows, no PING frame crosses the connection.
func TestFixedWindowsSendNoPings(t *testing.T) {
	cases := []struct {
		name      string
		server    []grpc.ServerOption
		dial      []grpc.DialOption
		wantPings bool
	}{
		{"default windows", nil, nil, true},
		{"fixed windows", ServerOptions(), DialOptions(), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pings := exchange(t, tc.server, tc.dial, 20)
			if got := pings > 0; got != tc.wantPings {
				t.Fatalf("%d PING frames on the connection over 20 calls; want some: %v", pings, tc.wantPings)
			}
		})
	}
}

// exchange makes calls health checks, one at a time, and returns the PING
// frames that crossed the connection either way.
func exchange(t *testing.T, serverOpts []grpc.ServerOption, dialOpts []grpc.DialOption, calls int) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingListener{Listener: lis}
	srv := grpc.NewServer(serverOpts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(counting)
	defer srv.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), append(dialOpts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for i := 0; i < calls; i++ {
		if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	conn.Close()
	srv.Stop()
	return counting.pings()
}

// countingListener counts the HTTP/2 PING frames its connections carry.
type countingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*countingConn
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countingConn{Conn: c, in: frameCounter{preface: len(clientPreface)}}
	l.mu.Lock()
	l.conns = append(l.conns, cc)
	l.mu.Unlock()
	return cc, nil
}

func (l *countingListener) pings() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.conns {
		c.mu.Lock()
		n += c.in.pings + c.out.pings
		c.mu.Unlock()
	}
	return n
}

const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

type countingConn struct {
	net.Conn
	mu      sync.Mutex
	in, out frameCounter
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.in.feed(b[:n])
	c.mu.Unlock()
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.mu.Lock()
	c.out.feed(b[:n])
	c.mu.Unlock()
	return n, err
}

// frameCounter follows one direction of an HTTP/2 connection frame by
// frame (a 9-byte header: 24-bit length, type, flags, stream id).
type frameCounter struct {
	preface int // bytes of the client preface still to skip
	header  []byte
	skip    int // payload bytes of the current frame still to skip
	pings   int
}

const framePing = 0x6

func (f *frameCounter) feed(b []byte) {
	for len(b) > 0 {
		switch {
		case f.preface > 0:
			n := min(f.preface, len(b))
			f.preface -= n
			b = b[n:]
		case f.skip > 0:
			n := min(f.skip, len(b))
			f.skip -= n
			b = b[n:]
		default:
			n := min(9-len(f.header), len(b))
			f.header = append(f.header, b[:n]...)
			b = b[n:]
			if len(f.header) == 9 {
				if f.header[3] == framePing {
					f.pings++
				}
				f.skip = int(binary.BigEndian.Uint32(append([]byte{0}, f.header[:3]...)))
				f.header = f.header[:0]
			}
		}
	}
}
