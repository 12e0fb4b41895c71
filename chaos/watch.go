package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// The watch workload: one watcher follows every change to the workers'
// keys through etcd's Watch API, from the cluster's first revision to the
// end of the run, through the same kills, pauses and partitions. When its
// stream breaks it watches again on the next member from the revision
// after the last event it got, as etcd's client does. The judge holds what
// it got to the writes (CheckWatch).

// WatchEvent is one change the watcher was told of.
type WatchEvent struct {
	Revision uint64 `json:"revision"`
	Key      string `json:"key"`
	Value    string `json:"value,omitempty"`
	Delete   bool   `json:"delete,omitempty"`
}

// WatchReport is what the watcher got and what the judge found in it.
type WatchReport struct {
	Events int `json:"events"`
	// Resumed counts the streams opened again after one broke; Through
	// is the revision up to which the watcher had every change.
	Resumed  int      `json:"resumed"`
	Through  uint64   `json:"through"`
	Problems []string `json:"problems,omitempty"`
}

type watcher struct {
	endpoints []string

	mu      sync.Mutex
	events  []WatchEvent
	next    uint64 // the first revision not yet received
	resumed int
	failed  string // why watching cannot go on (a compacted start)
}

func newWatcher(endpoints []string) *watcher { return &watcher{endpoints: endpoints, next: 1} }

// run watches until ctx ends, moving to the next member whenever a
// stream breaks.
func (w *watcher) run(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		err := w.follow(ctx, w.endpoints[i%len(w.endpoints)])
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		w.resumed++
		stop := w.failed != ""
		w.mu.Unlock()
		if stop {
			return
		}
		_ = err // a broken stream is what the faults are for
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// follow reads one stream from one member, from the next revision on.
func (w *watcher) follow(ctx context.Context, endpoint string) error {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", endpoint, err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewWatchClient(conn).Watch(sctx)
	if err != nil {
		return fmt.Errorf("watch on %s: %w", endpoint, err)
	}
	w.mu.Lock()
	from := w.next
	w.mu.Unlock()
	create := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte("k"), RangeEnd: []byte("l"), StartRevision: int64(from)}}}
	if err := stream.Send(create); err != nil {
		return fmt.Errorf("watch on %s: %w", endpoint, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("watch on %s: %w", endpoint, err)
		}
		if resp.Canceled {
			if resp.CompactRevision != 0 {
				w.mu.Lock()
				w.failed = fmt.Sprintf("the watch from revision %d was refused: compacted up to %d", from, resp.CompactRevision)
				w.mu.Unlock()
			}
			return fmt.Errorf("watch on %s canceled: %s", endpoint, resp.CancelReason)
		}
		w.mu.Lock()
		for _, ev := range resp.Events {
			rev := uint64(ev.Kv.ModRevision)
			w.events = append(w.events, WatchEvent{Revision: rev, Key: string(ev.Kv.Key), Value: string(ev.Kv.Value), Delete: ev.Type == mvccpb.DELETE})
			w.next = max(w.next, rev+1)
		}
		w.mu.Unlock()
	}
}

// caughtUp reports whether the watcher has every change up to rev.
func (w *watcher) caughtUp(rev uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.next > rev
}

// result is what the watcher got: its events, and the last revision it
// has every change up to.
func (w *watcher) result() ([]WatchEvent, uint64, int, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]WatchEvent(nil), w.events...), w.next - 1, w.resumed, w.failed
}

// maxWatchProblems bounds what the report lists.
const maxWatchProblems = 10

// CheckWatch holds the events a watcher got, from the first revision to
// through, to the writes: in revision order, keys ascending within one,
// none twice; each one the change of a write that may have happened (an
// acknowledged write at its own revision, or one of unknown outcome); and
// every acknowledged write that changed the store at or below through
// among them.
func CheckWatch(events []WatchEvent, writes []Write, through uint64) []string {
	var problems []string
	report := func(format string, a ...any) {
		if len(problems) < maxWatchProblems {
			problems = append(problems, fmt.Sprintf(format, a...))
		}
	}
	type keyRev struct {
		key string
		rev uint64
	}
	type keyValue struct{ key, value string }
	seen := map[keyRev]WatchEvent{}
	puts := map[keyValue]Write{}
	var deletes = map[string][]Write{}
	for _, wr := range writes {
		switch wr.Kind {
		case lin.OpDelete:
			deletes[wr.Key] = append(deletes[wr.Key], wr)
		default:
			puts[keyValue{wr.Key, wr.Value}] = wr
		}
	}
	for i, ev := range events {
		if i > 0 {
			prev := events[i-1]
			if ev.Revision < prev.Revision || (ev.Revision == prev.Revision && ev.Key <= prev.Key) {
				report("event %d (%s at %d) comes after %s at %d", i, ev.Key, ev.Revision, prev.Key, prev.Revision)
			}
		}
		seen[keyRev{ev.Key, ev.Revision}] = ev
		if ev.Delete {
			if !explainedDelete(deletes[ev.Key], ev.Revision) {
				report("the deletion of %s at revision %d matches no delete that may have happened", ev.Key, ev.Revision)
			}
			continue
		}
		wr, ok := puts[keyValue{ev.Key, ev.Value}]
		switch {
		case !ok:
			report("%s = %q at revision %d: no write wrote that value", ev.Key, ev.Value, ev.Revision)
		case wr.Acked && (!wr.changed() || wr.Version != ev.Revision):
			report("%s = %q at revision %d: its write, %s, says otherwise", ev.Key, ev.Value, ev.Revision, wr)
		}
	}
	for _, wr := range writes {
		if !wr.changed() || wr.Version > through {
			continue
		}
		ev, ok := seen[keyRev{wr.Key, wr.Version}]
		switch {
		case !ok:
			report("%s: no event at revision %d", wr, wr.Version)
		case ev.Delete != (wr.Kind == lin.OpDelete) || (!ev.Delete && ev.Value != wr.Value):
			report("%s: the event at revision %d is %+v", wr, wr.Version, ev)
		}
	}
	return problems
}

// explainedDelete reports whether a deletion of a key at rev may be one
// of the key's deletes.
func explainedDelete(deletes []Write, rev uint64) bool {
	for _, d := range deletes {
		if !d.Acked || (d.Existed && d.Version == rev) {
			return true
		}
	}
	return false
}
