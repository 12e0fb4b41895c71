package sim

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// sessionSeq names one client write: its exactly-once session and number.
type sessionSeq struct{ session, seq uint64 }

// appliedWrite is the first application of a client write anywhere in the
// cluster: what it returned and when.
type appliedWrite struct {
	result kvstore.Result
	at     int64
}

// recordingStore is the state machine with a witness: it notes when each
// session write is first applied on any node and what it produced. Every
// node must produce the same result for the same write (a determinism
// check), and at the end of a run the record settles the writes whose
// clients never heard back (see world.resolveUnknown).
type recordingStore struct {
	kvstore.Store
	w *world
}

func (s recordingStore) Apply(entries []kvstore.Entry) ([]kvstore.Result, error) {
	before := s.AppliedIndex()
	results, err := s.Store.Apply(entries)
	if err != nil {
		return results, err
	}
	var cmd kvpb.Command
	for i, e := range entries {
		if e.Index <= before || len(e.Data) == 0 {
			continue
		}
		if proto.Unmarshal(e.Data, &cmd) != nil || cmd.ClientId == 0 || results[i].Duplicate {
			continue
		}
		k := sessionSeq{cmd.ClientId, cmd.Seq}
		r := results[i]
		if prev, ok := s.w.applied[k]; ok {
			if prev.result.Status != r.Status || prev.result.Version != r.Version || prev.result.Existed != r.Existed {
				s.w.fail(fmt.Errorf("session %d seq %d applied with different results on different nodes: %v/%d vs %v/%d",
					k.session, k.seq, prev.result.Status, prev.result.Version, r.Status, r.Version))
			}
			continue
		}
		s.w.applied[k] = appliedWrite{result: r, at: s.w.clock.now}
	}
	return results, nil
}
