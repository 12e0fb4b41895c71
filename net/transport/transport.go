// Package transport carries Raft messages between KeyVal nodes over gRPC.
//
// Each peer gets a bounded queue and one goroutine that keeps a long-lived
// stream open to it and sends everything queued in batches. Send never blocks:
// when a queue is full the message is dropped and the peer reported
// unreachable, which is what Raft expects of a lossy network. Snapshots travel
// on their own stream, in checksummed chunks. See docs/net.md.
package transport

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/internal/flowwindow"
	"github.com/therealutkarshpriyadarshi/keyval/net/peerpb"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// Handler is what the transport delivers to. Its methods are called from the
// transport's goroutines, concurrently, never from inside Send or
// SendSnapshot; they must not block for long (hand the work to the event
// loop). After Close has begun no Report* call is made.
type Handler interface {
	// Step delivers a message from a peer, in the order the peer sent it.
	Step(m core.Message)
	// ReceiveSnapshot delivers a MsgSnap and its data. data returns io.EOF
	// only after the whole snapshot arrived and its checksum matched; any
	// other error (ErrChecksum among them) means the data must be thrown
	// away. Return once data has been read to io.EOF and the snapshot is
	// safely stored, or with an error to refuse it; do not keep data.
	ReceiveSnapshot(m core.Message, data io.Reader) error
	// ReportUnreachable says messages to id were lost.
	ReportUnreachable(id core.NodeID)
	// ReportSnapshot says whether a SendSnapshot to id was taken in full.
	ReportSnapshot(id core.NodeID, ok bool)
	// ReportGone says id's process is gone: a stream to it that was up
	// broke, and nothing listens at its address (a new connection was
	// refused, or reset at once). A host that vanished or a partition
	// refuses nothing, so they are never reported: only timeouts tell.
	ReportGone(id core.NodeID)
}

// PeerStats counts one peer's traffic. Sent and Dropped are outbound
// messages; Received are inbound ones, from that node. SentBytes and
// ReceivedBytes are the encoded size of the message batches and snapshot
// data (gRPC's framing and TLS excluded).
type PeerStats struct {
	Connected         bool // the outbound stream is established
	Sent              uint64
	SentBatches       uint64
	SentBytes         uint64
	Dropped           uint64
	Received          uint64
	ReceivedBatches   uint64
	ReceivedBytes     uint64
	SnapshotsSent     uint64
	SnapshotsFailed   uint64
	SnapshotsReceived uint64
}

type counters struct {
	connected                          atomic.Bool
	sent, sentBatches, dropped         atomic.Uint64
	received, receivedBatches          atomic.Uint64
	sentBytes, receivedBytes           atomic.Uint64
	snapsSent, snapsFailed, snapsRecvd atomic.Uint64
}

func (c *counters) snapshot() PeerStats {
	return PeerStats{
		Connected:         c.connected.Load(),
		Sent:              c.sent.Load(),
		SentBatches:       c.sentBatches.Load(),
		SentBytes:         c.sentBytes.Load(),
		Dropped:           c.dropped.Load(),
		Received:          c.received.Load(),
		ReceivedBatches:   c.receivedBatches.Load(),
		ReceivedBytes:     c.receivedBytes.Load(),
		SnapshotsSent:     c.snapsSent.Load(),
		SnapshotsFailed:   c.snapsFailed.Load(),
		SnapshotsReceived: c.snapsRecvd.Load(),
	}
}

// Transport sends and receives Raft messages. Create it with New, serve the
// peer service with Serve or Register, and stop it with Close.
type Transport struct {
	cfg Config
	h   Handler
	log *slog.Logger

	mu     sync.RWMutex
	peers  map[core.NodeID]*peer
	closed bool
	server *grpc.Server // the server Serve made, if any

	// closing is set when Close begins; it silences the handler's reports
	// and makes inbound streams stop delivering.
	closing atomic.Bool

	statsMu sync.Mutex
	stats   map[core.NodeID]*counters

	reports reporter
	// limit keeps complaints that repeat per message to a line now and then.
	limit logLimiter
}

// New builds a Transport and starts a sender for every peer in cfg.Peers.
func New(cfg Config, h Handler) (*Transport, error) {
	if h == nil {
		return nil, errors.New("transport: nil Handler")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:   cfg,
		h:     h,
		log:   cfg.Logger.With("node", uint64(cfg.ID)),
		peers: make(map[core.NodeID]*peer),
		stats: make(map[core.NodeID]*counters),
	}
	t.reports.start(t)
	for id, addr := range cfg.Peers {
		if id == cfg.ID {
			continue
		}
		if err := t.AddPeer(id, addr); err != nil {
			t.Close()
			return nil, err
		}
	}
	return t, nil
}

// Send queues messages for their recipients and returns at once. A message
// that cannot be queued is dropped (and, if its peer's queue was full, the
// peer is reported unreachable). MsgSnap must go through SendSnapshot: one
// given to Send is dropped and reported as a failed snapshot.
func (t *Transport) Send(msgs []core.Message) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Type == core.MsgSnap {
			t.log.Error("MsgSnap given to Send; use SendSnapshot", "to", uint64(m.To))
			t.reports.snapshot(m.To, false)
			continue
		}
		if !raftpb.ValidMessageType(m.Type) || m.From != t.cfg.ID {
			t.log.Error("refusing to send an invalid message", "msg", m.String())
			continue
		}
		p := t.peers[m.To]
		if p == nil {
			// Normal for a moment while a member is being added (the leader
			// replicates to it from the moment the change is in its log;
			// the address arrives when the change is applied). Logged,
			// rate-limited, because a member that stays unknown here is
			// never brought up to date by this node.
			if ok, skipped := t.limit.allow("unknown peer", m.To); ok {
				t.log.Info("message for a peer with no known address dropped", "to", uint64(m.To),
					"type", m.Type.String(), "similar_not_logged", skipped)
			}
			continue
		}
		if raftpb.EncodedSizeEstimate(m) > t.cfg.MaxMessageBytes {
			p.c.dropped.Add(1)
			if ok, skipped := t.limit.allow("oversized", m.To); ok {
				t.log.Error("message larger than MaxMessageBytes dropped", "to", uint64(m.To),
					"type", m.Type.String(), "entries", len(m.Entries), "max", t.cfg.MaxMessageBytes,
					"similar_not_logged", skipped)
			}
			continue
		}
		select {
		case p.queue <- *m:
		default:
			p.c.dropped.Add(1)
			t.unreachable(p)
		}
	}
}

// SendSnapshot streams a MsgSnap and its data to m.To in the background, then
// closes data and reports the outcome with Handler.ReportSnapshot.
func (t *Transport) SendSnapshot(m core.Message, data io.ReadCloser) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		_ = data.Close()
		return
	}
	var p *peer
	switch {
	case m.Type != core.MsgSnap || m.Snapshot == nil:
		t.log.Error("SendSnapshot needs a MsgSnap with snapshot metadata", "msg", m.String())
	case m.From != t.cfg.ID:
		t.log.Error("SendSnapshot: message is not from this node", "msg", m.String())
	default:
		if p = t.peers[m.To]; p == nil {
			t.log.Warn("snapshot for an unknown peer dropped", "to", uint64(m.To))
		}
	}
	if p == nil {
		_ = data.Close()
		t.reports.snapshot(m.To, false)
		return
	}
	// Added under t.mu, so RemovePeer and Close (which take it exclusively
	// before waiting) cannot miss this goroutine.
	p.wg.Add(1)
	go p.sendSnapshot(m, data)
}

// AddPeer starts sending to a new member.
func (t *Transport) AddPeer(id core.NodeID, addr string) error {
	if id == core.None || id == t.cfg.ID {
		return fmt.Errorf("transport: cannot add peer %d (this node is %d)", id, t.cfg.ID)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("transport: closed")
	}
	if _, ok := t.peers[id]; ok {
		return fmt.Errorf("transport: peer %d already added", id)
	}
	p, err := newPeer(t, id, addr)
	if err != nil {
		return err
	}
	t.peers[id] = p
	p.start()
	return nil
}

// RemovePeer stops sending to a member. Messages still queued for it are
// lost, and a snapshot being sent to it fails.
func (t *Transport) RemovePeer(id core.NodeID) error {
	t.mu.Lock()
	p := t.peers[id]
	delete(t.peers, id)
	t.mu.Unlock()
	if p == nil {
		return fmt.Errorf("transport: no peer %d", id)
	}
	p.stop()
	return nil
}

// UpdatePeer moves a member to a new address: its stream is re-established
// there (queued messages are lost).
func (t *Transport) UpdatePeer(id core.NodeID, addr string) error {
	if err := t.RemovePeer(id); err != nil {
		return err
	}
	return t.AddPeer(id, addr)
}

// Stats returns the counters of every peer seen, outbound or inbound.
func (t *Transport) Stats() map[core.NodeID]PeerStats {
	t.statsMu.Lock()
	defer t.statsMu.Unlock()
	out := make(map[core.NodeID]PeerStats, len(t.stats))
	for id, c := range t.stats {
		out[id] = c.snapshot()
	}
	return out
}

// counters returns id's counters, or a throwaway set once maxStatsIDs ids
// are known.
func (t *Transport) counters(id core.NodeID) *counters {
	t.statsMu.Lock()
	defer t.statsMu.Unlock()
	c := t.stats[id]
	if c == nil {
		c = &counters{}
		if len(t.stats) < maxStatsIDs {
			t.stats[id] = c
		}
	}
	return c
}

// peerIsBack tells the sender to id, if there is one, that id just
// opened a stream to this node.
func (t *Transport) peerIsBack(id core.NodeID) {
	t.mu.RLock()
	p := t.peers[id]
	t.mu.RUnlock()
	if p != nil {
		p.peerIsBack()
	}
}

// unreachable reports p unreachable unless it was reported within
// UnreachableInterval.
func (t *Transport) unreachable(p *peer) {
	now := time.Now().UnixNano()
	last := p.lastReport.Load()
	if last != 0 && now-last < int64(t.cfg.UnreachableInterval) {
		return
	}
	if p.lastReport.CompareAndSwap(last, now) {
		t.reports.unreachable(p.id)
	}
}

// ServerOptions are the options a gRPC server serving this transport needs:
// the message size limit, keepalive policy matching the clients', and the
// TLS credentials if configured. Pass them to grpc.NewServer before Register.
func (t *Transport) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(t.cfg.MaxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             t.cfg.KeepaliveTime / 2,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    t.cfg.KeepaliveTime,
			Timeout: t.cfg.DialTimeout,
		}),
	}
	opts = append(opts, flowwindow.ServerOptions()...)
	if t.cfg.ServerTLS != nil {
		opts = append(opts, grpc.Creds(countingCreds{credentials.NewTLS(t.cfg.ServerTLS), t}))
	}
	return opts
}

// Register serves the peer service on s, a server the caller owns (build it
// with ServerOptions). The caller stops s; Close does not.
func (t *Transport) Register(s grpc.ServiceRegistrar) {
	peerpb.RegisterPeerServer(s, &peerService{t: t})
}

// Serve serves the peer service on lis with a server of its own until Close,
// when it returns nil.
func (t *Transport) Serve(lis net.Listener) error {
	s := grpc.NewServer(append(t.ServerOptions(), grpc.WaitForHandlers(true))...)
	t.Register(s)
	t.mu.Lock()
	if t.closed || t.server != nil {
		t.mu.Unlock()
		_ = lis.Close()
		if t.closed {
			return errors.New("transport: closed")
		}
		return errors.New("transport: already serving")
	}
	t.server = s
	t.mu.Unlock()
	if err := s.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("transport: serve %s: %w", lis.Addr(), err)
	}
	return nil
}

// Close stops the server Serve made, every sender and snapshot, and waits for
// all of the transport's goroutines to end. Handler calls that are running
// finish first, so Handler methods must not wait for the caller of Close.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.closing.Store(true)
	peers := t.peers
	t.peers = nil
	srv := t.server
	t.mu.Unlock()

	if srv != nil {
		srv.Stop()
	}
	for _, p := range peers {
		p.cancel()
	}
	for _, p := range peers {
		p.stop()
	}
	t.reports.stop()
	return nil
}

// reporter delivers the Report* calls from a goroutine of
// its own, so that Send (called by the event loop) never calls back into the
// handler, and a slow handler never stalls a sender.
type reporter struct {
	mu     sync.Mutex
	events []report
	wake   chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup
}

type report struct {
	id   core.NodeID
	kind reportKind
	ok   bool // a snapshot's outcome
}

type reportKind uint8

const (
	reportUnreachable reportKind = iota
	reportSnapshot
	reportGone
)

func (r *reporter) start(t *Transport) {
	r.wake = make(chan struct{}, 1)
	r.done = make(chan struct{})
	r.wg.Add(1)
	go r.run(t)
}

func (r *reporter) push(ev report) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reporter) unreachable(id core.NodeID) { r.push(report{id: id, kind: reportUnreachable}) }

func (r *reporter) snapshot(id core.NodeID, ok bool) {
	r.push(report{id: id, kind: reportSnapshot, ok: ok})
}

func (r *reporter) gone(id core.NodeID) { r.push(report{id: id, kind: reportGone}) }

func (r *reporter) run(t *Transport) {
	defer r.wg.Done()
	for {
		select {
		case <-r.done:
			return
		case <-r.wake:
		}
		r.mu.Lock()
		evs := r.events
		r.events = nil
		r.mu.Unlock()
		for _, ev := range evs {
			if t.closing.Load() {
				return
			}
			switch ev.kind {
			case reportSnapshot:
				t.h.ReportSnapshot(ev.id, ev.ok)
			case reportGone:
				t.h.ReportGone(ev.id)
			default:
				t.h.ReportUnreachable(ev.id)
			}
		}
	}
}

func (r *reporter) stop() {
	close(r.done)
	r.wg.Wait()
}
