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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/therealutkarshpriyadarshi/keyval/client/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/disk/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/net/transport"
	"github.com/therealutkarshpriyadarshi/keyval/server/replica"
)

// Server is one running KeyVal node.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store *kvstore.Bolt
	rep   *replica.Replica // owned by the event loop goroutine
	tr    *transport.Transport

	clientSrv *grpc.Server
	peerSrv   *grpc.Server
	clientLis net.Listener
	peerLis   net.Listener

	// inbox carries work into the event loop: every touch of rep happens
	// there, so the replica needs no locks.
	inbox chan func()
	// applyQ feeds the state machine's goroutine (see loop).
	applyQ chan job
	// waiters are the requests waiting for the replica's answer, by id;
	// only the event loop touches them.
	waiters map[uint64]chan replica.Outcome
	nextID  atomic.Uint64
	// leader is the leader the loop last saw, for response headers.
	leader atomic.Uint64

	// forward holds client connections to other members' peer ports, to
	// forward writes to the leader.
	fwdMu   sync.Mutex
	forward map[core.NodeID]apipb.KVClient
	fwdConn []*grpc.ClientConn

	stopping  chan struct{}
	loopDone  chan struct{}
	fatalErr  error
	fatalOnce sync.Once
	closeOnce sync.Once
	stopped   chan struct{}
}

// identity is written into the data directory on first start, so that a
// data directory is never used by another node or cluster.
type identity struct {
	NodeID    uint64 `json:"node_id"`
	ClusterID string `json:"cluster_id"`
}

// New opens the node's storage (recovering from it if present) and binds
// its listeners. Start runs it.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger.With("node", uint64(cfg.ID)),
		inbox: make(chan func(), 4096), applyQ: make(chan job, maxInflight+8), waiters: map[uint64]chan replica.Outcome{},
		forward: map[core.NodeID]apipb.KVClient{}, stopping: make(chan struct{}),
		loopDone: make(chan struct{}), stopped: make(chan struct{}),
	}
	if err := s.checkIdentity(); err != nil {
		return nil, err
	}
	store, err := kvstore.OpenBolt(filepath.Join(cfg.DataDir, "state.db"), kvstore.Options{NoSync: true})
	if err != nil {
		return nil, fmt.Errorf("open state machine: %w", err)
	}
	s.store = store
	peers := make([]core.NodeID, 0, len(cfg.InitialCluster))
	for id := range cfg.InitialCluster {
		peers = append(peers, id)
	}
	slices.Sort(peers)
	electionTicks := max(int(cfg.ElectionTimeout/cfg.HeartbeatInterval), 2)
	rep, err := replica.Open(replica.Config{
		Core: core.Config{
			ID: cfg.ID, Peers: peers, ElectionTick: electionTicks, HeartbeatTick: 1,
			Seed: uint64(time.Now().UnixNano()),
		},
		FS: disk.OSFS{}, Dir: cfg.DataDir, Store: store,
		SnapshotEvery: cfg.SnapshotEvery, KeepSnapshots: 2,
		Send: s.send, Done: s.done,
	})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("recover node %d from %s: %w", cfg.ID, cfg.DataDir, err)
	}
	s.rep = rep
	if torn, skipped, restored := rep.Recovery(); torn != nil || len(skipped) > 0 || restored > 0 {
		s.log.Warn("recovered from a crash", "torn_tail", torn, "skipped_snapshots", skipped, "restored_snapshot", restored)
	}
	others := map[core.NodeID]string{}
	for id, addr := range cfg.InitialCluster {
		if id != cfg.ID {
			others[id] = addr
		}
	}
	tr, err := transport.New(transport.Config{
		ID: cfg.ID, ClusterID: cfg.ClusterID(), Peers: others,
		ServerTLS: cfg.PeerServerTLS, ClientTLS: cfg.PeerClientTLS, Logger: s.log,
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

func (s *Server) checkIdentity() error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	want := identity{NodeID: uint64(s.cfg.ID), ClusterID: fmt.Sprintf("%016x", s.cfg.ClusterID())}
	path := filepath.Join(s.cfg.DataDir, "identity.json")
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		b, _ = json.Marshal(want)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read %s: %w", path, err)
	}
	var have identity
	if err := json.Unmarshal(b, &have); err != nil {
		return fmt.Errorf("%s is damaged (%v); is this a KeyVal data directory?", path, err)
	}
	if have.NodeID != want.NodeID {
		return fmt.Errorf("data directory %s belongs to node %d, not node %d: use that node's id or another directory", s.cfg.DataDir, have.NodeID, want.NodeID)
	}
	if have.ClusterID != want.ClusterID {
		return fmt.Errorf("data directory %s belongs to another cluster (id %s; this configuration makes %s): check --initial-cluster and --cluster-token, or use another directory",
			s.cfg.DataDir, have.ClusterID, want.ClusterID)
	}
	return nil
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
	s.peerSrv = grpc.NewServer(append(s.tr.ServerOptions(), maxMsg)...)
	s.tr.Register(s.peerSrv)
	api := &kvService{s: s}
	apipb.RegisterKVServer(s.peerSrv, api) // forwarded requests arrive here
	opts := []grpc.ServerOption{maxMsg}
	if s.cfg.ClientTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.ClientTLS)))
	}
	s.clientSrv = grpc.NewServer(opts...)
	apipb.RegisterKVServer(s.clientSrv, api)
	registerHealth(s.clientSrv)
	return nil
}

// ClientAddr and PeerAddr are the bound addresses (useful with port 0).
func (s *Server) ClientAddr() string { return s.clientLis.Addr().String() }
func (s *Server) PeerAddr() string   { return s.peerLis.Addr().String() }

// Start runs the event loop and serves both ports. It returns at once.
func (s *Server) Start() {
	go s.loop()
	go func() { _ = s.peerSrv.Serve(s.peerLis) }()
	go func() { _ = s.clientSrv.Serve(s.clientLis) }()
	s.log.Info("node started", "client", s.ClientAddr(), "peer", s.PeerAddr(),
		"cluster", FormatCluster(s.cfg.InitialCluster), "data_dir", s.cfg.DataDir)
}

// Done is closed when the node has stopped (after Stop, or a fatal storage
// error); Err then says why, if it was not asked to stop.
func (s *Server) Done() <-chan struct{} { return s.stopped }

// Err is the fatal error that stopped the node, if any.
func (s *Server) Err() error { return s.fatalErr }

// maxInflight bounds the batches between Ready and Finish. It is large so
// that the loop keeps answering heartbeats and votes (which leave with
// every Ready) while the state machine is busy, e.g. writing a snapshot;
// a batch holds only references to entries already in the log.
const maxInflight = 256

// job is work for the WAL or state machine goroutine.
type job struct {
	batch *replica.Batch
	// compact: release the WAL behind the snapshot batch took.
	compact bool
	// store: write a received snapshot's file (state machine side).
	store func() error
	done  chan error
	// quit stops the state machine's goroutine.
	quit bool
}

// loop is the event loop: the only goroutine that touches the Raft core
// and the requests waiting on it. Each Ready goes down a pipeline — the WAL
// goroutine persists it (one fsync), the state machine goroutine applies
// it, and it comes back here to answer clients and Advance — so the loop
// keeps taking messages and proposals while batches are fsynced and
// applied.
func (s *Server) loop() {
	defer close(s.loopDone)
	persistQ := make(chan job, 2*maxInflight+1)
	finishQ := make(chan *replica.Batch, maxInflight)
	errc := make(chan error, 2)
	var stages sync.WaitGroup
	stages.Add(2)
	go func() { // the WAL's goroutine
		defer stages.Done()
		defer func() { s.applyQ <- job{quit: true} }()
		var group []*replica.Batch
		for j := range persistQ {
			if j.compact {
				if err := s.rep.Compact(j.batch); err != nil {
					errc <- err
					return
				}
				continue
			}
			// Group commit across batches: write every batch already
			// waiting, fsync once, then acknowledge them all.
			group = append(group[:0], j.batch)
			var next *job
		gather:
			for len(group) < maxInflight {
				select {
				case j2, ok := <-persistQ:
					if !ok {
						break gather
					}
					if j2.compact {
						next = &j2
						break gather
					}
					group = append(group, j2.batch)
				default:
					break gather
				}
			}
			sync := false
			for _, b := range group {
				if err := s.rep.Write(b); err != nil {
					errc <- err
					return
				}
				sync = sync || b.MustSync()
			}
			if sync {
				if err := s.rep.Sync(); err != nil {
					errc <- err
					return
				}
			}
			for _, b := range group {
				s.rep.Acknowledge(b)
				s.applyQ <- job{batch: b}
			}
			if next != nil {
				if err := s.rep.Compact(next.batch); err != nil {
					errc <- err
					return
				}
			}
		}
	}()
	go func() { // the state machine's goroutine
		defer stages.Done()
		var group []*replica.Batch
		for j := range s.applyQ {
			if j.quit {
				return
			}
			if j.store != nil {
				j.done <- j.store()
				continue
			}
			// Apply every batch already waiting in one transaction.
			group = append(group[:0], j.batch)
			var next *job
		gather:
			for len(group) < maxInflight {
				select {
				case j2 := <-s.applyQ:
					if j2.batch == nil {
						next = &j2
						break gather
					}
					group = append(group, j2.batch)
				default:
					break gather
				}
			}
			if err := s.rep.ApplyGroup(group); err != nil {
				errc <- err
				for j := range s.applyQ { // let the WAL goroutine finish
					if j.quit {
						return
					}
				}
			}
			for _, b := range group {
				finishQ <- b
			}
			if next != nil {
				if next.quit {
					return
				}
				next.done <- next.store()
			}
		}
	}()
	defer func() {
		close(persistQ)
		stages.Wait()
	}()

	ticker := time.NewTicker(s.cfg.HeartbeatInterval)
	defer ticker.Stop()
	inflight := 0
	finish := func(b *replica.Batch) bool {
		inflight--
		if err := s.rep.Finish(b); err != nil {
			s.fatal(err)
			return false
		}
		if b.TookSnapshot() {
			persistQ <- job{batch: b, compact: true}
		}
		return true
	}
	var lastRole core.Role
	var lastLead core.NodeID
	for {
		select {
		case <-s.stopping:
			return
		case err := <-errc:
			s.fatal(err)
			return
		case <-ticker.C:
			s.rep.Node().Tick()
		case f := <-s.inbox:
			f()
		case b := <-finishQ:
			if !finish(b) {
				return
			}
		}
		// Take everything else that is waiting, so one Ready (one fsync)
		// covers all of it: that is group commit.
	drain:
		for range 4096 {
			select {
			case f := <-s.inbox:
				f()
			case b := <-finishQ:
				if !finish(b) {
					return
				}
			default:
				break drain
			}
		}
		for inflight < maxInflight {
			b, ok := s.rep.Ready()
			if !ok {
				break
			}
			inflight++
			persistQ <- job{batch: b}
		}
		if ss := s.rep.Node().SoftState(); ss.Role != lastRole || ss.Lead != lastLead {
			lastRole, lastLead = ss.Role, ss.Lead
			s.leader.Store(uint64(ss.Lead))
			s.log.Info("role changed", "role", ss.Role.String(), "leader", uint64(ss.Lead),
				"term", s.rep.Node().Status().HardState.Term)
		}
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
		snap, err := s.rep.OpenSnapshot(m.Snapshot.Index)
		if err != nil {
			s.log.Error("cannot read the snapshot to send; taking a new one", "to", uint64(m.To), "err", err)
			s.rep.RequestSnapshot()
			s.rep.Node().ReportSnapshot(m.To, false)
			continue
		}
		s.log.Info("sending snapshot", "to", uint64(m.To), "index", m.Snapshot.Index, "bytes", snap.Size)
		s.tr.SendSnapshot(m, snap)
	}
	s.tr.Send(rest)
}

// done receives the replica's answer to request id (on the event loop).
func (s *Server) done(id uint64, out replica.Outcome) {
	if ch, ok := s.waiters[id]; ok {
		delete(s.waiters, id)
		ch <- out
	}
}

// Stop shuts the node down: no new requests, in-flight ones finish or fail,
// the WAL and bbolt are closed.
func (s *Server) Stop(ctx context.Context) {
	s.closeOnce.Do(func() {
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
		s.log.Info("node stopped")
		close(s.stopped)
	})
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
		if err := s.rep.Step(m); err != nil {
			s.log.Warn("refused a peer message", "from", uint64(m.From), "type", m.Type.String(), "err", err)
		}
	})
}

func (h *peerHandler) ReportUnreachable(id core.NodeID) {
	h.post(func() { h.rep.Node().ReportUnreachable(id) })
}

func (h *peerHandler) ReportSnapshot(id core.NodeID, ok bool) {
	h.post(func() { h.rep.Node().ReportSnapshot(id, ok) })
}

// ReceiveSnapshot spools the snapshot to a file first, on the transport's
// goroutine, so the event loop is never stuck reading from the network.
func (h *peerHandler) ReceiveSnapshot(m core.Message, data io.Reader) error {
	s := (*Server)(h)
	spool, err := os.CreateTemp(s.cfg.DataDir, "incoming-snapshot-*")
	if err != nil {
		return fmt.Errorf("spool snapshot: %w", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	if _, err := io.Copy(spool, data); err != nil {
		return fmt.Errorf("receive snapshot at %d: %w", m.Snapshot.Index, err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spool snapshot: %w", err)
	}
	// Snapshot files are written on the state machine's goroutine; the
	// core hears of the snapshot once its file is durable.
	done := make(chan error, 1)
	select {
	case s.applyQ <- job{store: func() error { return s.rep.StoreSnapshot(m, spool) }, done: done}:
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
