package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
)

// WatchEvent is one change to a watched key.
type WatchEvent struct {
	// Revision is the store revision of the change (a key's version).
	Revision uint64
	Key      []byte
	// Value is the key's new value; empty for a deletion.
	Value   []byte
	Deleted bool
}

// WatchResponse carries the events of one or more whole revisions, in
// revision order, or the error that ended the watch (the last response).
type WatchResponse struct {
	Events []WatchEvent
	Err    error
}

// ErrWatchCompacted ends a watch whose next revision was compacted away:
// the changes since are gone. Read the current state and watch from its
// revision.
var ErrWatchCompacted = errors.New("keyval: the watch's next revision was compacted")

// Watch follows the changes to the keys in [key, end) (end nil: key
// alone; PrefixEnd(key) for every key under a prefix) from revision from
// on (0: from the next change). It speaks etcd's Watch service, which every
// member serves on its client port beside KeyVal's API. A watch served
// by a member that stops or becomes unreachable goes on at another from
// the revision after the last event delivered, so events come in revision
// order with no gap and none twice. The channel closes once ctx ends, the
// client is closed, or a response with Err says why the watch ended.
func (c *Client) Watch(ctx context.Context, key, end []byte, from uint64) <-chan WatchResponse {
	out := make(chan WatchResponse)
	go func() {
		defer close(out)
		next := from
		for i := int(c.preferred.Load()); ctx.Err() == nil && !c.closed.Load(); i++ {
			ep := c.eps[i%len(c.eps)]
			err := c.watchOn(ctx, ep, key, end, &next, out)
			if errors.Is(err, ErrWatchCompacted) {
				select {
				case out <- WatchResponse{Err: err}:
				case <-ctx.Done():
				}
				return
			}
			select { // the next member, after a moment
			case <-ctx.Done():
			case <-time.After(c.cfg.DialTimeout / 4):
			}
		}
	}()
	return out
}

// PrefixEnd is the end of the range of every key that starts with prefix
// (auth.PrefixEnd: the same range a permission on a prefix covers).
func PrefixEnd(prefix []byte) []byte { return auth.PrefixEnd(prefix) }

// watchOn runs one stream on ep until it breaks, delivering events and
// moving *next past them.
func (c *Client) watchOn(ctx context.Context, ep *endpoint, key, end []byte, next *uint64, out chan<- WatchResponse) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewWatchClient(ep.conn).Watch(sctx)
	if err != nil {
		return fmt.Errorf("watch on %s: %w", ep.addr, err)
	}
	create := &pb.WatchCreateRequest{Key: key, RangeEnd: end, StartRevision: int64(*next)}
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: create}}); err != nil {
		return fmt.Errorf("watch on %s: %w", ep.addr, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("watch on %s: %w", ep.addr, err)
		}
		if resp.Created && *next == 0 {
			// From the next change: the revision the stream starts after.
			*next = uint64(resp.Header.GetRevision()) + 1
		}
		if resp.Canceled {
			if resp.CompactRevision != 0 {
				return fmt.Errorf("%w (from %d; the first revision left is %d)", ErrWatchCompacted, *next, resp.CompactRevision)
			}
			return fmt.Errorf("watch on %s canceled: %s", ep.addr, resp.CancelReason)
		}
		if len(resp.Events) == 0 {
			continue
		}
		evs := make([]WatchEvent, len(resp.Events))
		for i, ev := range resp.Events {
			evs[i] = WatchEvent{Revision: uint64(ev.Kv.ModRevision), Key: ev.Kv.Key, Value: ev.Kv.Value, Deleted: ev.Type == mvccpb.DELETE}
		}
		select {
		case out <- WatchResponse{Events: evs}:
			*next = evs[len(evs)-1].Revision + 1
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
