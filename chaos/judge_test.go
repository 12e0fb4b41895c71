package chaos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// history builds what the workers and the final reader would record: each
// call is (client, input, output or nil for unknown, call, return).
type histBuilder struct {
	t      *testing.T
	rec    *lin.Recorder
	writes []Write
}

func newHist(t *testing.T) *histBuilder { return &histBuilder{t: t, rec: lin.NewRecorder()} }

func (b *histBuilder) put(client int, key, value string, version uint64, call, ret int64) {
	id := b.rec.Call(client, lin.Put(key, value), call)
	require.NoError(b.t, b.rec.Return(id, lin.PutOK(version), ret))
	b.writes = append(b.writes, Write{Op: id, Kind: lin.OpPut, Key: key, Value: value, Acked: true, Version: version})
}

func (b *histBuilder) unknownPut(client int, key, value string, call int64) {
	id := b.rec.Call(client, lin.Put(key, value), call)
	require.NoError(b.t, b.rec.Unknown(id))
	b.writes = append(b.writes, Write{Op: id, Kind: lin.OpPut, Key: key, Value: value})
}

func (b *histBuilder) del(client int, key string, existed bool, revision uint64, call, ret int64) {
	id := b.rec.Call(client, lin.Delete(key), call)
	require.NoError(b.t, b.rec.Return(id, lin.DeleteOK(existed), ret))
	b.writes = append(b.writes, Write{Op: id, Kind: lin.OpDelete, Key: key, Acked: true, Existed: existed, Version: revision})
}

func (b *histBuilder) unknownDel(client int, key string, call int64) {
	id := b.rec.Call(client, lin.Delete(key), call)
	require.NoError(b.t, b.rec.Unknown(id))
	b.writes = append(b.writes, Write{Op: id, Kind: lin.OpDelete, Key: key})
}

func (b *histBuilder) casOK(client int, key string, expect uint64, value string, version uint64, call, ret int64) {
	id := b.rec.Call(client, lin.CAS(key, expect, value), call)
	require.NoError(b.t, b.rec.Return(id, lin.CASSucceeded(version), ret))
	b.writes = append(b.writes, Write{Op: id, Kind: lin.OpCAS, Key: key, Value: value, Acked: true, Succeeded: true, Version: version})
}

func (b *histBuilder) get(client int, key string, out lin.Output, call, ret int64) {
	id := b.rec.Call(client, lin.Get(key), call)
	require.NoError(b.t, b.rec.Return(id, out, ret))
}

// final records the final reads, as the run does, and returns the state.
func (b *histBuilder) final(at int64, revision uint64, keys map[string]KeyState) FinalState {
	for k, s := range keys {
		out := lin.GetNotFound()
		if s.Found {
			out = lin.GetFound(s.Value, s.Version)
		}
		b.get(finalReader, k, out, at, at+1)
	}
	return FinalState{Keys: keys, Revision: revision}
}

func judge(b *histBuilder, final FinalState) Verdicts {
	return Judge(b.rec.History(), b.writes, final, nil, time.Minute)
}

func TestJudgePassesAGoodRun(t *testing.T) {
	b := newHist(t)
	b.put(1, "k0", "a", 1, 10, 20)
	b.put(2, "k0", "b", 2, 15, 30) // overwrites a
	b.put(1, "k1", "c", 3, 40, 50)
	b.del(2, "k1", true, 4, 60, 70) // deletes c
	b.casOK(1, "k2", 0, "d", 5, 80, 90)
	b.get(3, "k0", lin.GetFound("b", 2), 95, 99)
	b.put(1, "k3", "e", 6, 100, 110)
	b.unknownDel(2, "k3", 120) // may have deleted e: k3 absent is fine
	b.unknownPut(2, "k4", "f", 130)
	final := b.final(1000, 7, map[string]KeyState{
		"k0": {Found: true, Value: "b", Version: 2},
		"k1": {},
		"k2": {Found: true, Value: "d", Version: 5},
		"k3": {},
		"k4": {Found: true, Value: "f", Version: 7}, // the unknown put did happen
	})
	v := judge(b, final)
	require.Equal(t, lin.Linearizable, v.Lin.Verdict, v.Lin.Summary())
	require.Empty(t, v.Lost)
	require.Equal(t, 6, v.AckedChanges)
}

// A write acknowledged and then gone (the key back at the value before it)
// is found by both checks.
func TestJudgeFindsAPlantedLostWrite(t *testing.T) {
	b := newHist(t)
	b.put(1, "k0", "a", 1, 10, 20)
	b.put(1, "k0", "b", 2, 30, 40) // acknowledged...
	b.put(2, "k1", "x", 3, 50, 60)
	final := b.final(1000, 3, map[string]KeyState{
		"k0": {Found: true, Value: "a", Version: 1}, // ...but lost
		"k1": {Found: true, Value: "x", Version: 3},
	})
	v := judge(b, final)
	require.Equal(t, lin.NotLinearizable, v.Lin.Verdict)
	require.Equal(t, []string{"k0"}, v.Lin.IllegalKeys)
	require.Len(t, v.Lost, 1)
	require.Equal(t, "b", v.Lost[0].Write.Value)
	require.Contains(t, v.Lost[0].Why, "went back to v1")
}

func TestJudgeFindsAStaleRead(t *testing.T) {
	b := newHist(t)
	b.put(1, "k0", "a", 1, 10, 20)
	b.put(1, "k0", "b", 2, 30, 40)
	b.get(101, "k0", lin.GetFound("a", 1), 50, 60) // a paused old leader answering from its past
	final := b.final(1000, 2, map[string]KeyState{"k0": {Found: true, Value: "b", Version: 2}})
	v := judge(b, final)
	require.Equal(t, lin.NotLinearizable, v.Lin.Verdict)
	require.Empty(t, v.Lost, "nothing was lost, only read stale")
}

func TestCheckDurability(t *testing.T) {
	put := func(op int, key, value string, v uint64) Write {
		return Write{Op: lin.OpID(op), Kind: lin.OpPut, Key: key, Value: value, Acked: true, Version: v}
	}
	del := func(op int, key string, existed bool, rev uint64) Write {
		return Write{Op: lin.OpID(op), Kind: lin.OpDelete, Key: key, Acked: true, Existed: existed, Version: rev}
	}
	found := func(value string, v uint64) KeyState { return KeyState{Found: true, Value: value, Version: v} }
	absent := KeyState{}
	cases := []struct {
		name   string
		writes []Write
		final  FinalState
		lost   []string // the Why of each loss, in op order
	}{
		{"present", []Write{put(1, "k", "a", 5)}, FinalState{map[string]KeyState{"k": found("a", 5)}, 5}, nil},
		{"overwritten", []Write{put(1, "k", "a", 5)}, FinalState{map[string]KeyState{"k": found("b", 8)}, 8}, nil},
		{"went back", []Write{put(1, "k", "a", 5)}, FinalState{map[string]KeyState{"k": found("z", 3)}, 5},
			[]string{"key k went back to v3 (\"z\")"}},
		{"other value at its version", []Write{put(1, "k", "a", 5)}, FinalState{map[string]KeyState{"k": found("z", 5)}, 5},
			[]string{"key k is at v5 with \"z\" instead"}},
		{"deleted later", []Write{put(1, "k", "a", 5), del(2, "k", true, 6)}, FinalState{map[string]KeyState{"k": absent}, 6}, nil},
		{"absent, the only delete before it", []Write{del(1, "k", true, 4), put(2, "k", "a", 5)}, FinalState{map[string]KeyState{"k": absent}, 5},
			[]string{"key k is absent, and no delete of it came after this write"}},
		{"absent, a delete that found nothing", []Write{put(1, "k", "a", 5), del(2, "k", false, 5)}, FinalState{map[string]KeyState{"k": absent}, 5},
			[]string{"key k is absent, and no delete of it came after this write"}},
		{"absent, an unknown delete", []Write{put(1, "k", "a", 5), {Op: 2, Kind: lin.OpDelete, Key: "k"}}, FinalState{map[string]KeyState{"k": absent}, 6}, nil},
		{"deleted key came back", []Write{put(1, "k", "a", 5), del(2, "k", true, 6)}, FinalState{map[string]KeyState{"k": found("a", 5)}, 6},
			[]string{"key k is back at v5 (\"a\"), older than this delete"}},
		{"revision reused", []Write{put(1, "k", "a", 5), put(2, "j", "b", 5)}, FinalState{map[string]KeyState{"k": found("a", 5), "j": found("b", 5)}, 5},
			[]string{"2 acknowledged writes were all given revision 5", "2 acknowledged writes were all given revision 5"}},
		{"store revision went back", []Write{put(1, "k", "a", 5), put(2, "j", "b", 9)}, FinalState{map[string]KeyState{"k": found("a", 5), "j": found("c", 12)}, 7},
			[]string{"the final store revision is 7, below this acknowledged write's"}},
		{"unknown and failed writes prove nothing", []Write{{Op: 1, Kind: lin.OpPut, Key: "k", Value: "a"},
			{Op: 2, Kind: lin.OpCAS, Key: "k", Value: "b", Acked: true, Version: 3}}, FinalState{map[string]KeyState{"k": absent}, 3}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, l := range CheckDurability(tc.writes, tc.final) {
				got = append(got, l.Why)
			}
			require.Equal(t, tc.lost, got)
		})
	}
}

func TestCheckReplicas(t *testing.T) {
	final := FinalState{Keys: map[string]KeyState{"k0": {Found: true, Value: "a", Version: 3}, "k1": {}}}
	same := map[string]KeyState{"k0": {Found: true, Value: "a", Version: 3}, "k1": {}}
	behind := map[string]KeyState{"k0": {Found: true, Value: "z", Version: 2}, "k1": {}}
	require.Empty(t, CheckReplicas(final, []map[string]KeyState{same, same}))
	d := CheckReplicas(final, []map[string]KeyState{same, behind})
	require.Len(t, d, 1)
	require.Equal(t, `n2 holds k0 as "z" @v2, the cluster answers "a" @v3`, d[0].String())
	// A member with no local reads differs on every key that exists.
	require.Len(t, CheckReplicas(final, []map[string]KeyState{same, {}}), 1)
}
