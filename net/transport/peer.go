package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/internal/flowwindow"
	"github.com/therealutkarshpriyadarshi/keyval/net/peerpb"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// Metadata keys every stream carries. The receiver checks them before it
// accepts the stream.
const (
	mdClusterID = "keyval-cluster-id"
	mdFrom      = "keyval-from"
	mdTo        = "keyval-to"
	// mdNodeID is in the response headers with which a node accepts a
	// stream.
	mdNodeID = "keyval-node-id"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// cachedSize reads the size a message was last encoded at (gRPC's codec
// sizes every message before marshalling it).
var cachedSize = proto.MarshalOptions{UseCachedSize: true}

// peer is the sending side towards one member: its queue, its connection,
// and the goroutine that keeps a stream open and drains the queue into it.
type peer struct {
	t      *Transport
	id     core.NodeID
	addr   string
	conn   *grpc.ClientConn
	client peerpb.PeerClient
	queue  chan core.Message
	c      *counters

	ctx       context.Context // ends when the peer is removed or the transport closed
	streamCtx context.Context // ctx with the stream metadata
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the sender and any snapshot senders

	lastReport atomic.Int64 // UnixNano of the last unreachable report
	// back ends the stream loop's wait early: the peer opened a stream
	// to us, so it is up (peerIsBack).
	back chan struct{}

	// Used by the sender goroutine only.
	enc     raftpb.Encoder
	held    core.Message // taken from the queue but not yet in a batch
	hasHeld bool
}

func newPeer(t *Transport, id core.NodeID, addr string) (*peer, error) {
	creds := insecure.NewCredentials()
	if t.cfg.ClientTLS != nil {
		creds = DialCreds(t.dialTLS(id))
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// gRPC re-dials a lost connection on its own, at most
		// redialEvery apart, so that a restarted peer is connected to
		// soon after it is back, whatever the stream loop's own (longer,
		// logged) wait: when the peer opens a stream to us, the loop stops
		// waiting (peerIsBack) and finds the connection ready or nearly.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  min(t.cfg.BackoffMin, redialEvery),
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   redialEvery,
			},
			MinConnectTimeout: t.cfg.DialTimeout,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                t.cfg.KeepaliveTime,
			Timeout:             t.cfg.DialTimeout,
			PermitWithoutStream: true,
		}),
	}
	opts = append(append(opts, flowwindow.DialOptions()...), t.cfg.DialOptions...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("transport: peer %d at %q: %w", id, addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &peer{
		t:      t,
		id:     id,
		addr:   addr,
		conn:   conn,
		client: peerpb.NewPeerClient(conn),
		queue:  make(chan core.Message, t.cfg.QueueSize),
		c:      t.counters(id),
		ctx:    ctx,
		cancel: cancel,
		back:   make(chan struct{}, 1),
	}
	p.streamCtx = metadata.AppendToOutgoingContext(ctx,
		mdClusterID, strconv.FormatUint(t.cfg.ClusterID, 10),
		mdFrom, strconv.FormatUint(uint64(t.cfg.ID), 10),
		mdTo, strconv.FormatUint(uint64(id), 10))
	return p, nil
}

func (p *peer) start() {
	p.wg.Add(1)
	go p.run()
}

// stop ends the sender and snapshot goroutines and closes the connection.
func (p *peer) stop() {
	p.cancel()
	p.wg.Wait()
	p.c.connected.Store(false)
	_ = p.conn.Close()
}

// run keeps a stream to the peer open for the peer's lifetime. When a stream
// breaks (or cannot be opened) it reports the peer unreachable, drops what is
// queued while it waits a jittered, growing delay, and tries again.
func (p *peer) run() {
	defer p.wg.Done()
	log := p.t.log.With("peer", uint64(p.id), "addr", p.addr)
	bo := backoffState{min: p.t.cfg.BackoffMin, max: p.t.cfg.BackoffMax}
	failures := 0
	back := false // the peer just opened a stream to us: it is up
	for {
		accepted, err := p.session(back, func() {
			p.c.connected.Store(true)
			if failures > 0 {
				log.Info("stream to peer re-established", "after_failures", failures)
			} else {
				log.Debug("stream to peer established")
			}
			failures = 0
		})
		p.c.connected.Store(false)
		if p.ctx.Err() != nil {
			return
		}
		if accepted {
			bo.reset()
			p.probeGone()
		}
		p.t.unreachable(p)
		// Log the first failure of a streak loudly, the rest quietly.
		if failures == 0 {
			log.Warn("stream to peer broken", "err", err)
		} else {
			log.Debug("stream to peer still failing", "err", err, "failures", failures)
		}
		failures++
		var ok bool
		if ok, back = p.dropFor(bo.next()); !ok {
			return
		}
	}
}

// probeGone asks, beside the reconnecting loop, whether the peer whose
// stream just broke is still there, and reports it gone if not (addrGone).
// Its followers can then elect a new leader without first waiting out the
// old one's lease.
func (p *peer) probeGone() {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if addrGone(p.ctx, p.addr) && p.ctx.Err() == nil {
			p.t.log.Info("peer's process is gone: its stream broke and nothing listens at its address", "peer", uint64(p.id), "addr", p.addr)
			p.t.reports.gone(p.id)
		}
	}()
}

// addrGone reports whether nothing listens at addr any more: a fresh TCP
// connection is refused (the host answers, no process has the port), or
// is reset while connecting, or is accepted and then reset or closed at
// once. The last two are a process caught exiting: its connections may
// close before its listener, and the kernel accepts for a listener until
// it is closed. A live server keeps a new connection open while it waits
// for the client to speak (or speaks first). Anything else (a time-out,
// an unreachable network) says nothing: a partition or a vanished host is
// left to the election timeout.
func addrGone(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, goneProbeTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		// Reset while connecting: the listener closed in the middle of
		// the handshake.
		return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(goneSettle)); err != nil {
		return false
	}
	_, err = conn.Read(make([]byte, 1))
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)
}

const (
	// goneProbeTimeout bounds addrGone's connection attempt: a refusal
	// comes back within a round trip, so waiting longer would only mean
	// the host is not answering, which addrGone does not report.
	goneProbeTimeout = time.Second
	// goneSettle is how long an accepted probe connection is watched for
	// a reset: the rest of an exiting process's teardown.
	goneSettle = 100 * time.Millisecond
)

// redialEvery bounds gRPC's wait between attempts to re-dial a lost
// connection: a refused attempt costs a round trip, and one to a host that
// does not answer waits DialTimeout first anyway.
const redialEvery = 250 * time.Millisecond

// peerIsBack is told that the peer opened a stream to this node. If the
// stream to the peer is down, its wait before the next attempt ends now: a
// restarted peer would otherwise hear nothing from this node (votes and
// acknowledgements included) for up to BackoffMax, while it can already
// talk to us.
func (p *peer) peerIsBack() {
	if p.c.connected.Load() {
		return
	}
	select {
	case p.back <- struct{}{}:
	default:
	}
}

// dropFor waits d, or until the peer is back (peerIsBack: back is true),
// dropping everything queued for the peer meanwhile: those messages would
// be stale by the time the stream is back, and Raft resends what matters
// once it learns the peer is unreachable.
func (p *peer) dropFor(d time.Duration) (ok, back bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	if p.hasHeld {
		p.hasHeld = false
		p.held = core.Message{}
		p.c.dropped.Add(1)
	}
	for {
		select {
		case <-p.ctx.Done():
			return false, false
		case <-timer.C:
			return true, false
		case <-p.back:
			return true, true
		case <-p.queue:
			p.c.dropped.Add(1)
			p.t.unreachable(p)
		}
	}
}

// session opens one stream, waits for the peer to accept it, and sends
// batches until it breaks. accepted says the peer took the stream. back
// says the peer is known to be up: opening the stream then waits (within
// DialTimeout) for the connection gRPC is re-dialling, rather than
// failing at once because its last attempt failed.
func (p *peer) session(back bool, onAccepted func()) (accepted bool, err error) {
	ctx, cancel := context.WithCancel(p.streamCtx)
	defer cancel()
	// The peer answers a stream it accepts with response headers; one that
	// does not answer within DialTimeout is given up.
	timer := time.AfterFunc(p.t.cfg.DialTimeout, cancel)
	stream, err := p.client.Messages(ctx, grpc.WaitForReady(back))
	if err == nil {
		err = awaitAccept(stream)
	}
	if !timer.Stop() {
		return false, fmt.Errorf("peer did not accept a stream within %v", p.t.cfg.DialTimeout)
	}
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	onAccepted()

	// The peer only ever ends the stream, with a status; watching for that
	// notices a refusal or a lost connection even while nothing is queued.
	broken := make(chan struct{})
	var brokenErr error
	go func() {
		defer close(broken)
		var ack peerpb.BatchAck
		if brokenErr = stream.RecvMsg(&ack); brokenErr == nil {
			brokenErr = errors.New("peer ended the stream")
		}
	}()
	defer func() {
		cancel()
		<-broken
	}()

	for {
		if !p.hasHeld {
			select {
			case <-p.ctx.Done():
				return true, p.ctx.Err()
			case <-broken:
				return true, brokenErr
			case p.held = <-p.queue:
				p.hasHeld = true
			}
		}
		n := p.fillBatch()
		batch := p.enc.Batch()
		if err := stream.Send(batch); err != nil {
			p.c.dropped.Add(uint64(n))
			// Send reports only that the stream is gone; the status
			// (why) arrives on the receive side.
			select {
			case <-broken:
				return true, brokenErr
			case <-time.After(p.t.cfg.DialTimeout):
				return true, fmt.Errorf("send: %w", err)
			}
		}
		// gRPC sized the batch to encode it; reading that cached size back
		// costs nothing.
		p.c.sentBytes.Add(uint64(cachedSize.Size(batch)))
		p.enc.Reset() // let go of the messages' bytes now, not at the next batch
		p.c.sent.Add(uint64(n))
		p.c.sentBatches.Add(1)
	}
}

// fillBatch builds the next batch from the held message and whatever else is
// queued, up to the batch limits. A message that would take the batch past
// MaxBatchBytes is held for the next one, unless the batch is empty.
func (p *peer) fillBatch() int {
	p.enc.Reset()
	size := 0
	for {
		s := raftpb.EncodedSizeEstimate(&p.held)
		if p.enc.Len() > 0 && size+s > p.t.cfg.MaxBatchBytes {
			return p.enc.Len()
		}
		p.enc.Add(&p.held)
		size += s
		p.held, p.hasHeld = core.Message{}, false
		if p.enc.Len() >= p.t.cfg.MaxBatchMsgs || size >= p.t.cfg.MaxBatchBytes {
			return p.enc.Len()
		}
		select {
		case p.held = <-p.queue:
			p.hasHeld = true
		default:
			return p.enc.Len()
		}
	}
}

// sendSnapshot streams m and data to the peer and reports the outcome.
func (p *peer) sendSnapshot(m core.Message, data io.ReadCloser) {
	defer p.wg.Done()
	size, err := p.streamSnapshot(m, data)
	if cerr := data.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close snapshot data: %w", cerr)
	}
	log := p.t.log.With("peer", uint64(p.id), "index", m.Snapshot.Index, "term", m.Snapshot.Term)
	if err != nil {
		p.c.snapsFailed.Add(1)
		log.Warn("snapshot send failed", "err", err, "bytes_sent", size)
	} else {
		p.c.snapsSent.Add(1)
		p.c.sentBytes.Add(size)
		log.Info("snapshot sent", "bytes", size)
	}
	if p.t.closing.Load() {
		return
	}
	p.t.reports.snapshot(p.id, err == nil)
}

func (p *peer) streamSnapshot(m core.Message, data io.Reader) (uint64, error) {
	ctx, cancel := context.WithCancel(p.streamCtx)
	defer cancel()
	stream, err := p.client.Snapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("open snapshot stream: %w", err)
	}
	// send sends one chunk; when the peer has ended the stream it returns
	// the peer's status rather than gRPC's bare io.EOF.
	send := func(c *peerpb.SnapshotChunk) error {
		if err := stream.Send(c); err != nil {
			if errors.Is(err, io.EOF) {
				_, err = stream.CloseAndRecv()
			}
			return fmt.Errorf("send snapshot chunk: %w", err)
		}
		return nil
	}
	if err := send(&peerpb.SnapshotChunk{Kind: &peerpb.SnapshotChunk_Header{Header: raftpb.FromCore(&m)}}); err != nil {
		return 0, err
	}
	buf := make([]byte, p.t.cfg.SnapshotChunkBytes)
	chunk := &peerpb.SnapshotChunk_Data{}
	var size uint64
	var sum uint32
	for {
		n, rerr := io.ReadFull(data, buf)
		if n > 0 {
			sum = crc32.Update(sum, castagnoli, buf[:n])
			size += uint64(n)
			chunk.Data = buf[:n] // encoded by Send before it returns, so buf can be reused
			if err := send(&peerpb.SnapshotChunk{Kind: chunk}); err != nil {
				return size, err
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return size, fmt.Errorf("read snapshot data: %w", rerr)
		}
	}
	trailer := &peerpb.SnapshotChunk_Trailer{Trailer: &peerpb.SnapshotTrailer{Size: size, Crc32C: sum}}
	if err := send(&peerpb.SnapshotChunk{Kind: trailer}); err != nil {
		return size, err
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return size, fmt.Errorf("peer refused the snapshot: %w", err)
	}
	return size, nil
}

// awaitAccept waits for the peer's response headers, which it sends once it
// has accepted the stream, and returns the peer's refusal otherwise.
func awaitAccept(stream peerpb.Peer_MessagesClient) error {
	md, err := stream.Header()
	if err != nil {
		return err
	}
	if md == nil {
		// gRPC's Header hides why a stream ended without headers; the
		// status comes from the receive side.
		var ack peerpb.BatchAck
		if err := stream.RecvMsg(&ack); err != nil {
			return err
		}
		return errors.New("peer ended the stream without accepting it")
	}
	return nil
}

// backoffState is an exponential backoff with jitter: each wait is drawn
// from [d/2, d], d doubling from min up to max, so peers that lost each
// other at the same moment do not retry in lockstep.
type backoffState struct {
	min, max, cur time.Duration
}

func (b *backoffState) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + rand.N(b.cur-half+1)
}

func (b *backoffState) reset() { b.cur = 0 }
