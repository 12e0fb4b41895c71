package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	etcdgw "go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/therealutkarshpriyadarshi/keyval/internal/flowwindow"
)

// gateway serves etcd's JSON gateway (the grpc-gateway handlers etcd
// publishes, etcdserverpb/gw) and etcd's HTTP probes and /metrics on the
// plaintext client port, beside gRPC, as etcd does, and at ClientHTTPAddr
// if set. Each HTTP call is made as the same gRPC call on this member's own
// client port, so it meets the same auth checks, limits, forwarding to the
// leader and errors as a gRPC client does, and nothing here has to keep up
// with them.
type gateway struct {
	port net.Listener // the client port's HTTP/1 side
	own  net.Listener // ClientHTTPAddr's; nil when not set
	srv  *http.Server
	conn *grpc.ClientConn
}

// errGatewayTLS refuses the gateway beside a TLS client port: it would be a
// plaintext door to a port that asks for TLS (and perhaps client
// certificates), and dialling its own port the gateway could not pass on the
// HTTP client's certificate, which KeyVal's auth may take as the user.
var errGatewayTLS = errors.New("the JSON gateway (--listen-client-http) is not available with client TLS (--client-cert-file) yet: " +
	"it would serve plaintext HTTP beside the TLS client port; use gRPC, or leave client TLS off on a trusted network")

// listenGateway makes what serves the client port's HTTP side, port, and
// binds ClientHTTPAddr, if set (setDefaults has refused it with
// ClientTLS); Start serves them. A TLS client port answers the probes and
// /metrics over HTTPS but not the JSON gateway: its calls are made on the
// client port with no certificate, where the caller may have been named by
// its own.
func (s *Server) listenGateway(port net.Listener) error {
	// etcd's probes and metrics answer on its client URL too.
	top := http.NewServeMux()
	s.handleEtcdProbes(top)
	s.handleEtcdReadyz(top)
	top.Handle("/metrics", s.obs.metricsHandler())
	g := &gateway{port: port}
	if s.cfg.ClientTLS != nil {
		top.HandleFunc("/v3/", refuseGatewayOverTLS)
	} else {
		// Created before any call, a client connection dials lazily: the
		// client port need not serve yet.
		opts := append([]grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// A Range answer may be as large as --max-range-bytes.
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
		}, flowwindow.DialOptions()...)
		conn, err := grpc.NewClient("passthrough:///"+dialable(s.ClientAddr()), opts...)
		if err != nil {
			return fmt.Errorf("JSON gateway: connect to the client port %s: %w", s.ClientAddr(), err)
		}
		mux, err := etcdGatewayMux(conn)
		if err != nil {
			conn.Close()
			return err
		}
		if addr := s.cfg.ClientHTTPAddr; addr != "" {
			if g.own, err = net.Listen("tcp", addr); err != nil {
				conn.Close()
				return fmt.Errorf("listen for the JSON gateway on %s: %w", addr, err)
			}
		}
		g.conn = conn
		top.Handle("/", mux)
	}
	// A body is read whole before its call is made: bound it by what the
	// client port would take, as JSON (base64 makes bytes a third longer).
	limit := int64(s.cfg.MaxRequestBytes)*2 + 64<<10
	var h http.Handler = http.MaxBytesHandler(top, limit)
	if s.cfg.ClientTLS != nil {
		h = grpcOrHTTP(s.clientSrv, h)
	}
	g.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	s.gw = g
	return nil
}

// refuseGatewayOverTLS answers a JSON gateway call on a TLS client port as
// the gateway answers an unimplemented call.
func refuseGatewayOverTLS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotImplemented)
	fmt.Fprintf(w, `{"code":%d,"message":"etcd's JSON gateway is not served on a TLS client port: use gRPC (docs/gateway.md)"}`+"\n", codes.Unimplemented)
}

// etcdGatewayMux routes etcd's /v3/... paths to conn with etcd's JSON
// conventions: field names as in the .proto files (create_revision),
// bytes in base64, unset fields left out, unknown fields ignored.
func etcdGatewayMux(conn *grpc.ClientConn) (*runtime.ServeMux, error) {
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}}),
		runtime.WithMetadata(tokenFromAuthorization),
		// No other header becomes metadata: an HTTP client says who it is
		// with the Authorization header only.
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
	)
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		etcdgw.RegisterKVHandler, etcdgw.RegisterWatchHandler, etcdgw.RegisterLeaseHandler,
		etcdgw.RegisterClusterHandler, etcdgw.RegisterMaintenanceHandler, etcdgw.RegisterAuthHandler,
	} {
		if err := register(context.Background(), mux, conn); err != nil {
			return nil, fmt.Errorf("JSON gateway: register etcd's handlers: %w", err)
		}
	}
	return mux, nil
}

// tokenFromAuthorization passes the Authorization header on as the token
// metadata, where KeyVal's auth looks for it: etcd's HTTP clients send the
// token /v3/auth/authenticate returned there, as it is.
func tokenFromAuthorization(_ context.Context, r *http.Request) metadata.MD {
	tok := r.Header.Get("Authorization")
	if tok == "" {
		return nil
	}
	return metadata.Pairs(tokenKey, tok)
}

// dialable is addr with an unspecified host (0.0.0.0, ::) replaced by
// loopback, where a listener on every interface is also reached.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil || !ip.IsUnspecified():
		return addr
	case ip.To4() != nil:
		return net.JoinHostPort("127.0.0.1", port)
	default:
		return net.JoinHostPort("::1", port)
	}
}

// start serves the gateway until stop.
func (g *gateway) start(log *slog.Logger) {
	if g == nil {
		return
	}
	for _, lis := range g.listeners() {
		what := "etcd's JSON gateway"
		if g.conn == nil {
			what = "etcd's probes and metrics over HTTPS"
		}
		log.Info("serving "+what, "addr", lis.Addr().String())
		go func() {
			if err := g.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				log.Error("JSON gateway stopped", "addr", lis.Addr().String(), "err", err)
			}
		}()
	}
}

func (g *gateway) listeners() []net.Listener {
	if g.own == nil {
		return []net.Listener{g.port}
	}
	return []net.Listener{g.port, g.own}
}

// stop lets the calls under way finish (for at most wait, or until ctx
// ends), then closes the connection to the client port; it runs before the
// client port stops, so those calls are answered rather than cut.
func (g *gateway) stop(ctx context.Context, wait time.Duration) {
	if g == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := g.srv.Shutdown(ctx); err != nil {
		g.srv.Close()
	}
	for _, lis := range g.listeners() {
		lis.Close() // in case it never served (Stop without Start)
	}
	if g.conn != nil {
		g.conn.Close()
	}
}

// ClientHTTPAddr is the bound address of the JSON gateway ("" when off).
func (s *Server) ClientHTTPAddr() string {
	if s.gw == nil || s.gw.own == nil {
		return ""
	}
	return s.gw.own.Addr().String()
}
