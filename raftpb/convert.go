// Package raftpb holds the protobuf form of KeyVal's Raft types, the one
// definition both the WAL and snapshot files (disk) and the transport (net)
// encode, and the one conversion to and from core's types.
//
// raft.pb.go is generated from raft.proto by `make proto`; this file is
// written by hand. Encoding trusts its input (it comes from core); decoding
// does not (the bytes come from the network or a disk): every enum is
// range-checked and a malformed message is an error, never a panic.
package raftpb

import (
	"errors"
	"fmt"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// ErrMalformed is wrapped by every decoding error, so a caller can tell bad
// input apart from its own failures.
var ErrMalformed = errors.New("malformed raft data")

// lastMessageType is the highest core.MessageType this build knows.
const lastMessageType = core.MsgFetchResp

// ValidMessageType reports whether t is a message type that may travel.
func ValidMessageType(t core.MessageType) bool {
	return t >= core.MsgApp && t <= lastMessageType
}

// EncodedSizeEstimate is a cheap upper bound of the bytes m adds to an
// encoded Batch, used to bound batches without encoding twice: the variable
// parts exactly, every varint at its longest, and the framing.
func EncodedSizeEstimate(m *core.Message) int {
	// 9 scalar fields of at most 11 bytes, the message's own tag and
	// length, the context's tag and length.
	n := 9*11 + 6 + 6 + len(m.Context)
	for i := range m.Entries {
		// tag and length, term, index, type, data's tag and length
		n += 6 + 11 + 11 + 11 + 6 + len(m.Entries[i].Data)
	}
	if m.Snapshot != nil {
		// meta's and conf's framing, index, term, two packed lists
		n += 6 + 6 + 11 + 11 + 2*6 + 10*(len(m.Snapshot.Conf.Voters)+len(m.Snapshot.Conf.Learners))
	}
	return n
}

// FromCore returns the protobuf form of m. Byte slices are shared, not
// copied. For the hot path use an Encoder, which reuses its messages.
func FromCore(m *core.Message) *Message {
	pm := &Message{}
	if len(m.Entries) > 0 {
		ents := make([]Entry, len(m.Entries))
		pm.Entries = make([]*Entry, len(m.Entries))
		for i := range m.Entries {
			pm.Entries[i] = &ents[i]
		}
	}
	fillMessage(pm, m, pm.Entries)
	return pm
}

// fillMessage writes every field of m into pm, using ents (already sized to
// len(m.Entries)) for the entries.
func fillMessage(pm *Message, m *core.Message, ents []*Entry) {
	pm.Type = MessageType(m.Type)
	pm.From = uint64(m.From)
	pm.To = uint64(m.To)
	pm.Term = m.Term
	pm.Index = m.Index
	pm.LogTerm = m.LogTerm
	for i := range m.Entries {
		FillEntry(ents[i], &m.Entries[i])
	}
	pm.Entries = ents
	pm.Commit = m.Commit
	pm.Reject = m.Reject
	pm.RejectHint = m.RejectHint
	pm.LogCut = m.LogCut
	pm.Snapshot = nil
	if m.Snapshot != nil {
		pm.Snapshot = SnapshotMetaFromCore(*m.Snapshot)
	}
	pm.Context = m.Context
}

// FillEntry sets pb to e, sharing e.Data; filling a reused Entry spares the
// hot paths an allocation per entry.
func FillEntry(pb *Entry, e *core.Entry) {
	pb.Term, pb.Index, pb.Type, pb.Data = e.Term, e.Index, EntryType(e.Type), e.Data
}

// EntryToCore converts a decoded entry, refusing an entry type core does
// not know. The result shares Data with pb.
func EntryToCore(pb *Entry) (core.Entry, error) {
	if pb.Type != EntryType_ENTRY_NORMAL && pb.Type != EntryType_ENTRY_CONF_CHANGE {
		return core.Entry{}, fmt.Errorf("%w: entry %d has unknown type %d", ErrMalformed, pb.Index, int32(pb.Type))
	}
	return core.Entry{Term: pb.Term, Index: pb.Index, Type: core.EntryType(pb.Type), Data: pb.Data}, nil
}

// FillHardState sets pb to h.
func FillHardState(pb *HardState, h core.HardState) {
	pb.Term, pb.Vote, pb.Commit = h.Term, uint64(h.Vote), h.Commit
}

// HardStateFromCore returns the protobuf form of h.
func HardStateFromCore(h core.HardState) *HardState {
	pb := &HardState{}
	FillHardState(pb, h)
	return pb
}

// HardStateToCore converts a decoded hard state; nil is the zero state.
func HardStateToCore(pb *HardState) core.HardState {
	return core.HardState{Term: pb.GetTerm(), Vote: core.NodeID(pb.GetVote()), Commit: pb.GetCommit()}
}

// SnapshotMetaFromCore returns the protobuf form of m. Conf is always set,
// even when empty: the bytes written so far (disk/testdata/golden) carry it.
func SnapshotMetaFromCore(m core.SnapshotMeta) *SnapshotMeta {
	return &SnapshotMeta{
		Index: m.Index,
		Term:  m.Term,
		Conf:  &ConfState{Voters: idsFromCore(m.Conf.Voters), Learners: idsFromCore(m.Conf.Learners)},
	}
}

// SnapshotMetaToCore converts decoded snapshot metadata; nil is the zero
// metadata.
func SnapshotMetaToCore(pb *SnapshotMeta) core.SnapshotMeta {
	return core.SnapshotMeta{
		Index: pb.GetIndex(),
		Term:  pb.GetTerm(),
		Conf: core.ConfState{
			Voters:   idsToCore(pb.GetConf().GetVoters()),
			Learners: idsToCore(pb.GetConf().GetLearners()),
		},
	}
}

func idsFromCore(ids []core.NodeID) []uint64 {
	if len(ids) == 0 {
		return nil
	}
	out := make([]uint64, len(ids))
	for i, id := range ids {
		out[i] = uint64(id)
	}
	return out
}

// ToCore converts one decoded message, checking every enum. The result
// shares byte slices (entry data, context) with pm.
func ToCore(pm *Message) (core.Message, error) {
	var ents []core.Entry
	if n := len(pm.GetEntries()); n > 0 {
		ents = make([]core.Entry, n)
	}
	return toCore(pm, ents)
}

// toCore converts pm using ents, already sized to its entry count.
func toCore(pm *Message, ents []core.Entry) (core.Message, error) {
	if pm == nil {
		return core.Message{}, fmt.Errorf("%w: nil message", ErrMalformed)
	}
	t := pm.Type
	if t <= MessageType_MSG_UNSPECIFIED || t > MessageType(lastMessageType) {
		return core.Message{}, fmt.Errorf("%w: unknown message type %d", ErrMalformed, int32(t))
	}
	for i, pe := range pm.Entries {
		if pe == nil {
			return core.Message{}, fmt.Errorf("%w: nil entry %d", ErrMalformed, i)
		}
		e, err := EntryToCore(pe)
		if err != nil {
			return core.Message{}, fmt.Errorf("entry %d of message: %w", i, err)
		}
		ents[i] = e
	}
	m := core.Message{
		Type:       core.MessageType(t),
		From:       core.NodeID(pm.From),
		To:         core.NodeID(pm.To),
		Term:       pm.Term,
		Index:      pm.Index,
		LogTerm:    pm.LogTerm,
		Entries:    ents,
		Commit:     pm.Commit,
		Reject:     pm.Reject,
		RejectHint: pm.RejectHint,
		LogCut:     pm.LogCut,
		Context:    pm.Context,
	}
	if pm.Snapshot != nil {
		s := SnapshotMetaToCore(pm.Snapshot)
		m.Snapshot = &s
	}
	return m, nil
}

// idsToCore returns nil for an empty list, so decoded metadata compares
// equal to metadata built with nil lists.
func idsToCore(ids []uint64) []core.NodeID {
	if len(ids) == 0 {
		return nil
	}
	out := make([]core.NodeID, len(ids))
	for i, id := range ids {
		out[i] = core.NodeID(id)
	}
	return out
}

// DecodeBatch appends the messages of b to out and returns it. All entries of
// the batch share one allocation, sliced per message with its capacity
// capped, so appending to one message's entries cannot overwrite another's.
// On error out is returned truncated to its original length.
func DecodeBatch(b *Batch, out []core.Message) ([]core.Message, error) {
	total := 0
	for _, pm := range b.GetMessages() {
		total += len(pm.GetEntries())
	}
	var slab []core.Entry
	if total > 0 {
		slab = make([]core.Entry, total)
	}
	start := len(out)
	for i, pm := range b.GetMessages() {
		n := len(pm.GetEntries())
		var ents []core.Entry
		if n > 0 {
			ents, slab = slab[:n:n], slab[n:]
		}
		m, err := toCore(pm, ents)
		if err != nil {
			return out[:start], fmt.Errorf("message %d of batch: %w", i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Encoder builds Batches from core messages, reusing the protobuf messages
// of earlier batches so that steady-state encoding allocates almost nothing.
// A Batch it returns is valid until the next Reset; it shares byte slices
// with the core messages added to it. Not safe for concurrent use.
type Encoder struct {
	batch Batch
	msgs  []*Message // every Message ever allocated; the first used are in batch
	ents  []*Entry   // likewise for entries
	nents int        // entries in use
}

// Reset empties the batch, dropping references to the previous messages'
// bytes so that a quiet peer does not pin them in memory.
func (e *Encoder) Reset() {
	for _, pm := range e.batch.Messages {
		pm.Context = nil
		pm.Snapshot = nil
	}
	for _, pe := range e.ents[:e.nents] {
		pe.Data = nil
	}
	e.batch.Messages = e.batch.Messages[:0]
	e.nents = 0
}

// Add appends m to the batch.
func (e *Encoder) Add(m *core.Message) {
	i := len(e.batch.Messages)
	if i == len(e.msgs) {
		e.msgs = append(e.msgs, &Message{})
	}
	pm := e.msgs[i]
	for len(e.ents) < e.nents+len(m.Entries) {
		e.ents = append(e.ents, &Entry{})
	}
	ents := e.ents[e.nents : e.nents+len(m.Entries) : e.nents+len(m.Entries)]
	if len(ents) == 0 {
		ents = nil
	}
	e.nents += len(m.Entries)
	fillMessage(pm, m, ents)
	e.batch.Messages = append(e.batch.Messages, pm)
}

// Len is the number of messages in the batch.
func (e *Encoder) Len() int { return len(e.batch.Messages) }

// Batch returns the batch built since the last Reset.
func (e *Encoder) Batch() *Batch { return &e.batch }
