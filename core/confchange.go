package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// ConfChangeType names one kind of membership change.
type ConfChangeType uint8

const (
	// ConfAddLearner adds a node that receives the log but does not vote.
	ConfAddLearner ConfChangeType = iota + 1
	// ConfPromote makes a caught-up learner a voter.
	ConfPromote
	// ConfRemove removes a voter or a learner (possibly the leader itself).
	ConfRemove
)

func (t ConfChangeType) String() string {
	switch t {
	case ConfAddLearner:
		return "AddLearner"
	case ConfPromote:
		return "Promote"
	case ConfRemove:
		return "Remove"
	}
	return fmt.Sprintf("ConfChangeType(%d)", uint8(t))
}

// ConfChange is one membership change. Context is opaque to core: the
// runtime puts there what it needs to reach the node (its address).
type ConfChange struct {
	Type    ConfChangeType
	Node    NodeID
	Context []byte
}

// Membership errors. Each refusal leaves the configuration untouched.
var (
	// ErrConfChangePending refuses a change while an earlier one is not yet
	// committed: changes go one at a time, so any two majorities overlap.
	ErrConfChangePending = errors.New("a membership change is already in progress")
	// ErrNoTermCommit refuses a change before the leader has committed an
	// entry of its own term (the known fix for single-server changes: a
	// change from a deposed leader's term could otherwise be lost while a
	// new one commits).
	ErrNoTermCommit = errors.New("the leader has not committed an entry in its term yet")
	// ErrLearnerBehind refuses to promote a learner that is too far behind.
	ErrLearnerBehind = errors.New("learner is not caught up with the leader")
	// ErrInvalidConfChange refuses a change that does not fit the current
	// membership (adding a member twice, promoting a voter, …).
	ErrInvalidConfChange = errors.New("invalid membership change")
)

// confEntry is what an EntryConfChange carries: the change and the whole
// membership it produces. Carrying the result, not only the delta, lets a
// node find its configuration from the latest such entry alone — also a new
// node that starts with an empty configuration and learns the log from the
// leader.
type confEntry struct {
	Change ConfChange
	Result ConfState
}

const confEntryVersion = 1

func (c confEntry) encode() []byte {
	b := []byte{confEntryVersion, byte(c.Change.Type)}
	b = binary.AppendUvarint(b, uint64(c.Change.Node))
	b = binary.AppendUvarint(b, uint64(len(c.Change.Context)))
	b = append(b, c.Change.Context...)
	for _, ids := range [][]NodeID{c.Result.Voters, c.Result.Learners} {
		b = binary.AppendUvarint(b, uint64(len(ids)))
		for _, id := range ids {
			b = binary.AppendUvarint(b, uint64(id))
		}
	}
	return b
}

// DecodeConfChange reads the data of an EntryConfChange entry: the change
// and the membership in force from that entry on.
func DecodeConfChange(data []byte) (ConfChange, ConfState, error) {
	c, err := decodeConfEntry(data)
	return c.Change, c.Result, err
}

func decodeConfEntry(data []byte) (confEntry, error) {
	var c confEntry
	if len(data) < 2 || data[0] != confEntryVersion {
		return c, errors.New("conf change entry: bad header")
	}
	c.Change.Type = ConfChangeType(data[1])
	if c.Change.Type < ConfAddLearner || c.Change.Type > ConfRemove {
		return c, fmt.Errorf("conf change entry: unknown type %d", data[1])
	}
	rest := data[2:]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			return 0, false
		}
		rest = rest[n:]
		return v, true
	}
	node, ok := next()
	if !ok || node == 0 {
		return c, errors.New("conf change entry: bad node id")
	}
	c.Change.Node = NodeID(node)
	n, ok := next()
	if !ok || n > uint64(len(rest)) {
		return c, errors.New("conf change entry: bad context length")
	}
	if n > 0 {
		c.Change.Context = append([]byte(nil), rest[:n]...)
	}
	rest = rest[n:]
	for _, ids := range []*[]NodeID{&c.Result.Voters, &c.Result.Learners} {
		count, ok := next()
		// Each id takes at least one byte: a count beyond what is left is a lie.
		if !ok || count > uint64(len(rest)) {
			return c, errors.New("conf change entry: bad member count")
		}
		for range count {
			id, ok := next()
			if !ok || id == 0 {
				return c, errors.New("conf change entry: bad member id")
			}
			*ids = append(*ids, NodeID(id))
		}
		if !slices.IsSorted(*ids) || len(slices.Compact(slices.Clone(*ids))) != len(*ids) {
			return c, errors.New("conf change entry: members not sorted and unique")
		}
	}
	if len(rest) != 0 {
		return c, errors.New("conf change entry: trailing bytes")
	}
	return c, nil
}

// applyConfChange returns the membership after cc, or an error if cc does
// not fit conf.
func applyConfChange(conf ConfState, cc ConfChange) (ConfState, error) {
	if cc.Node == None {
		return conf, fmt.Errorf("%w: node id 0", ErrInvalidConfChange)
	}
	_, isVoter := slices.BinarySearch(conf.Voters, cc.Node)
	_, isLearner := slices.BinarySearch(conf.Learners, cc.Node)
	out := ConfState{Voters: slices.Clone(conf.Voters), Learners: slices.Clone(conf.Learners)}
	switch cc.Type {
	case ConfAddLearner:
		if isVoter || isLearner {
			return conf, fmt.Errorf("%w: node %d is already a member", ErrInvalidConfChange, cc.Node)
		}
		out.Learners = sortedIDs(append(out.Learners, cc.Node))
	case ConfPromote:
		if !isLearner {
			return conf, fmt.Errorf("%w: node %d is not a learner", ErrInvalidConfChange, cc.Node)
		}
		out.Learners = slices.DeleteFunc(out.Learners, func(id NodeID) bool { return id == cc.Node })
		out.Voters = sortedIDs(append(out.Voters, cc.Node))
	case ConfRemove:
		switch {
		case isVoter && len(conf.Voters) == 1:
			return conf, fmt.Errorf("%w: node %d is the last voter", ErrInvalidConfChange, cc.Node)
		case isVoter:
			out.Voters = slices.DeleteFunc(out.Voters, func(id NodeID) bool { return id == cc.Node })
		case isLearner:
			out.Learners = slices.DeleteFunc(out.Learners, func(id NodeID) bool { return id == cc.Node })
		default:
			return conf, fmt.Errorf("%w: node %d is not a member", ErrInvalidConfChange, cc.Node)
		}
	default:
		return conf, fmt.Errorf("%w: unknown type %d", ErrInvalidConfChange, cc.Type)
	}
	return out, nil
}

// confAt is the membership in force at index i of the log: that of the
// latest configuration entry at or before i, or the snapshot's.
func (l *raftLog) confAt(i uint64) (ConfState, uint64) {
	for j := min(i, l.lastIndex()); j > l.snap.Index; j-- {
		e := &l.entries[j-l.snap.Index-1]
		if e.Type != EntryConfChange {
			continue
		}
		// Entries were validated when they entered the log.
		if c, err := decodeConfEntry(e.Data); err == nil {
			return c.Result, j
		}
	}
	return l.snap.Conf, l.snap.Index
}
