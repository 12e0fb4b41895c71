package linearizability

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// done is an operation that returned out over [call, ret].
func done(client int, call, ret int64, in Input, out Output) Op {
	return Op{ClientID: client, Input: in, Output: out, Call: call, Return: ret, Status: Returned}
}

// lost is an operation called at call whose outcome the client never learned.
func lost(client int, call int64, in Input) Op {
	return Op{ClientID: client, Input: in, Output: UnknownOutcome(), Call: call, Status: Returned}
}

type historyCase struct {
	name string
	ops  []Op
}

var linearizableHistories = []historyCase{
	{"empty", nil},
	{"a revoke refuses later operations, a grant allows them again", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(9, 20, 30, Revoke("x"), Output{}),
		done(0, 40, 50, Put("x", "b"), Denied()),
		done(0, 60, 70, Get("x"), Denied()),
		done(9, 80, 90, Grant("x"), Output{}),
		done(0, 100, 110, Get("x"), GetFound("a", 1)),
	}},
	{"an operation overlapping a revoke may go either way", []Op{
		done(9, 0, 50, Revoke("x"), Output{}),
		done(0, 10, 20, Put("x", "a"), PutOK(3)),
		done(1, 10, 60, Put("x", "b"), Denied()),
		done(9, 70, 80, Grant("x"), Output{}),
		done(0, 90, 100, Get("x"), GetFound("a", 3)),
	}},
	{"a revoke whose outcome is unknown may not have happened", []Op{
		lost(9, 0, Revoke("x")),
		done(0, 10, 20, Put("x", "a"), PutOK(1)),
		done(0, 30, 40, Get("x"), Denied()),
	}},
	{"sequential put then get", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(0, 20, 30, Get("x"), GetFound("a", 1)),
	}},
	{"get of a key never written", []Op{
		done(0, 0, 10, Get("x"), GetNotFound()),
	}},
	{"closed intervals that touch are concurrent", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(1, 10, 20, Get("x"), GetNotFound()),
	}},
	{"reads overlapping a put see old then new", []Op{
		done(0, 0, 5, Put("x", "a"), PutOK(1)),
		done(0, 10, 50, Put("x", "b"), PutOK(2)),
		done(1, 20, 30, Get("x"), GetFound("a", 1)),
		done(2, 25, 45, Get("x"), GetFound("b", 2)),
		done(1, 35, 45, Get("x"), GetFound("b", 2)),
	}},
	{"overlapping puts linearized in the order their versions say", []Op{
		done(0, 0, 50, Put("x", "a"), PutOK(4)),
		done(1, 10, 40, Put("x", "b"), PutOK(3)),
		done(2, 60, 70, Get("x"), GetFound("a", 4)),
	}},
	{"versions jump because other keys were written", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(0, 20, 30, Put("y", "b"), PutOK(2)),
		done(0, 40, 50, Put("x", "c"), PutOK(5)),
		done(1, 60, 70, Get("x"), GetFound("c", 5)),
		done(1, 60, 70, Get("y"), GetFound("b", 2)),
	}},
	{"cas succeeds on the current version", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(0, 20, 30, CAS("x", 1, "b"), CASSucceeded(3)),
		done(0, 40, 50, Get("x"), GetFound("b", 3)),
	}},
	{"cas fails on a stale version and reports the current one", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(3)),
		done(0, 20, 30, CAS("x", 2, "b"), CASFailed("a", 3)),
		done(0, 40, 50, Get("x"), GetFound("a", 3)),
	}},
	{"cas with expected version 0 creates an absent key once", []Op{
		done(0, 0, 10, CAS("x", 0, "a"), CASSucceeded(2)),
		done(1, 20, 30, CAS("x", 0, "b"), CASFailed("a", 2)),
		done(1, 40, 50, Get("x"), GetFound("a", 2)),
	}},
	{"cas on an absent key with a version fails", []Op{
		done(0, 0, 10, CAS("x", 4, "a"), CASFailedAbsent()),
		done(0, 20, 30, Get("x"), GetNotFound()),
	}},
	{"racing cas: one wins, the other sees the winner", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(1, 20, 40, CAS("x", 1, "b"), CASFailed("c", 2)),
		done(2, 20, 40, CAS("x", 1, "c"), CASSucceeded(2)),
	}},
	{"cas learns the version of a value written with unknown outcome", []Op{
		lost(0, 0, Put("x", "a")),
		done(1, 10, 20, CAS("x", 1, "b"), CASFailed("a", 7)),
		done(1, 30, 40, CAS("x", 7, "b"), CASSucceeded(8)),
	}},
	{"delete, re-delete and re-create", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(3)),
		done(0, 20, 30, Delete("x"), DeleteOK(true)),
		done(0, 40, 50, Get("x"), GetNotFound()),
		done(0, 60, 70, Delete("x"), DeleteOK(false)),
		done(0, 80, 90, Put("x", "b"), PutOK(5)),
		done(0, 100, 110, Get("x"), GetFound("b", 5)),
	}},
	{"unknown put that took effect", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		lost(1, 20, Put("x", "b")),
		done(2, 30, 40, Get("x"), GetFound("b", 7)),
		done(2, 50, 60, Get("x"), GetFound("b", 7)),
	}},
	{"unknown put that did not take effect", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		lost(1, 20, Put("x", "b")),
		done(2, 30, 40, Get("x"), GetFound("a", 1)),
		done(2, 50, 60, Get("x"), GetFound("a", 1)),
	}},
	{"unknown put that took effect long after its client gave up", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		lost(1, 20, Put("x", "b")),
		done(1, 30, 40, Get("x"), GetFound("a", 1)),
		done(2, 500, 600, Get("x"), GetFound("b", 9)),
	}},
	{"unknown put lands after a later definite put", []Op{
		lost(0, 0, Put("x", "b")),
		done(1, 30, 40, Put("x", "c"), PutOK(9)),
		done(1, 50, 60, Get("x"), GetFound("c", 9)),
		done(1, 70, 80, Get("x"), GetFound("b", 12)),
	}},
	{"unknown cas that took effect", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		lost(1, 20, CAS("x", 1, "b")),
		done(2, 30, 40, Get("x"), GetFound("b", 5)),
	}},
	{"unknown cas that could have succeeded but did not", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		lost(1, 20, CAS("x", 1, "b")),
		done(2, 30, 40, Get("x"), GetFound("a", 1)),
	}},
	{"unknown cas whose expected version was never observed", []Op{
		lost(0, 0, Put("x", "a")),
		lost(1, 5, CAS("x", 7, "b")),
		done(2, 40, 50, Get("x"), GetFound("b", 9)),
	}},
	{"unknown cas that did not take effect on a key of unknown version", []Op{
		lost(0, 0, Put("x", "a")),
		lost(1, 5, CAS("x", 7, "b")),
		done(2, 40, 50, Get("x"), GetFound("a", 7)),
	}},
	{"unknown delete that took effect", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		lost(1, 20, Delete("x")),
		done(2, 30, 40, Get("x"), GetNotFound()),
		done(2, 50, 60, Put("x", "b"), PutOK(3)),
	}},
	{"unknown delete that did not take effect", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		lost(1, 20, Delete("x")),
		done(2, 30, 40, Get("x"), GetFound("a", 1)),
	}},
	{"pending operation counts as unknown", []Op{
		{ClientID: 1, Input: Put("x", "b"), Call: 5, Status: Pending},
		done(0, 10, 20, Get("x"), GetFound("b", 2)),
	}},
	{"dropped put is left out", []Op{
		{ClientID: 1, Input: Put("x", "zzz"), Call: 0, Status: Dropped},
		done(0, 10, 20, Get("x"), GetNotFound()),
	}},
	{"unknown read is left out", []Op{
		lost(0, 0, Get("x")),
		done(0, 10, 20, Get("x"), GetNotFound()),
	}},
}

var nonLinearizableHistories = []historyCase{
	{"a write allowed after a revoke returned", []Op{
		done(9, 0, 10, Revoke("x"), Output{}),
		done(0, 20, 30, Put("x", "a"), PutOK(1)),
	}},
	{"a denied write that took effect", []Op{
		done(9, 0, 10, Revoke("x"), Output{}),
		done(0, 20, 30, Put("x", "a"), Denied()),
		done(9, 40, 50, Grant("x"), Output{}),
		done(0, 60, 70, Get("x"), GetFound("a", 1)),
	}},
	{"a read denied while the key was allowed", []Op{
		done(0, 0, 10, Get("x"), Denied()),
	}},
	{"stale read", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(0, 20, 30, Put("x", "b"), PutOK(2)),
		done(1, 40, 50, Get("x"), GetFound("a", 1)),
	}},
	{"lost write", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(1, 20, 30, Get("x"), GetNotFound()),
	}},
	{"read of a value never written", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(1, 20, 30, Get("x"), GetFound("ghost", 1)),
	}},
	{"read of a value never written among unknown writes", []Op{
		lost(0, 0, Put("x", "a")),
		lost(1, 0, CAS("x", 0, "b")),
		done(2, 20, 30, Get("x"), GetFound("ghost", 3)),
	}},
	{"dropped put observed", []Op{
		{ClientID: 1, Input: Put("x", "zzz"), Call: 0, Status: Dropped},
		done(0, 10, 20, Get("x"), GetFound("zzz", 1)),
	}},
	{"reads go back in time during a concurrent put", []Op{
		done(0, 0, 5, Put("x", "a"), PutOK(1)),
		done(0, 10, 100, Put("x", "b"), PutOK(2)),
		done(1, 20, 30, Get("x"), GetFound("b", 2)),
		done(1, 35, 45, Get("x"), GetFound("a", 1)),
	}},
	{"version goes backwards", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		done(0, 20, 30, Put("x", "b"), PutOK(3)),
	}},
	{"version reused", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		done(0, 20, 30, Put("x", "b"), PutOK(5)),
	}},
	{"overlapping puts whose versions contradict the final read", []Op{
		done(0, 0, 50, Put("x", "a"), PutOK(4)),
		done(1, 10, 40, Put("x", "b"), PutOK(3)),
		done(2, 60, 70, Get("x"), GetFound("b", 3)),
	}},
	{"put returns version 0", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(0)),
	}},
	{"read reports a different version than the write", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		done(0, 20, 30, Get("x"), GetFound("a", 6)),
	}},
	{"cas succeeds on a stale version", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		done(0, 20, 30, CAS("x", 4, "b"), CASSucceeded(6)),
	}},
	{"cas fails although the version matched", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		done(0, 20, 30, CAS("x", 5, "b"), CASFailed("a", 5)),
	}},
	{"cas failure reports a wrong current value", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		done(0, 20, 30, CAS("x", 4, "b"), CASFailed("z", 5)),
	}},
	{"cas failure reports absent for an existing key", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		done(0, 20, 30, CAS("x", 4, "b"), CASFailedAbsent()),
	}},
	{"cas with expected 0 succeeds on an existing key", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		done(0, 20, 30, CAS("x", 0, "b"), CASSucceeded(6)),
	}},
	{"cas with expected 0 fails on an absent key", []Op{
		done(0, 20, 30, CAS("x", 0, "b"), CASFailedAbsent()),
	}},
	{"cas new version not above the expected one", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		done(0, 20, 30, CAS("x", 5, "b"), CASSucceeded(5)),
	}},
	{"both racing cas succeed", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(1, 20, 40, CAS("x", 1, "b"), CASSucceeded(3)),
		done(2, 20, 40, CAS("x", 1, "c"), CASSucceeded(2)),
	}},
	{"delete says absent for an existing key", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(0, 20, 30, Delete("x"), DeleteOK(false)),
	}},
	{"delete says existed for an absent key", []Op{
		done(0, 20, 30, Delete("x"), DeleteOK(true)),
	}},
	{"read after delete sees the value", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		done(0, 20, 30, Delete("x"), DeleteOK(true)),
		done(1, 40, 50, Get("x"), GetFound("a", 1)),
	}},
	{"re-created key's version not above the deleted one", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		done(0, 20, 30, Delete("x"), DeleteOK(true)),
		done(0, 40, 50, Put("x", "b"), PutOK(4)),
	}},
	{"definite put after an observed unknown put goes back in version", []Op{
		lost(0, 0, Put("x", "b")),
		done(1, 10, 20, Get("x"), GetFound("b", 8)),
		done(1, 30, 40, Put("x", "c"), PutOK(7)),
	}},
	{"unknown put seen, then unseen", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(1)),
		lost(1, 10, Put("x", "b")),
		done(2, 20, 30, Get("x"), GetFound("b", 3)),
		done(2, 40, 50, Get("x"), GetFound("a", 1)),
	}},
	{"unknown put seen at two versions", []Op{
		lost(0, 0, Put("x", "b")),
		done(1, 20, 30, Get("x"), GetFound("b", 3)),
		done(1, 40, 50, Get("x"), GetFound("b", 4)),
	}},
	{"unknown put seen at the version it overwrote", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		lost(1, 20, Put("x", "b")),
		done(2, 30, 40, Get("x"), GetFound("b", 5)),
	}},
	{"cas failure reports an unknown put at the version it overwrote", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		lost(1, 20, Put("x", "b")),
		done(2, 30, 40, CAS("x", 4, "c"), CASFailed("b", 5)),
	}},
	{"unknown put seen before it was called", []Op{
		done(1, 0, 10, Get("x"), GetFound("b", 3)),
		lost(0, 20, Put("x", "b")),
	}},
	{"unknown cas seen although its version never matched", []Op{
		done(0, 0, 10, Put("x", "a"), PutOK(5)),
		lost(1, 20, CAS("x", 4, "b")),
		done(2, 30, 40, Get("x"), GetFound("b", 7)),
	}},
	{"read of an absent key reports a value", []Op{
		done(0, 0, 10, Get("x"), GetFound("a", 1)),
	}},
}

func TestLinearizableHistoriesAccepted(t *testing.T) {
	for _, tc := range linearizableHistories {
		t.Run(tc.name, func(t *testing.T) {
			res := mustCheck(t, History{Ops: tc.ops}, 0)
			if res.Verdict != Linearizable || len(res.IllegalKeys) != 0 {
				t.Errorf("want linearizable, got %s", res.Summary())
			}
		})
	}
}

func TestNonLinearizableHistoriesRejected(t *testing.T) {
	for _, tc := range nonLinearizableHistories {
		t.Run(tc.name, func(t *testing.T) {
			res := mustCheck(t, History{Ops: tc.ops}, 0)
			if res.Verdict != NotLinearizable || !slices.Equal(res.IllegalKeys, []string{"x"}) {
				t.Errorf("want NOT linearizable on key x, got %s", res.Summary())
			}
		})
	}
}

// A violation on one key is reported against that key only, and a
// linearizable key next to it does not hide it.
func TestIllegalKeysNamesOnlyTheBadKey(t *testing.T) {
	ops := []Op{
		done(0, 0, 10, Put("good", "a"), PutOK(1)),
		done(0, 20, 30, Get("good"), GetFound("a", 1)),
		done(1, 0, 10, Put("bad", "a"), PutOK(2)),
		done(1, 20, 30, Get("bad"), GetNotFound()),
		done(2, 0, 10, Put("also-good", "z"), PutOK(3)),
	}
	res := mustCheck(t, History{Ops: ops}, 0)
	if res.Verdict != NotLinearizable || !slices.Equal(res.IllegalKeys, []string{"bad"}) {
		t.Fatalf("want NOT linearizable on key bad only, got %s", res.Summary())
	}
	if !strings.Contains(res.Summary(), "illegal keys: bad") {
		t.Errorf("summary does not name the bad key: %s", res.Summary())
	}
}

// The event form of a history partitions by key the same way.
func TestModelChecksEventHistories(t *testing.T) {
	events := func(ops []Op) []porcupine.Event {
		var evs []porcupine.Event
		for i, op := range ops {
			evs = append(evs, porcupine.Event{ClientId: op.ClientID, Kind: porcupine.CallEvent, Value: op.Input, Id: i})
		}
		for i, op := range ops {
			evs = append(evs, porcupine.Event{ClientId: op.ClientID, Kind: porcupine.ReturnEvent, Value: op.Output, Id: i})
		}
		return evs
	}
	// All calls before all returns: every operation is concurrent.
	concurrentOK := []Op{
		done(0, 0, 0, Put("x", "a"), PutOK(1)),
		done(1, 0, 0, Get("x"), GetFound("a", 1)),
		done(2, 0, 0, Put("y", "b"), PutOK(2)),
		done(3, 0, 0, Get("y"), GetNotFound()),
	}
	if !porcupine.CheckEvents(Model(), events(concurrentOK)) {
		t.Errorf("linearizable event history rejected")
	}
	concurrentBad := []Op{
		done(0, 0, 0, Put("x", "a"), PutOK(1)),
		done(1, 0, 0, Get("x"), GetFound("a", 2)),
		done(2, 0, 0, Put("y", "b"), PutOK(2)),
	}
	if porcupine.CheckEvents(Model(), events(concurrentBad)) {
		t.Errorf("non-linearizable event history accepted")
	}

	parts := partitionEvents(events(concurrentOK))
	if len(parts) != 2 {
		t.Fatalf("want 2 partitions (x, y), got %d", len(parts))
	}
	for _, part := range parts {
		if len(part) != 4 {
			t.Errorf("want two calls and two returns per key, got %d events", len(part))
		}
	}
}

func TestDescriptions(t *testing.T) {
	cases := []struct {
		in   Input
		out  Output
		want string
	}{
		{Put("k", "v"), PutOK(7), `put(k, "v") → v7`},
		{Get("k"), GetFound("v", 7), `get(k) → "v" @v7`},
		{Get("k"), GetNotFound(), `get(k) → not found`},
		{Delete("k"), DeleteOK(true), `delete(k) → existed`},
		{Delete("k"), DeleteOK(false), `delete(k) → was absent`},
		{CAS("k", 0, "v"), CASSucceeded(3), `cas(k, absent, "v") → ok v3`},
		{CAS("k", 2, "v"), CASFailed("w", 3), `cas(k, v2, "v") → failed: "w" @v3`},
		{CAS("k", 2, "v"), CASFailedAbsent(), `cas(k, v2, "v") → failed: absent`},
		{Put("k", "v"), UnknownOutcome(), `put(k, "v") → ? (outcome unknown)`},
	}
	for _, c := range cases {
		if got := DescribeOperation(c.in, c.out); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}

	states := []struct {
		s    keyState
		want string
	}{
		{keyState{}, "absent"},
		{keyState{Version: 4}, "absent (next version > v4)"},
		{keyState{Exists: true, Value: "v", Version: 4, Exact: true}, `"v" @v4`},
		{keyState{Exists: true, Value: "v", Version: 4}, `"v" @v? (> v4)`},
	}
	for _, c := range states {
		if got := c.s.String(); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
}

// Equal states must hash equally, or Porcupine's cache would miss.
func TestStateHashDistinguishesFields(t *testing.T) {
	base := keyState{Exists: true, Value: "v", Version: 4, Exact: true}
	if base.hash() != (keyState{Exists: true, Value: "v", Version: 4, Exact: true}).hash() {
		t.Errorf("equal states hash differently")
	}
	for _, other := range []keyState{
		{Exists: true, Value: "v", Version: 4},
		{Exists: true, Value: "w", Version: 4, Exact: true},
		{Exists: true, Value: "v", Version: 5, Exact: true},
		{Value: "v", Version: 4, Exact: true},
	} {
		if base.hash() == other.hash() {
			t.Errorf("%+v hashes like %+v", other, base)
		}
	}
}

// mustCheck checks h, failing the test if the history is malformed.
func mustCheck(t interface{ Fatalf(string, ...any) }, h History, timeout time.Duration) Result {
	res := Check(h, timeout)
	if res.Verdict == Malformed {
		t.Fatalf("%s", res.Summary())
	}
	return res
}

func TestMalformedHistoriesRefused(t *testing.T) {
	for name, op := range map[string]Op{
		"return before call":   done(0, 10, 5, Put("x", "a"), PutOK(1)),
		"resolved before call": {Input: Put("x", "a"), Output: PutOK(1), Call: 10, Return: 5, Status: Resolved},
		"unknown kind":         {Input: Input{Kind: 0, Key: "x"}, Status: Pending},
		"unknown status":       {Input: Get("x"), Status: Dropped + 1},
	} {
		res := Check(History{Ops: []Op{op}}, 0)
		if res.Verdict != Malformed || res.Err == nil {
			t.Errorf("%s: verdict %v", name, res.Verdict)
		}
		if !strings.HasPrefix(res.Summary(), "malformed history: ") {
			t.Errorf("%s: summary %q", name, res.Summary())
		}
		if err := res.WriteVisualization(filepath.Join(t.TempDir(), "v.html")); err == nil {
			t.Errorf("%s: visualization of a malformed history written", name)
		}
	}
	// A return before the call is fine when the outcome is unknown: the
	// return time is then not used.
	stray := History{Ops: []Op{{Input: Put("x", "a"), Output: UnknownOutcome(), Call: 10, Return: 5, Status: Returned}}}
	if res := Check(stray, 0); res.Verdict != Linearizable {
		t.Errorf("unknown outcome with a stray return time: %s", res.Summary())
	}
}
