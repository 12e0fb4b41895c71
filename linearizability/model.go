package linearizability

import (
	"hash/fnv"
	"slices"
	"strconv"

	"github.com/anishathalye/porcupine"
)

// keyState is the model's state of one key.
//
// Versions are learned, not predicted: the store hands out versions from one
// revision counter shared by all keys, so from one key's point of view they
// jump by unpredictable amounts. What the model knows is that every write to
// the key gets a version greater than any the key had before, even across a
// delete. So the state carries either the exact current version (Exact) or
// only a strict lower bound on every version the key has now or will have
// (after an unknown-outcome write, or while the key is absent).
type keyState struct {
	// Denied: the workload's user may not use the key (auth is enabled and
	// its readwrite on the key was revoked). Keys start allowed.
	Denied bool
	Exists bool
	Value  string
	// Version is the key's current version when Exact; otherwise every
	// version the key has now or gets later is strictly greater.
	Version uint64
	Exact   bool
}

// versionMatches reports whether the key, which must exist, can have version
// v in this state.
func (s keyState) versionMatches(v uint64) bool {
	if s.Exact {
		return v == s.Version
	}
	return v > s.Version
}

// step applies one operation to s. It reports whether the output is possible
// in state s and returns the state after the operation. It never mutates s.
//
// An operation with an unknown outcome is always possible: Porcupine may
// place it anywhere after its call, including after everything else (where it
// affects nothing observable), which stands for "did not take effect". So
// wherever it is placed it takes effect if it can, and the version it wrote
// is unknown.
func step(s keyState, in Input, out Output) (bool, keyState) {
	switch in.Kind {
	case OpGrant, OpRevoke:
		s.Denied = in.Kind == OpRevoke
		return true, s
	}
	if out.Denied {
		return s.Denied, s
	}
	if s.Denied && !out.Unknown {
		return false, s
	}
	ok, next := stepData(s, in, out)
	next.Denied = s.Denied
	return ok, next
}

// stepData is step for an operation the user was allowed to make.
func stepData(s keyState, in Input, out Output) (bool, keyState) {
	switch in.Kind {
	case OpPut:
		if out.Unknown {
			return true, keyState{Exists: true, Value: in.Value, Version: s.Version}
		}
		if out.Version <= s.Version {
			return false, s
		}
		return true, keyState{Exists: true, Value: in.Value, Version: out.Version, Exact: true}

	case OpGet:
		if out.Unknown {
			// Reads with unknown outcomes are dropped before checking;
			// one that gets here constrains nothing.
			return true, s
		}
		if !out.Found {
			return !s.Exists, s
		}
		if !s.Exists || out.Value != s.Value || !s.versionMatches(out.Version) {
			return false, s
		}
		return true, keyState{Exists: true, Value: s.Value, Version: out.Version, Exact: true}

	case OpDelete:
		// The key's last version stays as a lower bound: a later write
		// gets a later revision.
		after := keyState{Version: s.Version}
		if out.Unknown {
			return true, after
		}
		return out.Found == s.Exists, after

	case OpCAS:
		return stepCAS(s, in, out)
	}
	return false, s
}

func stepCAS(s keyState, in Input, out Output) (bool, keyState) {
	// canSwap: the CAS's condition may hold in s. With an exact version or
	// an absent key it is decided; with only a lower bound, any expected
	// version above the bound may be the key's current one.
	var canSwap bool
	if in.ExpectedVersion == 0 {
		canSwap = !s.Exists
	} else {
		canSwap = s.Exists && s.versionMatches(in.ExpectedVersion)
	}
	// The current version is then ExpectedVersion (or, for an absent key,
	// above s.Version), so the new one is above that.
	floor := max(in.ExpectedVersion, s.Version)

	if out.Unknown {
		if !canSwap {
			return true, s
		}
		return true, keyState{Exists: true, Value: in.Value, Version: floor}
	}
	if out.Succeeded {
		if !canSwap || out.Version <= floor {
			return false, s
		}
		return true, keyState{Exists: true, Value: in.Value, Version: out.Version, Exact: true}
	}

	// Failed: the reply reports the key's current state, which must be
	// ours, and the condition must not hold for it.
	if !out.Found {
		return !s.Exists && in.ExpectedVersion != 0, s
	}
	if !s.Exists || out.Value != s.Value || !s.versionMatches(out.Version) ||
		out.Version == in.ExpectedVersion {
		return false, s
	}
	return true, keyState{Exists: true, Value: s.Value, Version: out.Version, Exact: true}
}

func (s keyState) String() string {
	if s.Denied {
		return s.dataString() + " (denied)"
	}
	return s.dataString()
}

func (s keyState) dataString() string {
	switch {
	case !s.Exists && s.Version == 0:
		return "absent"
	case !s.Exists:
		return "absent (next version > v" + strconv.FormatUint(s.Version, 10) + ")"
	case s.Exact:
		return describeValue(s.Value, s.Version)
	default:
		return strconv.Quote(s.Value) + " @v? (> v" + strconv.FormatUint(s.Version, 10) + ")"
	}
}

func (s keyState) hash() uint64 {
	h := fnv.New64a()
	var flags [3]byte
	if s.Exists {
		flags[0] = 1
	}
	if s.Exact {
		flags[1] = 1
	}
	if s.Denied {
		flags[2] = 1
	}
	_, _ = h.Write(flags[:])
	_, _ = h.Write([]byte(s.Value))
	return h.Sum64() ^ s.Version*0x9e3779b97f4a7c15
}

// Model is the Porcupine model of KeyVal's client API. Operations on
// different keys never constrain each other, so it partitions the history by
// key and each partition's state is a single keyState. Inputs must be Input
// and outputs Output values.
func Model() porcupine.Model {
	return porcupine.Model{
		Partition:      partitionOperations,
		PartitionEvent: partitionEvents,
		Init:           func() any { return keyState{} },
		Step: func(state, input, output any) (bool, any) {
			return step(state.(keyState), input.(Input), output.(Output))
		},
		Equal: func(a, b any) bool { return a.(keyState) == b.(keyState) },
		Hash:  func(state any) uint64 { return state.(keyState).hash() },
		DescribeOperation: func(input, output any) string {
			return DescribeOperation(input.(Input), output.(Output))
		},
		DescribeState: func(state any) string { return state.(keyState).String() },
		DescribeOperationMetadata: func(info any) string {
			if info == nil {
				return ""
			}
			s, _ := info.(string)
			return s
		},
	}
}

// partitionOperations groups operations by key, keys in sorted order so the
// partitions (and the visualization) come out the same every time.
func partitionOperations(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := make(map[string][]porcupine.Operation)
	for _, op := range history {
		key := op.Input.(Input).Key
		byKey[key] = append(byKey[key], op)
	}
	keys := sortedKeys(byKey)
	partitions := make([][]porcupine.Operation, len(keys))
	for i, key := range keys {
		partitions[i] = byKey[key]
	}
	return partitions
}

// partitionEvents groups events by key. A return event carries no key, so
// it goes with the call event of the same Id.
func partitionEvents(history []porcupine.Event) [][]porcupine.Event {
	keyOf := make(map[int]string)
	byKey := make(map[string][]porcupine.Event)
	for _, ev := range history {
		if ev.Kind == porcupine.CallEvent {
			keyOf[ev.Id] = ev.Value.(Input).Key
		}
		key := keyOf[ev.Id]
		byKey[key] = append(byKey[key], ev)
	}
	keys := sortedKeys(byKey)
	partitions := make([][]porcupine.Event, len(keys))
	for i, key := range keys {
		partitions[i] = byKey[key]
	}
	return partitions
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
