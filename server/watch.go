package server

import (
	"bytes"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// Watches (etcd's Watch service, etcdwatch.go) are served from the store's
// revision index. A watcher is either catching up, reading the history
// itself a page at a time on its stream's goroutine, or synced: the hub's
// dispatcher reads each newly applied revision once, after the state
// machine stage has applied it, and queues its changes to every synced
// watcher whose range they fall in. A watcher moves from catching up to
// synced under the hub's lock, once it has read up to the revision the
// dispatcher has reached, so it sees every revision once.

const (
	// watchPageEvents bounds the events one read of the history returns,
	// so a watcher far behind holds one page at a time (a single revision
	// with more changes is read whole: it is one response).
	watchPageEvents = 256
	// DefaultWatchProgressNotifyInterval is etcd's.
	DefaultWatchProgressNotifyInterval = 10 * time.Minute
	// DefaultWatchMaxQueuedBytes bounds the events one watch stream holds
	// for a client that does not read them; past it, the watcher they are
	// for is canceled.
	DefaultWatchMaxQueuedBytes = 32 << 20
	// queuedEventOverhead is what a queued event costs besides its
	// encoding (its pointer and bookkeeping), so that a flood of tiny
	// events is bounded too.
	queuedEventOverhead = 64
)

// eventSource is the part of the store watches read.
type eventSource interface {
	Events(key, end []byte, from, to uint64, prev bool, limit int) ([]*kvstore.Event, bool, error)
	Revision() uint64
	CompactedRevision() uint64
}

// watchHub holds the synced watchers of every stream of this member.
type watchHub struct {
	// store is what catching-up watchers read; applied is what the
	// dispatcher reads each applied batch from (the store's applied state,
	// committed or not: kvstore.Bolt.EventsApplied), since a read of the
	// store commits the write transaction Apply left open, and one per
	// batch while any watcher was synced undid leaving it open.
	store     eventSource
	applied   eventSource
	log       *slog.Logger
	maxQueued int
	wake      chan struct{}

	mu sync.Mutex
	// dispatched is the revision up to which every change has been queued
	// to the synced watchers (written under mu, read without it).
	dispatched atomic.Uint64
	keys       map[string]map[*watcher]struct{} // synced single-key watchers
	ranges     map[*watcher]struct{}            // synced range watchers
	streams    atomic.Int64
	watchers   atomic.Int64
}

func newWatchHub(store, applied eventSource, maxQueued int, log *slog.Logger) *watchHub {
	if maxQueued <= 0 {
		maxQueued = DefaultWatchMaxQueuedBytes
	}
	h := &watchHub{store: store, applied: applied, log: log, maxQueued: maxQueued, wake: make(chan struct{}, 1),
		keys: map[string]map[*watcher]struct{}{}, ranges: map[*watcher]struct{}{}}
	h.dispatched.Store(store.Revision())
	return h
}

// notify tells the dispatcher that the store has applied more (called by
// the state machine stage after each batch; never blocks it).
func (h *watchHub) notify() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// run is the dispatcher's goroutine, until stop closes.
func (h *watchHub) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-h.wake:
			h.dispatch()
		}
	}
}

// dispatch queues every change applied since the last call to the synced
// watchers it concerns, a page at a time.
func (h *watchHub) dispatch() {
	for {
		from, to := h.dispatched.Load()+1, h.store.Revision()
		if from > to {
			return
		}
		h.mu.Lock()
		idle := len(h.keys)+len(h.ranges) == 0
		if idle {
			// Nobody to tell: a watcher that arrives later reads these
			// revisions itself.
			h.dispatched.Store(to)
		}
		h.mu.Unlock()
		if idle {
			return
		}
		// Previous versions are always read: a watcher that wants them may
		// become synced while the page is read, and the store finds them
		// on the way to the change anyway.
		evs, through, err := readPage(h.applied, []byte{0}, []byte{0}, from, to, true)
		h.mu.Lock()
		if err != nil {
			h.failSynced(err)
			through = to
		} else {
			h.deliver(evs)
		}
		h.dispatched.Store(through)
		h.mu.Unlock()
	}
}

// appliedEvents is the Bolt store's applied state as an eventSource.
type appliedEvents struct{ *kvstore.Bolt }

func (a appliedEvents) Events(key, end []byte, from, to uint64, prev bool, limit int) ([]*kvstore.Event, bool, error) {
	return a.EventsApplied(key, end, from, to, prev, limit)
}

// readPage reads the changes to [key, end) at revisions from..to, about a
// page of them, cut after a whole revision: through is the last revision
// they cover entirely.
func readPage(st eventSource, key, end []byte, from, to uint64, prev bool) (evs []*kvstore.Event, through uint64, err error) {
	evs, more, err := st.Events(key, end, from, to, prev, watchPageEvents)
	if err != nil || !more {
		return evs, to, err
	}
	last := evs[len(evs)-1].Kv.ModRevision
	cut := len(evs)
	for cut > 0 && evs[cut-1].Kv.ModRevision == last {
		cut--
	}
	if cut > 0 {
		return evs[:cut], uint64(last) - 1, nil
	}
	// One revision with more than a page of changes is still one response.
	evs, _, err = st.Events(key, end, uint64(last), uint64(last), prev, 0)
	return evs, uint64(last), err
}

// deliver queues evs to the synced watchers they concern (mu held).
func (h *watchHub) deliver(evs []*kvstore.Event) {
	byWatcher := map[*watcher][]queuedEvent{}
	for _, ev := range evs {
		q := queuedEvent{ev: ev, size: ev.Size() + queuedEventOverhead}
		for w := range h.keys[string(ev.Kv.Key)] {
			if uint64(ev.Kv.ModRevision) >= w.start {
				byWatcher[w] = append(byWatcher[w], q)
			}
		}
		for w := range h.ranges {
			if uint64(ev.Kv.ModRevision) >= w.start && w.covers(ev.Kv.Key) {
				byWatcher[w] = append(byWatcher[w], q)
			}
		}
	}
	for w, q := range byWatcher {
		if !w.ws.queue(w, q) {
			h.removeLocked(w)
		}
	}
}

// failSynced cancels every synced watcher: the dispatcher could not read
// what they wait for, compacted away under it or unreadable (mu held).
func (h *watchHub) failSynced(err error) {
	if _, compacted := compactedBelow(err, h.store); !compacted {
		h.log.Error("watch: read the history; canceling every synced watcher", "err", err)
	}
	for _, set := range h.keys {
		for w := range set {
			w.ws.fail(w, err)
			h.removeLocked(w)
		}
	}
	for w := range h.ranges {
		w.ws.fail(w, err)
		h.removeLocked(w)
	}
}

// addLocked makes w synced (mu and w's stream's mu held).
func (h *watchHub) addLocked(w *watcher) {
	w.synced = true
	if len(w.end) == 0 {
		set := h.keys[string(w.key)]
		if set == nil {
			set = map[*watcher]struct{}{}
			h.keys[string(w.key)] = set
		}
		set[w] = struct{}{}
		return
	}
	h.ranges[w] = struct{}{}
}

// removeLocked takes w out of the synced watchers, if it is one (mu held).
func (h *watchHub) removeLocked(w *watcher) {
	if !w.synced {
		return
	}
	w.synced = false
	if len(w.end) == 0 {
		set := h.keys[string(w.key)]
		delete(set, w)
		if len(set) == 0 {
			delete(h.keys, string(w.key))
		}
		return
	}
	delete(h.ranges, w)
}

// compactedBelow says whether err is the store refusing a read of
// compacted history, and the first revision a watcher can then start at.
func compactedBelow(err error, st eventSource) (uint64, bool) {
	var re *kvstore.RangeError
	if errors.As(err, &re) && re.Status == kvstore.StatusCompacted {
		return st.CompactedRevision(), true
	}
	return 0, false
}

// queuedEvent is an event waiting for its stream, with what it costs.
type queuedEvent struct {
	ev   *kvstore.Event
	size int
}

// watcher is one watch of a stream.
type watcher struct {
	id                                          int64
	ws                                          *watchStream
	key, end                                    []byte // etcd's rules: no end one key, "\x00" every key from key on
	start                                       uint64 // the first revision asked for
	prevKV, noPut, noDelete, progress, fragment bool

	// Under ws.mu (synced under the hub's mu too).
	next     uint64 // catching up: the first revision not read yet
	synced   bool
	pending  []queuedEvent
	queued   int  // bytes of pending
	inWork   bool // on ws.work
	canceled bool
	sent     bool // events sent since the last progress tick
}

// covers says whether key is in w's range.
func (w *watcher) covers(key []byte) bool {
	if bytes.Compare(key, w.key) < 0 {
		return false
	}
	if len(w.end) == 0 {
		return bytes.Equal(key, w.key)
	}
	return (len(w.end) == 1 && w.end[0] == 0) || bytes.Compare(key, w.end) < 0
}

// wanted is ev as w wants it, or nil if its filters drop it.
func (w *watcher) wanted(ev *kvstore.Event) *kvstore.Event {
	if (ev.Type == mvccpb.PUT && w.noPut) || (ev.Type == mvccpb.DELETE && w.noDelete) {
		return nil
	}
	if ev.PrevKv != nil && !w.prevKV {
		// The dispatcher's events are shared by every watcher: copy.
		c := *ev
		c.PrevKv = nil
		return &c
	}
	return ev
}
