// Package server is KeyVal's real runtime: one event loop per node that
// drives a replica.Replica (the Raft core, WAL, snapshots and bbolt state
// machine) with a ticker, the gRPC peer transport and client requests, and
// serves the client API over gRPC. Everything protocol-related lives in the
// replica; this package adds only goroutines, clocks, sockets and files.
package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"golang.org/x/crypto/bcrypt"
	"hash/fnv"
	"log/slog"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// Config is one node's configuration. keyvald fills it from flags.
type Config struct {
	// ID is this node's id in InitialCluster.
	ID core.NodeID
	// DataDir holds the WAL, snapshots and the bbolt state machine.
	DataDir string
	// ClientAddr serves the client API; PeerAddr serves Raft traffic (and
	// requests forwarded from other members).
	ClientAddr string
	PeerAddr   string
	// ClientHTTPAddr, if set, serves etcd's JSON gateway (/v3/kv/range, …)
	// over HTTP, each call made on the client port (gateway.go). Not with
	// ClientTLS.
	ClientHTTPAddr string
	// InitialCluster maps every member's id to its peer address.
	InitialCluster map[core.NodeID]string
	// Join lists client addresses of a running cluster's members. A node
	// started with an empty data directory and Join joins that cluster (it
	// must have been added as a learner first) instead of bootstrapping;
	// InitialCluster is then not needed. JoinTLS is how it reaches them.
	Join    []string
	JoinTLS *tls.Config
	// ClusterToken distinguishes clusters with the same members; with the
	// member list it makes the cluster id that peers check.
	ClusterToken string

	// HeartbeatInterval is one Raft tick; ElectionTimeout is rounded to a
	// whole number of ticks.
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	// SnapshotEvery applied entries, a snapshot is taken and the log
	// compacted.
	SnapshotEvery uint64
	// CatchUpEntries is how many applied entries the in-memory log keeps
	// between snapshots (replica.Config.CatchUpEntries): a follower further
	// behind is sent a snapshot. 0 means DefaultCatchUpEntries; one at or
	// above SnapshotEvery keeps every entry since the last snapshot.
	CatchUpEntries uint64
	// MaxLearnerLag is how many entries behind the leader a learner may be
	// and still be promoted (0: core's default, 1000).
	MaxLearnerLag uint64
	// NoWALRepair makes a node whose WAL is damaged in the middle refuse to
	// start, as corruption anywhere else does, instead of repairing it from
	// the other members when that is safe (docs/disk.md, "Repair from
	// peers").
	NoWALRepair bool
	// WALRepairDistrustsEnd is for disks that may lose or misdirect writes:
	// a repair then does not trust where the intact records say the log
	// ended (replica.Config.DistrustWALEnd). Safer, and the repaired member
	// votes again only once a leader of a later term has replicated to it.
	WALRepairDistrustsEnd bool
	// DetectLostWrites keeps the WAL end mark, so that a WAL whose last
	// synced records the disk lost is found out at the next start
	// (replica.Config.DetectLostWrites): one more write and fsync per batch.
	DetectLostWrites bool

	// Limits on client requests.
	MaxKeyBytes     int
	MaxValueBytes   int
	MaxRequestBytes int

	// MaxPipelineReplyBytes bounds the replies one pipeline stream holds
	// for a client that does not read them (PipelineOptions.MaxReplyBytes).
	MaxPipelineReplyBytes int

	// MaxTxnOps bounds the compares, and the operations of each branch, of
	// one etcd transaction; a nested transaction gets what its enclosing
	// one leaves over, as in etcd (0: DefaultMaxTxnOps).
	MaxTxnOps int
	// MaxLearners bounds the learners an etcd MemberAdd with isLearner may
	// leave in the configuration, as etcd's --max-learners does (0:
	// DefaultMaxLearners). Learners KeyVal makes of voters being added,
	// until they catch up, count too.
	MaxLearners int

	// AutoCompactionMode (periodic or revision) and AutoCompactionRetention
	// bound the history the store keeps (compaction.go); "" means periodic
	// and DefaultAutoCompactionRetention, retention "0" turns it off.
	AutoCompactionMode      string
	AutoCompactionRetention string
	compaction              compactionPolicy

	// WatchProgressNotifyInterval is how often a watcher that asked for
	// progress notifications and was sent no event gets one (0: etcd's
	// 10 minutes). WatchMaxQueuedBytes bounds the events one watch stream
	// holds for a client that does not read them; past it the watcher they
	// are for is canceled (0: DefaultWatchMaxQueuedBytes).
	WatchProgressNotifyInterval time.Duration
	WatchMaxQueuedBytes         int

	// MaxRangeBytes bounds the keys and values of one Range answer, so that
	// a Range over many large values does not copy them all at once; the
	// answer stops at the budget with more set (0: DefaultMaxRangeBytes).
	MaxRangeBytes int

	// MaxConcurrentBackups bounds the Snapshot (backup) calls one member
	// serves at once: each holds a bbolt read transaction open for as long
	// as its client reads, which keeps freed pages from being reused and
	// holds back a write that must grow the memory map (0: the default).
	MaxConcurrentBackups int
	// MaxSnapshotBytes bounds a snapshot received from a peer; it is
	// spooled to disk before it is checked, so this bounds the disk one
	// peer stream can take (0: SnapshotBytesPerQuota × QuotaBackendBytes,
	// room for any state the quota allows with its encoding's overhead).
	MaxSnapshotBytes int64

	// MaxSessions caps the open exactly-once sessions and SessionTTL is how
	// long one must have been idle before a Register may reclaim it when
	// the cap is reached; otherwise Register is refused (limits.go). This
	// member stamps both into the Registers it proposes.
	MaxSessions int
	SessionTTL  time.Duration
	// QuotaBackendBytes is the storage quota: past it writes are refused
	// and the NOSPACE alarm raised (limits.go; 0: the default, 2 GiB).
	QuotaBackendBytes int64

	// RequestTimeout bounds how long a request waits for its outcome.
	RequestTimeout time.Duration

	// AuthTokenTTL is how long a token from Authenticate is accepted (0:
	// the default). A call on a stream keeps the identity the stream was
	// opened with; its permissions are still checked call by call.
	AuthTokenTTL time.Duration
	// BcryptCost is the cost of the password hashes this member makes
	// (0: bcrypt's default, 10).
	BcryptCost int

	// TLS for clients and for peers (mutual), both optional.
	ClientTLS     *tls.Config
	PeerServerTLS *tls.Config
	PeerClientTLS *tls.Config

	Logger *slog.Logger

	// Observability: metrics address and tracer provider (observe.go).
	Observability
}

// Defaults for Config.
const (
	DefaultHeartbeatInterval    = 50 * time.Millisecond
	DefaultElectionTimeout      = 250 * time.Millisecond
	DefaultSnapshotEvery        = 100000
	DefaultCatchUpEntries       = 10000
	DefaultMaxKeyBytes          = 8 << 10
	DefaultMaxValueBytes        = 1536 << 10 // 1.5 MiB, etcd's request limit
	DefaultMaxRequestBytes      = DefaultMaxValueBytes + DefaultMaxKeyBytes + 1<<10
	DefaultMaxRangeBytes        = 32 << 20
	DefaultMaxTxnOps            = 128 // etcd's --max-txn-ops
	DefaultMaxLearners          = 1   // etcd's --max-learners
	DefaultMaxConcurrentBackups = 2
	SnapshotBytesPerQuota       = 4
	DefaultRequestTimeout       = 5 * time.Second
	DefaultAuthTokenTTL         = 5 * time.Minute
	DefaultClusterToken         = "keyval"
)

func (c *Config) setDefaults() error {
	if c.ID == core.None {
		return errors.New("node id must be set (and non-zero)")
	}
	if c.DataDir == "" {
		return errors.New("data directory must be set")
	}
	if c.ClientAddr == "" || c.PeerAddr == "" {
		return errors.New("client and peer listen addresses must be set")
	}
	if c.ClientHTTPAddr != "" && c.ClientTLS != nil {
		return errGatewayTLS
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = DefaultElectionTimeout
	}
	if c.HeartbeatInterval <= 0 || c.ElectionTimeout < 2*c.HeartbeatInterval {
		return fmt.Errorf("election timeout (%v) must be at least twice the heartbeat interval (%v)", c.ElectionTimeout, c.HeartbeatInterval)
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = DefaultSnapshotEvery
	}
	if c.CatchUpEntries == 0 {
		c.CatchUpEntries = DefaultCatchUpEntries
	}
	if c.MaxKeyBytes == 0 {
		c.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if c.MaxKeyBytes > kvstore.MaxKeySize {
		return fmt.Errorf("--max-key-bytes is %d; the store holds keys of at most %d bytes", c.MaxKeyBytes, kvstore.MaxKeySize)
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = DefaultMaxTxnOps
	}
	if c.MaxLearners == 0 {
		c.MaxLearners = DefaultMaxLearners
	}
	if c.MaxLearners < 0 {
		return fmt.Errorf("--max-learners is %d; it must be positive", c.MaxLearners)
	}
	if c.MaxTxnOps < 0 {
		return fmt.Errorf("--max-txn-ops is %d; it must be positive", c.MaxTxnOps)
	}
	if c.AutoCompactionRetention == "" {
		c.AutoCompactionRetention = DefaultAutoCompactionRetention
	}
	var err error
	if c.compaction, err = parseCompaction(c.AutoCompactionMode, c.AutoCompactionRetention); err != nil {
		return err
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = max(DefaultMaxRequestBytes, c.MaxKeyBytes+c.MaxValueBytes+1<<10)
	}
	if c.MaxPipelineReplyBytes == 0 {
		c.MaxPipelineReplyBytes = DefaultMaxPipelineReplyBytes
	}
	if c.AuthTokenTTL == 0 {
		c.AuthTokenTTL = DefaultAuthTokenTTL
	}
	if c.AuthTokenTTL < 0 {
		return fmt.Errorf("the token lifetime (--auth-token-ttl) is %s; it must be positive", c.AuthTokenTTL)
	}
	if c.BcryptCost != 0 && (c.BcryptCost < bcrypt.MinCost || c.BcryptCost > bcrypt.MaxCost) {
		return fmt.Errorf("the bcrypt cost (--bcrypt-cost) is %d; it must be %d to %d", c.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if c.MaxRangeBytes == 0 {
		c.MaxRangeBytes = DefaultMaxRangeBytes
	}
	if c.MaxRangeBytes < 0 {
		return fmt.Errorf("the Range byte budget (--max-range-bytes) is %d; it must be positive", c.MaxRangeBytes)
	}
	if err := c.setLimitDefaults(); err != nil {
		return err
	}
	if err := c.setBackupLimits(); err != nil {
		return err
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.ClusterToken == "" {
		c.ClusterToken = DefaultClusterToken
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func (c *Config) setBackupLimits() error {
	if c.MaxConcurrentBackups == 0 {
		c.MaxConcurrentBackups = DefaultMaxConcurrentBackups
	}
	if c.MaxConcurrentBackups < 0 {
		return fmt.Errorf("--max-concurrent-backups is %d; it must be positive", c.MaxConcurrentBackups)
	}
	if c.MaxSnapshotBytes == 0 {
		c.MaxSnapshotBytes = SnapshotBytesPerQuota * c.QuotaBackendBytes
	}
	if c.MaxSnapshotBytes < 0 || c.MaxSnapshotBytes > 1<<60 {
		return fmt.Errorf("--max-snapshot-bytes is %d; it must be positive and at most 2^60", c.MaxSnapshotBytes)
	}
	return nil
}

// checkMember makes sure a node that bootstraps (or bootstrapped) the
// cluster is one of its initial members.
func (c *Config) checkMember() error {
	if len(c.InitialCluster) == 0 {
		return errors.New("--initial-cluster is required (or --join, for a node that joins a running cluster)")
	}
	if _, ok := c.InitialCluster[c.ID]; !ok {
		return fmt.Errorf("node %d is not in the initial cluster %s (a node that joins a running cluster starts with --join)", c.ID, FormatCluster(c.InitialCluster))
	}
	return nil
}

// ClusterID identifies the cluster: a hash of the token and the initial
// members, so nodes started with a different member list refuse each other.
func (c *Config) ClusterID() uint64 {
	h := fnv.New64a()
	h.Write([]byte(c.ClusterToken))
	h.Write([]byte{0})
	h.Write([]byte(FormatCluster(c.InitialCluster)))
	return h.Sum64()
}

// ParseCluster parses "1=host:port,2=host:port,...".
func ParseCluster(s string) (map[core.NodeID]string, error) {
	out := map[core.NodeID]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		idStr, addr, ok := strings.Cut(part, "=")
		if !ok || addr == "" {
			return nil, fmt.Errorf("initial cluster entry %q: want id=host:port", part)
		}
		id, err := strconv.ParseUint(idStr, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("initial cluster entry %q: the id must be a positive integer", part)
		}
		if _, dup := out[core.NodeID(id)]; dup {
			return nil, fmt.Errorf("initial cluster names node %d twice", id)
		}
		out[core.NodeID(id)] = addr
	}
	if len(out) == 0 {
		return nil, errors.New("initial cluster is empty")
	}
	return out, nil
}

// FormatCluster is the inverse of ParseCluster, in id order.
func FormatCluster(m map[core.NodeID]string) string {
	ids := make([]core.NodeID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%d=%s", id, m[id])
	}
	return strings.Join(parts, ",")
}

// snapshotPhase spreads the members' snapshots over the interval
// (replica.Config.SnapshotPhase): each member's phase is its id times the
// golden ratio, modulo one, of the interval, so any few ids land far
// apart (ids 1, 2 and 3 at 0.62, 0.24 and 0.85 of it) with no
// coordination. A snapshot writes the whole state; taken on every member
// at once, it cut this machine's write rate to a third or a half for a
// second (docs/bench.md, "Snapshots spread over the interval").
func snapshotPhase(id core.NodeID, every uint64) uint64 {
	const golden = 0x9E3779B97F4A7C15 // 2^64 divided by the golden ratio
	frac := uint64(id) * golden       // the fraction, as a 64-bit fixed point
	hi, _ := bits.Mul64(frac, every)
	return hi
}
