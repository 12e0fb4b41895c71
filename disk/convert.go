package disk

import (
	"fmt"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk/walpb"
)

// Conversions between core's types and their protobuf form on disk.

func entryToPB(e *core.Entry, pb *walpb.Entry) {
	pb.Term, pb.Index, pb.Type, pb.Data = e.Term, e.Index, uint32(e.Type), e.Data
}

func entryFromPB(pb *walpb.Entry) (core.Entry, error) {
	if pb.Type > 0xFF {
		return core.Entry{}, fmt.Errorf("entry type %d out of range", pb.Type)
	}
	return core.Entry{Term: pb.Term, Index: pb.Index, Type: core.EntryType(pb.Type), Data: pb.Data}, nil
}

func hardStateToPB(h core.HardState) *walpb.HardState {
	return &walpb.HardState{Term: h.Term, Vote: uint64(h.Vote), Commit: h.Commit}
}

func hardStateFromPB(pb *walpb.HardState) core.HardState {
	return core.HardState{Term: pb.GetTerm(), Vote: core.NodeID(pb.GetVote()), Commit: pb.GetCommit()}
}

func snapshotMetaToPB(m core.SnapshotMeta) *walpb.SnapshotMeta {
	return &walpb.SnapshotMeta{
		Index: m.Index,
		Term:  m.Term,
		Conf:  &walpb.ConfState{Voters: idsToPB(m.Conf.Voters), Learners: idsToPB(m.Conf.Learners)},
	}
}

func snapshotMetaFromPB(pb *walpb.SnapshotMeta) core.SnapshotMeta {
	return core.SnapshotMeta{
		Index: pb.GetIndex(),
		Term:  pb.GetTerm(),
		Conf: core.ConfState{
			Voters:   idsFromPB(pb.GetConf().GetVoters()),
			Learners: idsFromPB(pb.GetConf().GetLearners()),
		},
	}
}

func idsToPB(ids []core.NodeID) []uint64 {
	if len(ids) == 0 {
		return nil
	}
	out := make([]uint64, len(ids))
	for i, id := range ids {
		out[i] = uint64(id)
	}
	return out
}

// idsFromPB returns nil for an empty list, so that metadata read back
// compares equal (reflect.DeepEqual) to metadata built with nil lists.
func idsFromPB(ids []uint64) []core.NodeID {
	if len(ids) == 0 {
		return nil
	}
	out := make([]core.NodeID, len(ids))
	for i, id := range ids {
		out[i] = core.NodeID(id)
	}
	return out
}

// sameMeta compares snapshot metadata, treating nil and empty lists alike.
func sameMeta(a, b core.SnapshotMeta) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Conf.Equal(b.Conf)
}
