package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// Defaults for the zero fields of a Config.
const (
	DefaultQueueSize           = 4096
	DefaultMaxBatchMsgs        = 512
	DefaultMaxBatchBytes       = 1 << 20
	DefaultMaxMessageBytes     = 16 << 20
	DefaultSnapshotChunkBytes  = 1 << 20
	DefaultDialTimeout         = 5 * time.Second
	DefaultBackoffMin          = 50 * time.Millisecond
	DefaultBackoffMax          = 2 * time.Second
	DefaultUnreachableInterval = 100 * time.Millisecond
	DefaultKeepaliveTime       = 10 * time.Second
)

// maxStatsIDs caps how many distinct node ids the statistics remember, so a
// stream of made-up sender ids cannot grow them without bound.
const maxStatsIDs = 1024

// Config configures a Transport. Only ID is required.
type Config struct {
	// ID is this node; ClusterID the cluster it belongs to. Every stream
	// carries both, and a node refuses streams from another cluster.
	ID        core.NodeID
	ClusterID uint64

	// Peers maps the other members to their peer addresses (host:port). An
	// entry for ID itself is ignored, so the whole cluster list may be given.
	Peers map[core.NodeID]string

	// QueueSize bounds the messages waiting for each peer. When a peer's
	// queue is full, Send drops the message and reports the peer unreachable.
	QueueSize int
	// MaxBatchMsgs and MaxBatchBytes bound one Batch. A single message
	// larger than MaxBatchBytes travels alone.
	MaxBatchMsgs  int
	MaxBatchBytes int
	// MaxMessageBytes is the largest gRPC message this node accepts (and the
	// largest Raft message it sends; larger ones are dropped and logged).
	// Every member should use the same value.
	MaxMessageBytes int
	// SnapshotChunkBytes is the size of the data chunks of a snapshot stream.
	SnapshotChunkBytes int

	// ServerTLS, if set, is used by Serve and ServerOptions. For mutual TLS
	// set ClientAuth to tls.RequireAndVerifyClientCert and ClientCAs.
	ServerTLS *tls.Config
	// ClientTLS, if set, is used to dial peers (with Certificates for
	// mutual TLS). Without it peers are dialled in plaintext.
	ClientTLS *tls.Config
	// PeerIdentity binds member ids to certificates (needs ServerTLS
	// requiring client certificates, and ClientTLS): a stream is accepted
	// only from the member its verified client certificate names
	// (MemberURI), and a dialled member's certificate must name it.
	PeerIdentity bool
	// Refused, if set, hears of every peer refused for its identity or a
	// failed TLS handshake (the Refused* reasons), with the id it claimed
	// (None when unknown). It is called from the transport's goroutines.
	Refused func(reason string, claimed core.NodeID)
	// DialOptions are added to the transport's own options for every peer.
	DialOptions []grpc.DialOption
	// DialTimeout bounds connecting to a peer and the peer's acceptance of
	// a new stream.
	DialTimeout time.Duration

	// BackoffMin and BackoffMax bound the jittered exponential wait between
	// attempts to re-establish a broken stream.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// UnreachableInterval is the shortest time between two
	// ReportUnreachable calls for the same peer.
	UnreachableInterval time.Duration
	// KeepaliveTime is how long a connection may be idle before the client
	// pings it, so a silently dead peer is noticed.
	KeepaliveTime time.Duration

	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.ID == core.None {
		return errors.New("transport config: ID must be set (node ids start at 1)")
	}
	ints := []struct {
		name string
		v    *int
		def  int
	}{
		{"QueueSize", &c.QueueSize, DefaultQueueSize},
		{"MaxBatchMsgs", &c.MaxBatchMsgs, DefaultMaxBatchMsgs},
		{"MaxBatchBytes", &c.MaxBatchBytes, DefaultMaxBatchBytes},
		{"MaxMessageBytes", &c.MaxMessageBytes, DefaultMaxMessageBytes},
		{"SnapshotChunkBytes", &c.SnapshotChunkBytes, DefaultSnapshotChunkBytes},
	}
	for _, f := range ints {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 0 {
			return fmt.Errorf("transport config: %s %d must be positive", f.name, *f.v)
		}
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"DialTimeout", &c.DialTimeout, DefaultDialTimeout},
		{"BackoffMin", &c.BackoffMin, DefaultBackoffMin},
		{"BackoffMax", &c.BackoffMax, DefaultBackoffMax},
		{"UnreachableInterval", &c.UnreachableInterval, DefaultUnreachableInterval},
		{"KeepaliveTime", &c.KeepaliveTime, DefaultKeepaliveTime},
	}
	for _, f := range durations {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < 0 {
			return fmt.Errorf("transport config: %s %v must be positive", f.name, *f.v)
		}
	}
	if c.BackoffMax < c.BackoffMin {
		return fmt.Errorf("transport config: BackoffMax %v is below BackoffMin %v", c.BackoffMax, c.BackoffMin)
	}
	if c.MaxBatchBytes > c.MaxMessageBytes {
		return fmt.Errorf("transport config: MaxBatchBytes %d is above MaxMessageBytes %d",
			c.MaxBatchBytes, c.MaxMessageBytes)
	}
	// A snapshot chunk and its framing must fit in one gRPC message.
	if c.SnapshotChunkBytes > c.MaxMessageBytes-1024 {
		return fmt.Errorf("transport config: SnapshotChunkBytes %d does not fit in MaxMessageBytes %d",
			c.SnapshotChunkBytes, c.MaxMessageBytes)
	}
	if c.PeerIdentity && (c.ClientTLS == nil || c.ServerTLS == nil || c.ServerTLS.ClientAuth != tls.RequireAndVerifyClientCert) {
		return errors.New("transport config: PeerIdentity needs ClientTLS and a ServerTLS that requires and verifies client certificates")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
