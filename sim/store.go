package sim

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
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
	if s.w.reference != nil {
		s.w.feedReference(entries)
	}
	for i, e := range entries {
		if e.Index <= before || len(e.Data) == 0 {
			continue
		}
		k, ok := sessionOf(e.Data)
		if !ok || k.session == 0 || results[i].Duplicate {
			continue
		}
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

// sessionOf reads a command's session and sequence number (kvpb.Command's
// client_id and seq) without decoding the rest: it runs for every applied
// entry on every node. False if the command is not well-formed protobuf.
func sessionOf(data []byte) (sessionSeq, bool) {
	var k sessionSeq
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return k, false
		}
		data = data[n:]
		if typ == protowire.VarintType && (num == fieldClientID || num == fieldSeq) {
			v, m := protowire.ConsumeVarint(data)
			if m < 0 {
				return k, false
			}
			if num == fieldClientID {
				k.session = v
			} else {
				k.seq = v
			}
			n = m
		} else if n = protowire.ConsumeFieldValue(num, typ, data); n < 0 {
			return k, false
		}
		data = data[n:]
	}
	return k, true
}

// The field numbers of kvpb.Command that sessionOf reads (kvstore.proto).
const (
	fieldClientID = 1
	fieldSeq      = 2
)
