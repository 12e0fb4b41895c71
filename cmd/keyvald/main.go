// Command keyvald runs one KeyVal node. Every flag can also be set with an
// environment variable: --data-dir is KEYVALD_DATA_DIR, and so on.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/internal/version"
	"github.com/therealutkarshpriyadarshi/keyval/server"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "keyvald:", err)
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a mistake in how keyvald was started: a flag it does not
// know, or an argument it does not take (exit status 2).
type usageError struct{ error }

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("keyvald", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `keyvald runs one member of a KeyVal cluster.

Example: a three-node cluster on one machine (what make cluster-start does):
  keyvald --id 1 --data-dir data/1 --listen-client 127.0.0.1:2379 --listen-peer 127.0.0.1:2380 \
          --initial-cluster 1=127.0.0.1:2380,2=127.0.0.1:12380,3=127.0.0.1:22380
  (and the same for ids 2 and 3 with their own directories and addresses)

Adding a fourth member to that running cluster (it receives a snapshot and
the log; see docs/membership.md):
  kvctl member add-learner --id 4 --peer-addr 127.0.0.1:32380
  keyvald --id 4 --data-dir data/4 --listen-client 127.0.0.1:32379 --listen-peer 127.0.0.1:32380 \
          --join 127.0.0.1:2379,127.0.0.1:12379,127.0.0.1:22379
  kvctl member promote --id 4

Starting again on an existing data directory resumes from it; --initial-cluster
must stay the same. Every flag can be set by an environment variable named
KEYVALD_ and the flag in capitals with _ for -, e.g. KEYVALD_DATA_DIR.

Flags:
`)
		fs.PrintDefaults()
	}
	id := fs.Uint64("id", 0, "this node's id (a positive integer, one of --initial-cluster)")
	dataDir := fs.String("data-dir", "", "directory for the WAL, snapshots and state (created if missing)")
	clientAddr := fs.String("listen-client", "127.0.0.1:2379", "address for the client API (gRPC)")
	clientHTTPAddr := fs.String("listen-client-http", "", "address for etcd's JSON gateway over HTTP (/v3/kv/range, … as etcd serves them; docs/gateway.md), e.g. 127.0.0.1:2382; empty: off; not with client TLS")
	peerAddr := fs.String("listen-peer", "127.0.0.1:2380", "address for Raft traffic between members")
	cluster := fs.String("initial-cluster", "", "every member as id=peer-address, comma-separated")
	join := fs.String("join", "", "client addresses (comma-separated) of members of a running cluster to join, instead of --initial-cluster; add the node first with kvctl member add-learner")
	token := fs.String("cluster-token", server.DefaultClusterToken, "name that tells clusters with the same members apart")
	heartbeat := fs.Duration("heartbeat-interval", server.DefaultHeartbeatInterval, "how often the leader sends heartbeats (one Raft tick)")
	election := fs.Duration("election-timeout", server.DefaultElectionTimeout, "how long a follower waits for the leader before starting an election")
	snapEvery := fs.Uint64("snapshot-interval", server.DefaultSnapshotEvery, "applied entries between snapshots (the log is compacted behind each)")
	catchUp := fs.Uint64("snapshot-catchup-entries", server.DefaultCatchUpEntries, "applied entries the in-memory Raft log keeps between snapshots, unless a follower still heard from has not matched them; a follower silent for longer that needs a cut entry is sent a snapshot (at or above --snapshot-interval: every entry since the last snapshot)")
	learnerLag := fs.Uint64("max-learner-lag", core.DefaultMaxLearnerLag, "how many entries behind the leader a learner may be and still be promoted to voter")
	walRepair := fs.Bool("wal-repair", true, "when the WAL (or a snapshot file it no longer covers) is found damaged, repair it from the other members if that is safe (docs/disk.md, \"Repair from peers\"); false: refuse to start")
	walRepairDistrust := fs.Bool("wal-repair-distrust-end", false, "for disks that may lose or misdirect writes: a repair does not trust where the intact WAL records say the log ended, and the repaired member votes again only once a leader of a later term has replicated to it")
	detectLost := fs.Bool("wal-detect-lost-writes", false, "for disks that may lose synced writes: after each WAL sync, write and sync a mark of where the log ends, so that a start finds a WAL whose last records the disk lost (docs/disk.md, \"Lost writes at the end\"); costs one more write and fsync per batch")
	maxKey := fs.Int("max-key-bytes", server.DefaultMaxKeyBytes, "largest key accepted")
	maxValue := fs.Int("max-value-bytes", server.DefaultMaxValueBytes, "largest value accepted")
	maxPipeReplies := fs.Int("max-pipeline-reply-bytes", server.DefaultMaxPipelineReplyBytes,
		"bytes of replies one pipeline stream may hold (unsent, or reserved by running calls) before the server stops reading it")
	maxRange := fs.Int("max-range-bytes", server.DefaultMaxRangeBytes,
		"bytes of keys and values one Range answer may carry; it stops there with more set (at least one key is always returned)")
	maxTxnOps := fs.Int("max-txn-ops", server.DefaultMaxTxnOps,
		"compares, and operations per branch, one etcd transaction may have; a nested one gets what its enclosing one leaves over (etcd's flag)")
	compactMode := fs.String("auto-compaction-mode", server.CompactionPeriodic,
		"how the leader compacts the history: periodic (keep --auto-compaction-retention of time) or revision (keep that many revisions)")
	compactKeep := fs.String("auto-compaction-retention", server.DefaultAutoCompactionRetention,
		"history to keep: a duration (5m, 1h) or hours in periodic mode, a number of revisions in revision mode; 0 turns automatic compaction off")
	maxLearners := fs.Int("max-learners", server.DefaultMaxLearners,
		"learners etcd's MemberAdd with isLearner may leave in the cluster, as etcd's flag (a voter being added is a learner until caught up, and counts)")
	maxBackups := fs.Int("max-concurrent-backups", server.DefaultMaxConcurrentBackups,
		"Snapshot (backup) calls served at once; more are refused with ResourceExhausted (each holds a read transaction of the state open while its client reads)")
	maxSnap := fs.Int64("max-snapshot-bytes", 0,
		"largest snapshot taken from a peer; a larger one is refused and its spool file removed (0: 4 × --quota-backend-bytes, 8 GiB by default)")
	maxSessions := fs.Int("max-sessions", server.DefaultMaxSessions,
		"open exactly-once sessions at most; past it a Register reclaims only a session idle longer than --session-ttl, or is refused with ResourceExhausted")
	sessionTTL := fs.Duration("session-ttl", server.DefaultSessionTTL,
		"how long a session must have been idle before a Register may reclaim it when --max-sessions are open (at least 30s)")
	quota := fs.Int64("quota-backend-bytes", server.DefaultQuotaBackendBytes,
		"storage quota: a put or compare-and-swap that would take the store past it is refused and the NOSPACE alarm raised, refusing them until it is disarmed (kvctl alarm disarm); 0: the default")
	reqTimeout := fs.Duration("request-timeout", server.DefaultRequestTimeout, "how long a request waits for its outcome when the client sets no deadline")
	tokenTTL := fs.Duration("auth-token-ttl", server.DefaultAuthTokenTTL, "how long a token from logging in (auth enabled) is accepted")
	bcryptCost := fs.Int("bcrypt-cost", 10, "bcrypt cost of the password hashes this member makes (4 to 31; each step doubles the time of a log in)")
	gcPercent := fs.Int("gc-percent", 100, "garbage collector target (as GOGC); higher trades memory for CPU; GOGC in the environment wins")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	setup := addSetupFlags(fs) // TLS and --restore: setup.go
	// --listen-metrics and --trace-*: observability.go
	observe := addObservabilityFlags(fs)
	showVersion := version.AddFlag(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, version.String("keyvald"))
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q (keyvald takes only flags; see keyvald --help)", fs.Arg(0))}
	}
	if err := fromEnv(fs); err != nil {
		return err
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(*gcPercent)
	}
	logger, err := newLogger(*logFormat, *logLevel)
	if err != nil {
		return err
	}
	obs, stopTracing, err := observe.start(core.NodeID(*id), logger)
	if err != nil {
		return err
	}
	defer stopTracing()
	var members map[core.NodeID]string
	var joinAddrs []string
	if *join != "" {
		joinAddrs = strings.Split(*join, ",")
	}
	if *cluster != "" {
		if members, err = server.ParseCluster(*cluster); err != nil {
			return fmt.Errorf("--initial-cluster: %w", err)
		}
	}
	srv, err := setup.newServer(server.Config{
		ID: core.NodeID(*id), DataDir: *dataDir, ClientAddr: *clientAddr, ClientHTTPAddr: *clientHTTPAddr, PeerAddr: *peerAddr,
		InitialCluster: members, Join: joinAddrs, ClusterToken: *token, HeartbeatInterval: *heartbeat, ElectionTimeout: *election,
		SnapshotEvery: *snapEvery, CatchUpEntries: *catchUp, MaxLearnerLag: *learnerLag, NoWALRepair: !*walRepair, WALRepairDistrustsEnd: *walRepairDistrust, DetectLostWrites: *detectLost, MaxKeyBytes: *maxKey, MaxValueBytes: *maxValue, RequestTimeout: *reqTimeout,
		MaxPipelineReplyBytes: *maxPipeReplies, MaxRangeBytes: *maxRange, MaxTxnOps: *maxTxnOps, MaxLearners: *maxLearners,
		AutoCompactionMode: *compactMode, AutoCompactionRetention: *compactKeep,
		MaxConcurrentBackups: *maxBackups, MaxSnapshotBytes: *maxSnap, AuthTokenTTL: *tokenTTL, BcryptCost: *bcryptCost,
		MaxSessions: *maxSessions, SessionTTL: *sessionTTL, QuotaBackendBytes: *quota, Logger: logger, Observability: obs,
	})
	if err != nil {
		return err
	}
	removePIDFile := writePIDFile(*dataDir, logger)
	defer removePIDFile()
	srv.Start()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		logger.Info("shutting down", "node", *id, "signal", s.String())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Stop(ctx)
		return nil
	case <-srv.Done():
		return srv.Err()
	}
}

// fromEnv sets every flag not given on the command line from KEYVALD_*.
func fromEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "KEYVALD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !given[f.Name] && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	return slog.New(h), nil
}
