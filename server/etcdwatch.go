package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// etcdWatch is etcd's Watch service: one bidirectional stream carries many
// watchers (watch.go serves their events). Each stream has two goroutines:
// the handler's, which reads requests, and a sender, the only one that
// writes to the stream, so a client that does not read blocks only its
// own sender while the dispatcher queues for it, up to a bound.
type etcdWatch struct {
	pb.UnimplementedWatchServer
	s *Server
}

// progressWatchID is the watch id of a progress response a client asked
// for: it concerns every watcher of the stream (clientv3's InvalidWatchID).
const progressWatchID = -1

// errWatchStopping ends streams when the member stops: clientv3 then
// watches again, on another member, from the revision after the last it got.
var errWatchStopping = status.Error(codes.Unavailable, "this member is stopping: watch again on another member")

func (e *etcdWatch) Watch(stream pb.Watch_WatchServer) error {
	needLeader := requiresLeader(stream.Context())
	if needLeader && e.s.leader.Load() == 0 {
		return rpctypes.ErrGRPCNoLeader
	}
	hub := e.s.watches
	ws := &watchStream{s: e.s, hub: hub, stream: stream, watchers: map[int64]*watcher{},
		ready: make(chan struct{}, 1), quit: make(chan struct{})}
	hub.streams.Add(1)
	defer hub.streams.Add(-1)
	recvErr := make(chan error, 1)
	go func() { recvErr <- ws.recvLoop() }()
	sendErr := make(chan error, 1)
	go func() { sendErr <- ws.sendLoop() }()
	var leaderLost <-chan struct{}
	if needLeader {
		leaderLost = e.s.watchLeader(ws.quit)
	}
	var err error
	sent := false
	select {
	case err = <-recvErr:
	case err = <-sendErr:
		sent = true
	case <-e.s.draining:
		err = errWatchStopping
	case <-leaderLost:
		err = rpctypes.ErrGRPCNoLeader
	case <-stream.Context().Done():
		err = stream.Context().Err()
	}
	ws.close()
	if !sent {
		// The stream may not be written once this returns.
		<-sendErr
	}
	return err
}

// requiresLeader says whether the client asked (clientv3's
// WithRequireLeader) that its watches end when this member has no leader:
// a member cut off from the others would otherwise keep them open with
// nothing to send.
func requiresLeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && slices.Contains(md.Get(rpctypes.MetadataRequireLeaderKey), rpctypes.MetadataHasLeader)
}

// watchLeader closes the channel it returns once this member has known no
// leader for an election timeout, until quit closes.
func (s *Server) watchLeader(quit <-chan struct{}) <-chan struct{} {
	lost := make(chan struct{})
	go func() {
		tick := time.NewTicker(s.cfg.ElectionTimeout)
		defer tick.Stop()
		leaderless := false
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			if s.leader.Load() != 0 {
				leaderless = false
				continue
			}
			if leaderless {
				close(lost)
				return
			}
			leaderless = true
		}
	}()
	return lost
}

// watchStream is one Watch stream's watchers and what waits to be sent.
type watchStream struct {
	s      *Server
	hub    *watchHub
	stream pb.Watch_WatchServer
	ready  chan struct{} // the sender has work
	quit   chan struct{}

	mu       sync.Mutex
	closed   bool
	watchers map[int64]*watcher
	nextID   int64
	ctrl     []*pb.WatchResponse // created, canceled: sent before any event after them
	work     []*watcher          // watchers with events queued or history to read
	queued   int                 // bytes of events queued
	progress bool                // a progress request waits
}

// recvLoop reads the client's requests until the stream ends; a client
// that only closes its sending side keeps its watchers.
func (ws *watchStream) recvLoop() error {
	for {
		req, err := ws.stream.Recv()
		if errors.Is(err, io.EOF) {
			<-ws.quit
			return nil
		}
		if err != nil {
			return err
		}
		switch r := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			ws.create(r.CreateRequest)
		case *pb.WatchRequest_CancelRequest:
			ws.cancel(r.CancelRequest.WatchId)
		case *pb.WatchRequest_ProgressRequest:
			ws.mu.Lock()
			ws.progress = true
			ws.mu.Unlock()
			ws.signal()
		}
	}
}

func (ws *watchStream) signal() {
	select {
	case ws.ready <- struct{}{}:
	default:
	}
}

// create adds a watcher, as etcd does: refused ones are answered created
// and canceled at once, with the reason. A watch is served from this
// member's applied state, so it is judged by this member's records, as a
// serializable read is (checkLocal).
func (ws *watchStream) create(cr *pb.WatchCreateRequest) {
	if _, _, err := ws.s.checkLocal(ws.stream.Context(), needRead(cr.Key, cr.RangeEnd)); err != nil {
		ws.refuse(progressWatchID, status.Convert(etcdError(err)).Message())
		return
	}
	w := &watcher{ws: ws, key: cr.Key, end: cr.RangeEnd, start: uint64(max(cr.StartRevision, 0)),
		prevKV: cr.PrevKv, progress: cr.ProgressNotify, fragment: cr.Fragment}
	for _, f := range cr.Filters {
		w.noPut = w.noPut || f == pb.WatchCreateRequest_NOPUT
		w.noDelete = w.noDelete || f == pb.WatchCreateRequest_NODELETE
	}
	h := ws.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.closed {
		return
	}
	id, reason := ws.watchID(cr.WatchId)
	if reason != "" {
		ws.ctrl = append(ws.ctrl, &pb.WatchResponse{Header: ws.s.etcdHeader(), WatchId: id, Created: true, Canceled: true, CancelReason: reason})
		ws.signal()
		return
	}
	w.id = id
	ws.watchers[id] = w
	h.watchers.Add(1)
	dispatched := h.dispatched.Load()
	header := ws.s.etcdHeader()
	if w.start == 0 {
		// From the next revision: the header says which, and clientv3
		// resumes from it.
		w.start = dispatched + 1
		header.Revision = int64(dispatched)
	}
	w.next = w.start
	ws.ctrl = append(ws.ctrl, &pb.WatchResponse{Header: header, WatchId: id, Created: true})
	if w.start > dispatched {
		h.addLocked(w)
	} else {
		ws.schedule(w)
	}
	ws.signal()
}

// watchID is the id the client asked for, or the next free one (ws.mu
// held); reason says why an id asked for cannot be had, with the id to
// answer under (for one in use, -1 and etcd's words, as etcd answers).
func (ws *watchStream) watchID(asked int64) (int64, string) {
	switch {
	case asked < 0:
		return asked, fmt.Sprintf("watch id %d is negative", asked)
	case asked > 0 && ws.watchers[asked] != nil:
		return -1, "mvcc: duplicate watch ID provided on the WatchStream"
	case asked > 0:
		return asked, ""
	}
	for ws.watchers[ws.nextID] != nil {
		ws.nextID++
	}
	ws.nextID++
	return ws.nextID - 1, ""
}

// refuse answers a create that made no watcher.
func (ws *watchStream) refuse(id int64, reason string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.ctrl = append(ws.ctrl, &pb.WatchResponse{Header: ws.s.etcdHeader(), WatchId: id, Created: true, Canceled: true, CancelReason: reason})
	ws.signal()
}

// cancel ends a watcher at the client's request.
func (ws *watchStream) cancel(id int64) {
	ws.hub.mu.Lock()
	defer ws.hub.mu.Unlock()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if w := ws.watchers[id]; w != nil && !w.canceled {
		ws.hub.removeLocked(w)
		ws.endLocked(w, &pb.WatchResponse{Header: ws.s.etcdHeader(), WatchId: id, Canceled: true})
	}
}

// endLocked drops w and what it has queued, and queues resp, its last
// response (ws.mu held, and the hub's mu if w may be synced).
func (ws *watchStream) endLocked(w *watcher, resp *pb.WatchResponse) {
	w.canceled = true
	ws.queued -= w.queued
	w.pending, w.queued = nil, 0
	delete(ws.watchers, w.id)
	ws.hub.watchers.Add(-1)
	ws.ctrl = append(ws.ctrl, resp)
	ws.signal()
}

// queue adds a synced watcher's events (the dispatcher, the hub's mu
// held); false means the stream is too far behind and w is canceled.
func (ws *watchStream) queue(w *watcher, evs []queuedEvent) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if w.canceled {
		return false
	}
	size := 0
	for _, q := range evs {
		size += q.size
	}
	// An idle stream takes any one delivery, so a revision larger than
	// the bound is not refused to a client that keeps up.
	if ws.queued > 0 && ws.queued+size > ws.hub.maxQueued {
		ws.endLocked(w, &pb.WatchResponse{Header: ws.s.etcdHeader(), WatchId: w.id, Canceled: true,
			CancelReason: fmt.Sprintf("watch canceled: its stream did not take the events fast enough (over %d bytes waiting); "+
				"watch again from the revision after the last event received", ws.hub.maxQueued)})
		return false
	}
	w.pending = append(w.pending, evs...)
	w.queued += size
	ws.queued += size
	ws.schedule(w)
	return true
}

// fail cancels w because its history cannot be read: compacted (the
// client must start again from a newer revision) or a storage failure.
func (ws *watchStream) fail(w *watcher, err error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if !w.canceled {
		ws.endLocked(w, ws.failure(w, err))
	}
}

func (ws *watchStream) failure(w *watcher, err error) *pb.WatchResponse {
	resp := &pb.WatchResponse{Header: ws.s.etcdHeader(), WatchId: w.id, Canceled: true}
	if rev, ok := compactedBelow(err, ws.hub.store); ok {
		// No reason, as etcd gives none: its clients take the
		// compact revision for one (clientv3: ErrCompacted).
		resp.CompactRevision = int64(rev)
		return resp
	}
	resp.CancelReason = fmt.Sprintf("watch canceled: this member could not read its history (%v)", err)
	return resp
}

// schedule puts w on the sender's list (ws.mu held).
func (ws *watchStream) schedule(w *watcher) {
	if !w.inWork {
		w.inWork = true
		ws.work = append(ws.work, w)
	}
	ws.signal()
}

// close ends every watcher of the stream.
func (ws *watchStream) close() {
	ws.hub.mu.Lock()
	defer ws.hub.mu.Unlock()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.closed = true
	close(ws.quit)
	for _, w := range ws.watchers {
		ws.hub.removeLocked(w)
		w.canceled = true
	}
	ws.hub.watchers.Add(-int64(len(ws.watchers)))
	ws.watchers, ws.work, ws.ctrl, ws.queued = nil, nil, nil, 0
}

// sendLoop is the stream's only writer.
func (ws *watchStream) sendLoop() error {
	interval := ws.s.cfg.WatchProgressNotifyInterval
	if interval <= 0 {
		interval = DefaultWatchProgressNotifyInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if err := ws.flush(); err != nil {
			return err
		}
		select {
		case <-ws.quit:
			return nil
		case <-ws.ready:
		case <-tick.C:
			if err := ws.notifyProgress(); err != nil {
				return err
			}
		}
	}
}

// flush sends everything waiting: responses before the events queued
// after them, then one turn of each watcher with work, round and round.
func (ws *watchStream) flush() error {
	for {
		select {
		case <-ws.quit:
			return nil
		default:
		}
		ws.mu.Lock()
		ctrl := ws.ctrl
		ws.ctrl = nil
		var w *watcher
		if len(ctrl) == 0 && len(ws.work) > 0 {
			w = ws.work[0]
			ws.work[0] = nil
			ws.work = ws.work[1:]
			w.inWork = false
		}
		progress := len(ctrl) == 0 && w == nil && ws.progress
		var resp *pb.WatchResponse
		if progress {
			ws.progress = false
			resp = ws.progressResponse(progressWatchID, ws.progressRevision())
		}
		ws.mu.Unlock()
		var err error
		switch {
		case len(ctrl) > 0:
			err = ws.sendAll(ctrl)
		case w != nil:
			err = ws.turn(w)
		case progress:
			err = ws.stream.Send(resp)
		default:
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (ws *watchStream) sendAll(resps []*pb.WatchResponse) error {
	for _, r := range resps {
		if err := ws.stream.Send(r); err != nil {
			return err
		}
	}
	return nil
}

// turn sends w's queued events, or its next page of history.
func (ws *watchStream) turn(w *watcher) error {
	ws.mu.Lock()
	if w.canceled {
		ws.mu.Unlock()
		return nil
	}
	if w.synced {
		pending := w.pending
		ws.queued -= w.queued
		w.pending, w.queued = nil, 0
		ws.mu.Unlock()
		evs := make([]*kvstore.Event, 0, len(pending))
		for _, q := range pending {
			if ev := w.wanted(q.ev); ev != nil {
				evs = append(evs, ev)
			}
		}
		return ws.sendEvents(w, evs)
	}
	from := w.next
	ws.mu.Unlock()
	return ws.catchUp(w, from)
}

// catchUp sends w one page of the history from revision from on, up to
// what the dispatcher has reached, and makes w synced once it is there.
func (ws *watchStream) catchUp(w *watcher, from uint64) error {
	h := ws.hub
	evs, through, err := readPage(h.store, w.key, w.end, from, h.dispatched.Load(), w.prevKV)
	if err != nil {
		if _, compacted := compactedBelow(err, h.store); !compacted {
			ws.s.log.Error("watch: read the history", "watch_id", w.id, "err", err)
		}
		ws.fail(w, err)
		return nil
	}
	kept := evs[:0]
	for _, ev := range evs {
		if ev = w.wanted(ev); ev != nil {
			kept = append(kept, ev)
		}
	}
	if err := ws.sendEvents(w, kept); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if w.canceled {
		return nil
	}
	w.next = through + 1
	if w.next > h.dispatched.Load() {
		h.addLocked(w)
	} else {
		ws.schedule(w)
	}
	return nil
}

// sendEvents sends evs, whole revisions per response within the message
// budget; a revision larger than it is split into fragments if w asked
// for them, else sent whole, as etcd does.
func (ws *watchStream) sendEvents(w *watcher, evs []*kvstore.Event) error {
	if len(evs) == 0 {
		return nil
	}
	budget := ws.s.cfg.MaxRequestBytes
	var batch []*kvstore.Event
	size := 0
	for i := 0; i < len(evs); {
		j, revSize := i, 0
		for ; j < len(evs) && evs[j].Kv.ModRevision == evs[i].Kv.ModRevision; j++ {
			revSize += evs[j].Size()
		}
		if len(batch) > 0 && size+revSize > budget {
			if err := ws.sendBatch(w, batch, false); err != nil {
				return err
			}
			batch, size = nil, 0
		}
		if revSize > budget && w.fragment {
			if err := ws.sendFragments(w, evs[i:j], budget); err != nil {
				return err
			}
		} else {
			batch = append(batch, evs[i:j]...)
			size += revSize
		}
		i = j
	}
	if len(batch) == 0 {
		return nil
	}
	return ws.sendBatch(w, batch, false)
}

// sendFragments sends one revision's events in pieces within budget, every
// piece but the last marked as a fragment.
func (ws *watchStream) sendFragments(w *watcher, evs []*kvstore.Event, budget int) error {
	for len(evs) > 0 {
		n, size := 1, evs[0].Size()
		for n < len(evs) && size+evs[n].Size() <= budget {
			size += evs[n].Size()
			n++
		}
		if err := ws.sendBatch(w, evs[:n], n < len(evs)); err != nil {
			return err
		}
		evs = evs[n:]
	}
	return nil
}

func (ws *watchStream) sendBatch(w *watcher, evs []*kvstore.Event, fragment bool) error {
	ws.mu.Lock()
	w.sent = true
	ws.mu.Unlock()
	return ws.stream.Send(&pb.WatchResponse{Header: ws.s.etcdHeader(), WatchId: w.id, Events: evs, Fragment: fragment})
}

// progressRevision is a revision every watcher of the stream has been
// sent every change up to (ws.mu held): what a progress response may say.
func (ws *watchStream) progressRevision() uint64 {
	rev := ws.hub.dispatched.Load()
	for _, w := range ws.watchers {
		rev = min(rev, w.through(rev))
	}
	return rev
}

// through is the revision up to which w has been sent every change, given
// that the dispatcher has reached dispatched (w's stream's mu held).
func (w *watcher) through(dispatched uint64) uint64 {
	switch {
	case !w.synced:
		return w.next - 1
	case len(w.pending) > 0:
		return uint64(w.pending[0].ev.Kv.ModRevision) - 1
	}
	return dispatched
}

func (ws *watchStream) progressResponse(id int64, rev uint64) *pb.WatchResponse {
	header := ws.s.etcdHeader()
	header.Revision = int64(rev)
	return &pb.WatchResponse{Header: header, WatchId: id}
}

// notifyProgress sends the periodic progress notification to each synced
// watcher that asked for one and was sent no event since the last.
func (ws *watchStream) notifyProgress() error {
	ws.mu.Lock()
	dispatched := ws.hub.dispatched.Load()
	var resps []*pb.WatchResponse
	for _, w := range ws.watchers {
		if w.progress && w.synced && len(w.pending) == 0 && !w.sent {
			resps = append(resps, ws.progressResponse(w.id, dispatched))
		}
		w.sent = false
	}
	ws.mu.Unlock()
	return ws.sendAll(resps)
}
