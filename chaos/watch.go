package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/client"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// The watch workload: one watcher follows every change to the workers'
// keys, from the cluster's first revision to the end of the run, through
// the same kills, pauses and partitions, with KeyVal's Go client
// (client.Watch: etcd's Watch service; when a stream breaks it watches
// again on the next member from the revision after the last event it got). The judge holds what
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
	// Through is the revision up to which the watcher had every change.
	Through  uint64   `json:"through"`
	Problems []string `json:"problems,omitempty"`
}

type watcher struct {
	cl *client.Client

	mu     sync.Mutex
	events []WatchEvent
	next   uint64 // the first revision not yet received
	failed string // why watching could not go on (a compacted start)
}

func newWatcher(endpoints []string) (*watcher, error) {
	cl, err := client.New(client.Config{Endpoints: endpoints, DialTimeout: time.Second})
	if err != nil {
		return nil, err
	}
	return &watcher{cl: cl, next: 1}, nil
}

// run watches with KeyVal's Go client, which goes on at the next member
// when a stream breaks, until ctx ends.
func (w *watcher) run(ctx context.Context) {
	defer w.cl.Close()
	for resp := range w.cl.Watch(ctx, []byte("k"), []byte("l"), 1) {
		w.mu.Lock()
		if resp.Err != nil {
			w.failed = resp.Err.Error()
		}
		for _, ev := range resp.Events {
			w.events = append(w.events, WatchEvent{Revision: ev.Revision, Key: string(ev.Key), Value: string(ev.Value), Delete: ev.Deleted})
			w.next = ev.Revision + 1
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

// result is what the watcher got: its events, the last revision it has
// every change up to, and why it stopped early, if it did.
func (w *watcher) result() ([]WatchEvent, uint64, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]WatchEvent(nil), w.events...), w.next - 1, w.failed
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
