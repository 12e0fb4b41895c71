// Package linearizability checks that histories of KeyVal client operations
// are linearizable.
//
// Both the deterministic simulator and real-cluster tests record what their
// clients did into a Recorder (call, return or unknown outcome, with times the
// caller supplies). Check then hands the history to Porcupine with a model of
// KeyVal's client API, partitioned by key, and reports a verdict; a Result can
// also write Porcupine's HTML visualization for a person to inspect.
//
// The package is deterministic: it starts no goroutines of its own, never
// reads a clock (times come from the caller), draws no randomness and does not
// depend on map iteration order. Porcupine itself checks partitions on
// goroutines and enforces the timeout with a timer; its verdict does not
// depend on either unless the timeout expires. See docs/linearizability.md.
package linearizability

import (
	"fmt"
	"strconv"
)

// OpKind is one of the client API's operations.
type OpKind uint8

const (
	// OpPut writes a value; it returns the key's new version.
	OpPut OpKind = iota + 1
	// OpGet is a linearizable read; it returns value, version and whether
	// the key exists.
	OpGet
	// OpDelete removes a key; it returns whether the key existed.
	OpDelete
	// OpCAS is compare-and-swap against the key's version (0: "must be
	// absent").
	OpCAS
	// OpGrant gives the workload's user readwrite on the key, OpRevoke
	// takes it away (an administrator's auth change; with auth enabled the
	// user's operations on the key are then allowed, or refused with
	// Output.Denied). Their outputs say nothing: either way the key ends
	// up allowed, or not.
	OpGrant
	OpRevoke
)

// opKinds lists every kind in a fixed order, for stable summaries.
var opKinds = [...]OpKind{OpPut, OpGet, OpDelete, OpCAS, OpGrant, OpRevoke}

func (k OpKind) String() string {
	switch k {
	case OpPut:
		return "put"
	case OpGet:
		return "get"
	case OpDelete:
		return "delete"
	case OpCAS:
		return "cas"
	case OpGrant:
		return "grant"
	case OpRevoke:
		return "revoke"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// isData reports whether the kind reads or writes keys (rather than
// changing who may).
func (k OpKind) isData() bool { return k <= OpCAS }

// isWrite reports whether an operation of this kind may change the state:
// the store, or who may use it.
func (k OpKind) isWrite() bool {
	return k == OpPut || k == OpDelete || k == OpCAS || k == OpGrant || k == OpRevoke
}

// Input is what a client asked for.
type Input struct {
	Kind OpKind
	Key  string
	// Value is the value written by a put, or the new value of a CAS.
	Value string
	// ExpectedVersion is a CAS's expected version; 0 means the key must be
	// absent.
	ExpectedVersion uint64
}

// Output is what a client was told. Which fields mean something depends on
// the operation's kind:
//
//	put:    Version (the key's new version, > 0)
//	get:    Found; when found, Value and Version
//	delete: Found (whether the key existed)
//	cas:    Succeeded; on success Version is the new version; on failure
//	        Found says whether the key exists and, when it does, Value and
//	        Version are its current value and version
//
// Unknown means the client never learned the outcome (timeout, connection
// lost): a write may or may not have taken effect, at any time after its
// call. The other fields are then ignored. Denied means the operation was
// refused for want of permission and changed nothing.
type Output struct {
	Unknown   bool
	Denied    bool
	Succeeded bool
	Found     bool
	Value     string
	Version   uint64
}

// Put is the input of a put.
func Put(key, value string) Input { return Input{Kind: OpPut, Key: key, Value: value} }

// Get is the input of a linearizable get.
func Get(key string) Input { return Input{Kind: OpGet, Key: key} }

// Delete is the input of a delete.
func Delete(key string) Input { return Input{Kind: OpDelete, Key: key} }

// CAS is the input of a compare-and-swap: set key to newValue if its version
// is expectedVersion (0: if the key is absent).
func CAS(key string, expectedVersion uint64, newValue string) Input {
	return Input{Kind: OpCAS, Key: key, Value: newValue, ExpectedVersion: expectedVersion}
}

// PutOK is the output of a put that was applied at version.
func PutOK(version uint64) Output { return Output{Version: version} }

// GetFound is the output of a get that found value at version.
func GetFound(value string, version uint64) Output {
	return Output{Found: true, Value: value, Version: version}
}

// GetNotFound is the output of a get of an absent key.
func GetNotFound() Output { return Output{} }

// DeleteOK is the output of a delete; existed says whether the key existed.
func DeleteOK(existed bool) Output { return Output{Found: existed} }

// CASSucceeded is the output of a CAS that swapped in its value at
// newVersion.
func CASSucceeded(newVersion uint64) Output { return Output{Succeeded: true, Version: newVersion} }

// CASFailed is the output of a CAS whose expected version did not match the
// key's current value and version.
func CASFailed(currentValue string, currentVersion uint64) Output {
	return Output{Found: true, Value: currentValue, Version: currentVersion}
}

// CASFailedAbsent is the output of a CAS that failed because the key does
// not exist.
func CASFailedAbsent() Output { return Output{} }

// Denied is the output of an operation refused for want of permission.
func Denied() Output { return Output{Denied: true} }

// Grant and Revoke give and take the workload user's permission on key.
func Grant(key string) Input  { return Input{Kind: OpGrant, Key: key} }
func Revoke(key string) Input { return Input{Kind: OpRevoke, Key: key} }

// UnknownOutcome is the output of an operation whose outcome the client
// never learned.
func UnknownOutcome() Output { return Output{Unknown: true} }

// String renders an input for people, e.g. `put(k, "v")`.
func (in Input) String() string {
	switch in.Kind {
	case OpPut:
		return fmt.Sprintf("put(%s, %s)", in.Key, strconv.Quote(in.Value))
	case OpGet:
		return fmt.Sprintf("get(%s)", in.Key)
	case OpDelete:
		return fmt.Sprintf("delete(%s)", in.Key)
	case OpCAS:
		expected := "absent"
		if in.ExpectedVersion != 0 {
			expected = "v" + strconv.FormatUint(in.ExpectedVersion, 10)
		}
		return fmt.Sprintf("cas(%s, %s, %s)", in.Key, expected, strconv.Quote(in.Value))
	}
	return fmt.Sprintf("%v(%s)", in.Kind, in.Key)
}

// describe renders the output of an operation of kind k for people.
func (out Output) describe(k OpKind) string {
	switch {
	case out.Unknown:
		return "? (outcome unknown)"
	case out.Denied:
		return "permission denied"
	case k == OpGrant || k == OpRevoke:
		return "done"
	}
	switch k {
	case OpPut:
		return "v" + strconv.FormatUint(out.Version, 10)
	case OpGet:
		if !out.Found {
			return "not found"
		}
		return describeValue(out.Value, out.Version)
	case OpDelete:
		if out.Found {
			return "existed"
		}
		return "was absent"
	case OpCAS:
		if out.Succeeded {
			return "ok v" + strconv.FormatUint(out.Version, 10)
		}
		if !out.Found {
			return "failed: absent"
		}
		return "failed: " + describeValue(out.Value, out.Version)
	}
	return fmt.Sprintf("%+v", out)
}

func describeValue(value string, version uint64) string {
	return strconv.Quote(value) + " @v" + strconv.FormatUint(version, 10)
}

// DescribeOperation renders one operation, e.g. `put(k, "v") → v7`.
func DescribeOperation(in Input, out Output) string {
	return in.String() + " → " + out.describe(in.Kind)
}
