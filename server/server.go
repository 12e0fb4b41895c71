package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/internal/flowwindow"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/net/transport"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// Server is one running KeyVal node.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store *kvstore.Bolt
	rep   *replica.Replica // owned by the event loop goroutine
	// openSnapshot opens a snapshot file to send (rep.OpenSnapshot: safe on
	// any goroutine); tests hold it.
	openSnapshot func(index uint64) (*disk.Snapshot, error)
	tr           *transport.Transport

	clientSrv *grpc.Server
	peerSrv   *grpc.Server
	clientLis net.Listener
	clientMux *portMux // splits the client port between gRPC and HTTP
	peerLis   net.Listener
	gw        *gateway // the client port's HTTP side, and ClientHTTPAddr's

	// inbox carries work into the event loop: every touch of rep happens
	// there, so the replica needs no locks.
	inbox chan func()
	// storeQ feeds the state machine stage (stages.go); received
	// snapshots are written there too, in order with applying.
	storeQ chan replica.StoreJob
	// waiters are the requests waiting for the replica's answer, by id;
	// only the event loop touches them.
	waiters map[uint64]chan replica.Outcome
	nextID  atomic.Uint64
	// leader is the leader the loop last saw, for response headers; term
	// its term, for etcd's headers.
	leader atomic.Uint64
	term   atomic.Uint64
	// leaderChanged is closed, and replaced, whenever leader changes:
	// awaitLeaderChange waits on it.
	leaderMu      sync.Mutex
	leaderChanged chan struct{}

	// forward holds client connections to other members' peer ports, to
	// forward writes and membership changes to the leader.
	fwdMu   sync.Mutex
	forward map[core.NodeID]*grpc.ClientConn
	fwdConn []*grpc.ClientConn

	// book is every member's peer address; clusterID is what peers check
	// (from the initial cluster, or learned when this node joined).
	book      addressBook
	clusterID uint64
	// removed is set once this node applied its own removal.
	removed atomic.Bool
	// behindRepair mirrors replica.BehindRepair for the API's goroutines
	// (set at start and after each state machine stage).
	behindRepair atomic.Bool
	// vouches and asking are what this node's members said of peers
	// outside its configuration (vouch.go); loop side.
	vouches map[core.NodeID]vouchState
	asking  int

	// draining closes when Stop begins: pipelines stop taking calls.
	draining  chan struct{}
	stopping  chan struct{}
	loopDone  chan struct{}
	fatalErr  error
	fatalOnce sync.Once
	closeOnce sync.Once
	stopped   chan struct{}

	// obs is metrics, tracing, health and state logging (observe.go).
	obs *observer

	// backupSlots holds one token per Snapshot call being served;
	// receivingSnap is set while a peer's snapshot is being received. Both
	// bound what clients and peers can make this node spool to disk.
	backupSlots   chan struct{}
	receivingSnap atomic.Bool

	// limits is the event loop's part of the session cap and the storage
	// quota (limits.go).
	limits limitState

	// lessor is the leader's clock for leases (lease.go).
	lessor *lessor

	// watches delivers applied changes to etcd watchers (watch.go).
	watches *watchHub
}

// identity is written into the data directory on first start, so that a
// data directory is never used by another node or cluster.
type identity struct {
	NodeID    uint64 `json:"node_id"`
	ClusterID string `json:"cluster_id"`
	// Joined marks a node that joined a running cluster (--join) instead
	// of bootstrapping one; Peers are the members it was told of then.
	Joined bool              `json:"joined,omitempty"`
	Peers  map[string]string `json:"peers,omitempty"`
}

// New opens the node's storage (recovering from it if present) and binds
// its listeners. Start runs it.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger.With("node", uint64(cfg.ID)),
		inbox: make(chan func(), 4096), storeQ: make(chan replica.StoreJob, replica.DefaultMaxInflight+8), waiters: map[uint64]chan replica.Outcome{}, vouches: map[core.NodeID]vouchState{},
		forward: map[core.NodeID]*grpc.ClientConn{}, stopping: make(chan struct{}), leaderChanged: make(chan struct{}),
		draining: make(chan struct{}), loopDone: make(chan struct{}), stopped: make(chan struct{}),
		backupSlots: make(chan struct{}, cfg.MaxConcurrentBackups),
	}
	s.obs = newObserver(s)
	s.lessor = newLessor(s)
	joined, known, err := s.checkIdentity()
	if err != nil {
		return nil, err
	}
	store, err := s.openStateDB()
	if err != nil {
		return nil, fmt.Errorf("open state machine: %w", err)
	}
	s.store = store
	s.watches = newWatchHub(store, appliedEvents{store}, cfg.WatchMaxQueuedBytes, s.log)
	if err := s.registerLimitMetrics(); err != nil {
		store.Close()
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	if err := s.loadAddressBook(known); err != nil {
		store.Close()
		return nil, err
	}
	// A joining node has no membership of its own: the leader that added
	// it sends the log (or a snapshot) that holds it.
	var peers []core.NodeID
	if !joined {
		peers = sortedPeerIDs(cfg.InitialCluster)
	}
	electionTicks := max(int(cfg.ElectionTimeout/cfg.HeartbeatInterval), 2)
	walRepairs := prometheus.NewCounter(prometheus.CounterOpts{Name: "keyval_wal_repairs_total",
		Help: "Times this node found its WAL damaged at start (or behind its copy of term and vote), or its snapshot files damaged beyond what the WAL covers, and repaired it from the other members, keeping its log or starting it over (docs/disk.md, Repair from peers)."})
	if err := s.obs.m.Register(walRepairs); err != nil {
		store.Close()
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	rep, err := replica.Open(replica.Config{
		Core: core.Config{
			ID: cfg.ID, Peers: peers, Join: joined, ElectionTick: electionTicks, HeartbeatTick: 1, MaxLearnerLag: cfg.MaxLearnerLag,
			Seed: uint64(time.Now().UnixNano()),
		},
		FS: disk.OSFS{}, Dir: cfg.DataDir, Store: store,
		SnapshotEvery: cfg.SnapshotEvery, SnapshotPhase: snapshotPhase(cfg.ID, cfg.SnapshotEvery), KeepSnapshots: 2,
		CatchUpEntries: cfg.CatchUpEntries,
		Send:           s.send, Done: s.done, ConfChanged: s.confChanged, SnapshotApplied: s.snapshotApplied,
		Observe:   replica.Observer{Sync: s.obs.walSync, Apply: s.obs.applyGroup},
		RepairWAL: !cfg.NoWALRepair, DistrustWALEnd: cfg.WALRepairDistrustsEnd,
		DetectLostWrites: cfg.DetectLostWrites,
	})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("recover node %d from %s: %w", cfg.ID, cfg.DataDir, err)
	}
	s.rep = rep
	s.openSnapshot = rep.OpenSnapshot
	// Open may have rebuilt the state machine (from a snapshot file, or over
	// again after damage), and the member records with it: read them again.
	if err := s.loadAddressBook(known); err != nil {
		_ = rep.Close()
		s.closeStorage()
		return nil, err
	}
	s.behindRepair.Store(rep.BehindRepair())
	if torn, skipped, restored := rep.Recovery(); torn != nil || len(skipped) > 0 || restored > 0 {
		s.log.Warn("recovered from a crash", "torn_tail", torn, "skipped_snapshots", skipped, "restored_snapshot", restored)
	}
	if d := rep.Repaired(); d != nil {
		s.log.Warn("the WAL was damaged: repaired it; the log starts over from the newest snapshot and is fetched from the leader, "+
			"and until it is back this member votes as if it still had it and does not campaign",
			"damage", d.String(), "vote_floor_term", rep.VoteFloor().Term, "vote_floor_index", rep.VoteFloor().Index)
		walRepairs.Inc()
	}
	if d := rep.KeptHoles(); d != nil {
		s.log.Warn("the WAL was damaged: kept the log; the entries lost with it, known by index and term, are fetched from the other members "+
			"before they are applied, and until then this member does not campaign",
			"damage", d.String(), "holes", len(rep.Node().Holes()))
		walRepairs.Inc()
	}
	if why := rep.FloorRepaired(); why != nil {
		s.log.Warn("the vote floor file was damaged: replaced by the start of the next term, so this member votes again only once a leader of a later term has replicated to it",
			"damage", why, "vote_floor_term", rep.VoteFloor().Term)
	}
	if why := rep.LostTail(); why != nil {
		s.log.Warn("the WAL lost records it had synced: this member keeps the term and vote it promised and the log it has, and until a leader has given it a log reaching its vote floor it does not campaign and votes only for members whose log does",
			"why", why, "vote_floor_term", rep.VoteFloor().Term, "vote_floor_index", rep.VoteFloor().Index)
		walRepairs.Inc()
	}
	if why := rep.SnapshotRepaired(); why != nil {
		s.log.Warn("the state machine could not be rebuilt from the snapshot files and the WAL: the log starts over from an older snapshot (or the bootstrap state) and is fetched from the leader, "+
			"and until it is back this member votes as if it still had it and does not campaign",
			"why", why, "vote_floor_term", rep.VoteFloor().Term, "vote_floor_index", rep.VoteFloor().Index)
		walRepairs.Inc()
	}
	others := s.book.snapshot()
	delete(others, cfg.ID)
	tr, err := transport.New(transport.Config{
		ID: cfg.ID, ClusterID: s.clusterID, Peers: others,
		ServerTLS: cfg.PeerServerTLS, ClientTLS: cfg.PeerClientTLS, Logger: cfg.Logger, // the transport adds the node id
		PeerIdentity: cfg.PeerServerTLS != nil, Refused: s.obs.peerRefused,
	}, (*peerHandler)(s))
	if err != nil {
		s.closeStorage()
		return nil, fmt.Errorf("start transport: %w", err)
	}
	s.tr = tr
	if err := s.listen(); err != nil {
		tr.Close()
		s.closeStorage()
		return nil, err
	}
	return s, nil
}

// checkIdentity makes sure the data directory belongs to this node of this
// cluster, writing its identity on first start. It sets s.clusterID and
// reports whether the node joined a running cluster, and the peer
// addresses it learned then (a first start with --join asks the cluster).
func (s *Server) checkIdentity() (joined bool, peers map[core.NodeID]string, err error) {
	// Only the owner may read the keys and values kept here (a directory
	// that already exists keeps its mode: the operator chose it).
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return false, nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(s.cfg.DataDir, "identity.json")
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		want := identity{NodeID: uint64(s.cfg.ID)}
		if len(s.cfg.Join) > 0 {
			info, err := s.askToJoin(context.Background())
			if err != nil {
				return false, nil, err
			}
			s.clusterID, peers, joined = info.clusterID, info.peers, true
			want.Joined, want.Peers = true, map[string]string{}
			for id, a := range peers {
				want.Peers[strconv.FormatUint(uint64(id), 10)] = a
			}
		} else {
			if err := s.cfg.checkMember(); err != nil {
				return false, nil, err
			}
			s.clusterID, peers = s.cfg.ClusterID(), s.cfg.InitialCluster
		}
		want.ClusterID = fmt.Sprintf("%016x", s.clusterID)
		b, _ = json.Marshal(want)
		// Whole or not at all: a torn identity would refuse every start.
		if err := disk.WriteFile(disk.OSFS{}, path, b); err != nil {
			return false, nil, fmt.Errorf("record the node's identity: %w", err)
		}
		return joined, peers, nil
	case err != nil:
		return false, nil, fmt.Errorf("read %s: %w", path, err)
	}
	var have identity
	if err := json.Unmarshal(b, &have); err != nil {
		return false, nil, fmt.Errorf("%s is damaged (%v); is this a KeyVal data directory?", path, err)
	}
	if have.NodeID != uint64(s.cfg.ID) {
		return false, nil, fmt.Errorf("data directory %s belongs to node %d, not node %d: use that node's id or another directory", s.cfg.DataDir, have.NodeID, s.cfg.ID)
	}
	cid, err := strconv.ParseUint(have.ClusterID, 16, 64)
	if err != nil {
		return false, nil, fmt.Errorf("%s is damaged (cluster id %q); is this a KeyVal data directory?", path, have.ClusterID)
	}
	if have.Joined {
		s.clusterID, peers = cid, map[core.NodeID]string{}
		for k, a := range have.Peers {
			id, err := strconv.ParseUint(k, 10, 64)
			if err != nil || id == 0 {
				return false, nil, fmt.Errorf("%s is damaged (peer id %q)", path, k)
			}
			peers[core.NodeID(id)] = a
		}
		return true, peers, nil
	}
	if err := s.cfg.checkMember(); err != nil {
		return false, nil, err
	}
	if want := s.cfg.ClusterID(); cid != want {
		return false, nil, fmt.Errorf("data directory %s belongs to another cluster (id %s; this configuration makes %016x): check --initial-cluster and --cluster-token, or use another directory",
			s.cfg.DataDir, have.ClusterID, want)
	}
	s.clusterID = cid
	return false, s.cfg.InitialCluster, nil
}

func (s *Server) listen() error {
	var err error
	s.peerLis, err = net.Listen("tcp", s.cfg.PeerAddr)
	if err != nil {
		return fmt.Errorf("listen for peers on %s: %w", s.cfg.PeerAddr, err)
	}
	s.clientLis, err = net.Listen("tcp", s.cfg.ClientAddr)
	if err != nil {
		s.peerLis.Close()
		return fmt.Errorf("listen for clients on %s: %w", s.cfg.ClientAddr, err)
	}
	maxMsg := grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes)
	peerOpts := append(append(s.tr.ServerOptions(), maxMsg), s.obs.peerServerOptions()...)
	s.peerSrv = grpc.NewServer(append(peerOpts, s.authInterceptors("peer")...)...)
	s.tr.Register(s.peerSrv)
	authSvc := newAuthService(s)
	// Forwarded requests arrive at the peer port.
	apipb.RegisterKVServer(s.peerSrv, &kvService{s: s, port: "peer"})
	apipb.RegisterClusterServer(s.peerSrv, &clusterService{s: s})
	apipb.RegisterMaintenanceServer(s.peerSrv, &maintenanceService{s: s})
	apipb.RegisterAuthServer(s.peerSrv, authSvc)
	pb.RegisterKVServer(s.peerSrv, &etcdKV{s: s})
	pb.RegisterMaintenanceServer(s.peerSrv, &etcdMaintenance{s: s, native: &maintenanceService{s: s}})
	pb.RegisterLeaseServer(s.peerSrv, &etcdLease{s: s})
	// Clients' messages may pass the request limit by etcd's allowance,
	// as etcd's client port takes them, so that one a little too large
	// meets refuseOversized (etcd's ErrRequestTooLarge) rather than gRPC's
	// own refusal, which etcd's clients do not recognize.
	clientMax := grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes + requestAllowance)
	opts := append([]grpc.ServerOption{clientMax, grpc.ChainUnaryInterceptor(s.refuseOversized)}, flowwindow.ServerOptions()...)
	opts = append(opts, s.obs.clientServerOptions()...)
	opts = append(opts, s.authInterceptors("client")...)
	if s.cfg.ClientTLS != nil {
		// The port's mux has done the handshake (portMux).
		opts = append(opts, grpc.Creds(handshakenTLS{}))
	}
	s.clientSrv = grpc.NewServer(opts...)
	apipb.RegisterKVServer(s.clientSrv, &kvService{s: s, port: "client"})
	apipb.RegisterClusterServer(s.clientSrv, &clusterService{s: s})
	apipb.RegisterMaintenanceServer(s.clientSrv, &maintenanceService{s: s})
	apipb.RegisterAuthServer(s.clientSrv, authSvc)
	s.registerEtcd(s.clientSrv, authSvc)
	s.obs.registerHealth(s.clientSrv)
	if err := s.obs.listenHTTP(); err != nil {
		s.peerLis.Close()
		s.clientLis.Close()
		return err
	}
	s.clientMux = newPortMux(s.clientLis, s.cfg.ClientTLS)
	if err := s.listenGateway(s.clientMux.http); err != nil {
		s.peerLis.Close()
		s.clientLis.Close()
		if s.obs.httpLis != nil {
			s.obs.httpLis.Close()
		}
		return err
	}
	return nil
}

// ClientAddr and PeerAddr are the bound addresses (useful with port 0).
func (s *Server) ClientAddr() string { return s.clientLis.Addr().String() }
func (s *Server) PeerAddr() string   { return s.peerLis.Addr().String() }

// Start runs the event loop and serves both ports. It returns at once.
func (s *Server) Start() {
	handBackMemory() // New built the state from the whole history
	s.obs.start()
	go s.loop()
	go s.compactor(s.cfg.compaction)
	go s.watches.run(s.stopping)
	go s.expireLeases()
	go func() { _ = s.peerSrv.Serve(s.peerLis) }()
	go s.clientMux.serve()
	go func() { _ = s.clientSrv.Serve(s.clientMux.grpc) }()
	s.gw.start(s.log)
	s.log.Info("node started", "client", s.ClientAddr(), "peer", s.PeerAddr(),
		"cluster", FormatCluster(s.cfg.InitialCluster), "data_dir", s.cfg.DataDir)
}

// handBackMemory collects garbage and returns what it freed to the system.
// Opening a member's data and installing a snapshot allocate far more than
// the member keeps: the key index built from the whole history, the WAL
// read whole, a restore's one bbolt transaction over the whole state (whose
// page buffers bbolt keeps in a sync.Pool, freed only by the collector's
// second cycle after). Go returns freed memory minutes later, or never on a
// member left idle; a restarted member held three to four times what it
// needs, one caught up by a snapshot over ten (docs/server.md). So two
// collections, the second with the hand-back (debug.FreeOSMemory), run
// after each. A stop of the world each: rare events only.
func handBackMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// Done is closed when the node has stopped (after Stop, or a fatal storage
// error); Err then says why, if it was not asked to stop.
func (s *Server) Done() <-chan struct{} { return s.stopped }

// Err is the fatal error that stopped the node, if any.
func (s *Server) Err() error { return s.fatalErr }

// loop is the event loop: the only goroutine that touches the Raft core
// and the requests waiting on it. It takes batches and finishes them; the
// stages between run on their own goroutines (stages.go), so the loop
// keeps taking messages and proposals while batches are fsynced and
// applied.
func (s *Server) loop() {
	defer close(s.loopDone)
	p := s.startStages()
	defer p.stop()
	ticker := time.NewTicker(s.cfg.HeartbeatInterval)
	defer ticker.Stop()
	var last core.SoftState
	for {
		select {
		case <-s.stopping:
			return
		case err := <-p.errc:
			s.fatal(err)
			return
		case <-ticker.C:
			s.rep.Node().Tick()
		case f := <-s.inbox:
			f()
		case b := <-p.finishQ:
			if !p.finish(b) {
				return
			}
		}
		// Take everything else that is waiting, so one Ready (one fsync)
		// covers all of it: that is group commit. Yield first: requests
		// woken by the same batch of answers are about to arrive, and a
		// Ready taken at once would leave them to the next one (paired
		// cluster runs: +27-30 % writes at 256 clients, +10 % at 64).
		runtime.Gosched()
		if !s.drainInbox(p) {
			return
		}
		p.take()
		last = s.noteState(last)
		s.obs.loopIteration(s.rep.Node())
	}
}

// drainInbox runs the work and finishes the batches already waiting, up to
// a bound so that ticks are not starved; false means the node must stop.
func (s *Server) drainInbox(p *stages) bool {
	for range 4096 {
		select {
		case f := <-s.inbox:
			f()
		case b := <-p.finishQ:
			if !p.finish(b) {
				return false
			}
		default:
			return true
		}
	}
	return true
}

// noteState publishes a change of role or leader (for response headers,
// metrics and the log) and returns the state now.
func (s *Server) noteState(last core.SoftState) core.SoftState {
	ss := s.rep.Node().SoftState()
	term := s.rep.Node().HardState().Term
	s.term.Store(term)
	if ss != last {
		s.leader.Store(uint64(ss.Lead))
		if ss.Lead != last.Lead {
			s.leaderMu.Lock()
			close(s.leaderChanged)
			s.leaderChanged = make(chan struct{})
			s.leaderMu.Unlock()
		}
		s.obs.stateChanged(last, ss, term)
		if ss.Lead == s.cfg.ID && last.Lead != s.cfg.ID {
			s.markCreation()
		}
	}
	return ss
}

// markCreation runs on the loop when this node becomes leader: a store at
// revision 0 (a new cluster) is taken to revision 1 by a Genesis command,
// so that clients' first write is revision 2, as in etcd. etcd's clients
// take revision 0 for "none": concurrency.Election waits for the keys
// created before its own with a filter at its create revision - 1, which
// would be no filter at all, and so wait forever, if that were 1. A
// Genesis proposed twice (a leader lost before it applied) changes nothing
// the second time.
func (s *Server) markCreation() {
	if s.store.Revision() != 0 {
		return
	}
	if err := s.rep.Propose(s.nextID.Add(1), kvstore.EncodeGenesis()); err != nil {
		s.log.Debug("could not propose the cluster's genesis", "err", err)
	}
}

// fatal stops the node after a storage failure: continuing could
// acknowledge what is not durable.
func (s *Server) fatal(err error) {
	s.fatalOnce.Do(func() {
		s.fatalErr = err
		s.log.Error("stopping: storage failure", "err", err)
		go s.Stop(context.Background())
	})
}

// do runs f on the event loop and waits for it, or fails if the node is
// stopping or ctx ends first.
func (s *Server) do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case s.inbox <- func() { f(); close(done) }:
	case <-s.stopping:
		return errStopping
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-s.loopDone:
		return errStopping
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errStopping = errors.New("node is shutting down")

// send is the replica's network: the transport never blocks. Snapshots
// go through their own stream.
func (s *Server) send(msgs []core.Message) {
	if !slices.ContainsFunc(msgs, func(m core.Message) bool { return m.Type == core.MsgSnap }) {
		s.tr.Send(msgs)
		return
	}
	rest := make([]core.Message, 0, len(msgs))
	for _, m := range msgs {
		if m.Type != core.MsgSnap {
			rest = append(rest, m)
			continue
		}
		s.tr.SendSnapshot(m, &outgoingSnapshot{s: s, m: m})
	}
	s.tr.Send(rest)
}

// outgoingSnapshot is the data of a MsgSnap being sent. Its file is opened
// at the transport's first read, on the transport's goroutine, not on the
// loop: opening verifies the whole file, which takes seconds for a state of
// gigabytes. A loop stopped that long sends no heartbeats; the other members
// elect a new leader, which stops in turn to open the same file, and the
// leadership changes every election timeout for as long as a follower waits
// for a snapshot (seen with 10,000,000 keys: term 7 to term 218 in three
// minutes).
type outgoingSnapshot struct {
	s    *Server
	m    core.Message
	snap *disk.Snapshot
	err  error
}

func (o *outgoingSnapshot) Read(p []byte) (int, error) {
	if o.snap == nil && o.err == nil {
		o.open()
	}
	if o.err != nil {
		return 0, o.err
	}
	return o.snap.Read(p)
}

// open opens the snapshot file. One that cannot be read fails the send (the
// transport reports it) and asks the loop for a new snapshot, so that the
// follower does not wait forever on a damaged file.
func (o *outgoingSnapshot) open() {
	s, index := o.s, o.m.Snapshot.Index
	snap, err := s.openSnapshot(index)
	if err != nil {
		o.err = fmt.Errorf("open the snapshot at index %d: %w", index, err)
		s.log.Error("cannot read the snapshot to send; taking a new one", "to", uint64(o.m.To), "err", err)
		(*peerHandler)(s).post(s.rep.RequestSnapshot)
		return
	}
	s.log.Info("sending snapshot", "to", uint64(o.m.To), "index", index, "bytes", snap.Size)
	o.snap = snap
}

func (o *outgoingSnapshot) Close() error {
	if o.snap == nil {
		return nil
	}
	return o.snap.Close()
}

// done receives the replica's answer to request id (on the event loop).
func (s *Server) done(id uint64, out replica.Outcome) {
	s.obs.answered(id)
	if ch, ok := s.waiters[id]; ok {
		delete(s.waiters, id)
		ch <- out
	}
}

// Stop shuts the node down: no new requests, in-flight ones finish or fail,
// the WAL and bbolt are closed.
func (s *Server) Stop(ctx context.Context) {
	s.closeOnce.Do(func() {
		s.obs.shuttingDown()
		s.handOverLeadership(ctx)
		// Streams end on draining, those that come by way of the HTTP
		// side too (the gateway's watches, gRPC over HTTPS), so that the
		// HTTP server's shutdown does not wait for them.
		close(s.draining)
		s.gw.stop(ctx, s.cfg.RequestTimeout)
		graceful := make(chan struct{})
		go func() {
			s.clientSrv.GracefulStop()
			close(graceful)
		}()
		select {
		case <-graceful:
		case <-ctx.Done():
			s.clientSrv.Stop()
		case <-time.After(s.cfg.RequestTimeout):
			s.clientSrv.Stop()
		}
		s.clientLis.Close() // in case it never served (Stop without Start)
		close(s.stopping)
		<-s.loopDone
		s.peerSrv.Stop()
		s.tr.Close()
		s.fwdMu.Lock()
		for _, c := range s.fwdConn {
			c.Close()
		}
		s.fwdMu.Unlock()
		if err := s.rep.Close(); err != nil {
			s.log.Error("close WAL", "err", err)
		}
		s.closeStorage()
		s.obs.close()
		s.log.Info("node stopped")
		close(s.stopped)
	})
}

// handOverLeadership, on a leader that stops, hands leadership to its
// most caught-up voter and waits, at most an election timeout, until
// another member leads (this one has heard from it), as etcd's leader
// does when it stops: the clients that
// move to the other members then find a leader there, not an election's
// gap without one (etcd's clients take "no leader" as the end of a watch
// that requires a leader, as etcdctl's do).
//
// A Stop whose context is already done hands nothing over.
func (s *Server) handOverLeadership(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ElectionTimeout)
	defer cancel()
	target := core.None
	err := s.do(ctx, func() {
		n := s.rep.Node()
		if n.SoftState().Role != core.Leader {
			return
		}
		var best uint64
		for _, id := range n.Conf().Voters {
			if m := n.Match(id); id != s.cfg.ID && (target == core.None || m > best) {
				target, best = id, m
			}
		}
		if target != core.None && n.TransferLeadership(target) != nil {
			target = core.None
		}
	})
	if err != nil || target == core.None {
		return
	}
	tick := time.NewTicker(s.cfg.HeartbeatInterval / 5)
	defer tick.Stop()
	for l := core.NodeID(s.leader.Load()); l == s.cfg.ID || l == core.None; l = core.NodeID(s.leader.Load()) {
		select {
		case <-ctx.Done():
			s.log.Warn("stopping: leadership not handed over within an election timeout", "to", target)
			return
		case <-tick.C: // the loop publishes the leader it sees (noteState)
		}
	}
	s.log.Info("stopping: handed leadership over", "to", target, "leader", s.leader.Load())
}

func (s *Server) closeStorage() {
	if err := s.store.Close(); err != nil {
		s.log.Error("close state machine", "err", err)
	}
}

// peerHandler receives from the transport and hands everything to the loop.
type peerHandler Server

// post hands f to the event loop without waiting for it to run; dropped
// once the node is stopping.
func (h *peerHandler) post(f func()) {
	select {
	case h.inbox <- f:
	case <-h.stopping:
	}
}

func (h *peerHandler) Step(m core.Message) {
	s := (*Server)(h)
	h.post(func() {
		if !s.admit(m) {
			return
		}
		if err := s.rep.Step(m); err != nil {
			s.obs.peerMessageRefused(m, err)
		}
	})
}

func (h *peerHandler) ReportUnreachable(id core.NodeID) {
	h.post(func() { h.rep.Node().ReportUnreachable(id) })
}

// ReportGone forgets the leader whose process the transport saw go, so
// that this follower takes part in electing the next one at once instead
// of first waiting out the dead leader's lease.
func (h *peerHandler) ReportGone(id core.NodeID) {
	h.post(func() {
		if h.rep.Node().ForgetLeader(id) {
			h.obs.m.leadersGone.Inc()
			h.log.Info("leader's process is gone; forgot it so an election can start without waiting out its lease", "leader", uint64(id))
		}
	})
}

func (h *peerHandler) ReportSnapshot(id core.NodeID, ok bool) {
	h.post(func() { h.rep.Node().ReportSnapshot(id, ok) })
}

// ReceiveSnapshot spools the snapshot to a file first, on the transport's
// goroutine, so the event loop is never stuck reading from the network.
func (h *peerHandler) ReceiveSnapshot(m core.Message, data io.Reader) error {
	s := (*Server)(h)
	var admitted bool
	if err := s.do(context.Background(), func() { admitted = s.admit(m) }); err != nil {
		return err
	}
	if !admitted {
		return status.Errorf(codes.PermissionDenied, "node %d takes no snapshot from node %d: it is not in its configuration", s.cfg.ID, m.From)
	}
	// One at a time: a second sender (a stale leader) would only double
	// the disk taken; it retries after the first is installed.
	if !s.receivingSnap.CompareAndSwap(false, true) {
		s.obs.m.peerSnapsRefused.WithLabelValues(refusedSnapBusy).Inc()
		return status.Errorf(codes.ResourceExhausted, "node %d is already receiving a snapshot: it takes one at a time", s.cfg.ID)
	}
	defer s.receivingSnap.Store(false)
	spool, err := os.CreateTemp(s.cfg.DataDir, "incoming-snapshot-*")
	if err != nil {
		return fmt.Errorf("spool snapshot: %w", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	if err := s.spoolSnapshot(m, data, spool); err != nil {
		return err
	}
	// Snapshot files are written on the state machine's goroutine; the
	// core hears of the snapshot once its file is durable.
	done := make(chan error, 1)
	select {
	case s.storeQ <- replica.StoreJob{Do: func() { done <- s.rep.StoreSnapshot(m, spool) }}:
	case <-s.stopping:
		return errStopping
	}
	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-s.stopping:
		return errStopping
	}
	var stepErr error
	if err := s.do(context.Background(), func() { stepErr = s.rep.StepSnapshot(m) }); err != nil {
		return err
	}
	if stepErr == nil {
		s.log.Info("received snapshot", "from", uint64(m.From), "index", m.Snapshot.Index)
	}
	return stepErr
}

// Reasons a peer's snapshot is refused (keyval_peer_snapshots_refused_total).
const (
	refusedSnapBusy     = "busy"
	refusedSnapTooLarge = "too_large"
)

// spoolSnapshot copies a peer's snapshot data into spool, stopping one
// byte past --max-snapshot-bytes: the size is known only from the stream's
// trailer, so the bound is enforced while copying.
func (s *Server) spoolSnapshot(m core.Message, data io.Reader, spool *os.File) error {
	limit := s.cfg.MaxSnapshotBytes
	n, err := io.Copy(spool, io.LimitReader(data, limit+1))
	if err != nil {
		return fmt.Errorf("receive snapshot at %d: %w", m.Snapshot.Index, err)
	}
	if n > limit {
		s.obs.m.peerSnapsRefused.WithLabelValues(refusedSnapTooLarge).Inc()
		return status.Errorf(codes.ResourceExhausted, "the snapshot at %d from node %d is over node %d's limit of %d bytes (--max-snapshot-bytes)",
			m.Snapshot.Index, m.From, s.cfg.ID, limit)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spool snapshot: %w", err)
	}
	return nil
}
