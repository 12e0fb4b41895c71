package linearizability

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func put(key, value string) RevWrite { return RevWrite{Key: key, Value: value} }

// txn is a transaction without compares that wrote its Then branch.
func txn(client int, call, ret, rev int64, writes ...RevWrite) RevOp {
	return RevOp{Client: client, Kind: RevTxn, Call: call, Return: ret, Then: writes, Succeeded: true, Revision: rev}
}

func read(client int, call, ret, rev int64, kvs ...RevKV) RevOp {
	return RevOp{Client: client, Kind: RevRange, Key: "a", End: "z", Call: call, Return: ret, Revision: rev, KVs: kvs}
}

// good is a linearizable history: two overlapping writes, a multi-key
// transaction with a compare, reads at the latest and at a past revision,
// and a revision the store used for its own records (3).
func good() []RevOp {
	casA := RevOp{Client: 2, Kind: RevTxn, Call: 40, Return: 50, Revision: 4, Succeeded: true,
		Compares: []RevCompare{{Key: "a", ByValue: true, Value: "1"}, {Key: "b", ModRevision: 2}},
		Then:     []RevWrite{put("a", "3"), {Key: "b", Delete: true}}, Else: []RevWrite{put("x", "never")}}
	return []RevOp{
		txn(1, 0, 10, 1, put("a", "1")),
		txn(2, 5, 20, 2, put("b", "2")),
		read(3, 25, 30, 2, RevKV{"a", "1", 1}, RevKV{"b", "2", 2}),
		casA,
		{Client: 1, Kind: RevRange, Key: "a", End: "z", At: 1, Call: 60, Return: 70, Revision: 4, KVs: []RevKV{{"a", "1", 1}}},
		read(3, 60, 70, 4, RevKV{"a", "3", 4}),
		{Client: 4, Kind: RevTxn, Call: 60, Return: 65, Revision: 4, Succeeded: false,
			Compares: []RevCompare{{Key: "b", ByValue: true, Value: "2"}}},
		{Client: 5, Kind: RevTxn, Call: 1, Unknown: true, Then: []RevWrite{put("a", "lost")}, Succeeded: true},
	}
}

func TestCheckRevisionsAcceptsLinearizable(t *testing.T) {
	require.NoError(t, CheckRevisions(good()))
}

// Each case breaks good() in one way a buggy store could.
func TestCheckRevisionsFindsViolations(t *testing.T) {
	cases := map[string]func(h []RevOp){
		"stale read": func(h []RevOp) {
			// Begins after the transaction at 4 finished, reads at 2.
			h[5] = read(3, 60, 70, 2, RevKV{"a", "1", 1}, RevKV{"b", "2", 2})
		},
		"read of a value never written": func(h []RevOp) { h[2].KVs[0].Value = "9" },
		"lost write": func(h []RevOp) {
			h[2] = read(3, 25, 30, 2, RevKV{"a", "1", 1})
		},
		"wrong branch": func(h []RevOp) {
			h[3].Compares[0].Value = "2"
		},
		"read-only txn on the wrong branch": func(h []RevOp) { h[6].Succeeded = true },
		"two writes at one revision":        func(h []RevOp) { h[1].Revision = 1 },
		"write ordered before one that finished before it began": func(h []RevOp) {
			h[0].Revision, h[1].Revision = 2, 1
			h[1].Call = 15 // after write 0 returned at 10
			h[2] = read(3, 25, 30, 2, RevKV{"a", "1", 2}, RevKV{"b", "2", 1})
		},
		"read at a past revision sees later writes": func(h []RevOp) {
			h[4].KVs = []RevKV{{"a", "1", 1}, {"b", "2", 2}}
		},
		"read sees a write that began after it finished": func(h []RevOp) {
			h[2].Return = 4 // before write 2 was called at 5
			h[2].Call = 3
		},
	}
	for name, breakIt := range cases {
		t.Run(name, func(t *testing.T) {
			h := good()
			breakIt(h)
			require.Error(t, CheckRevisions(h))
		})
	}
}

func TestRevSummary(t *testing.T) {
	h := good()
	require.Equal(t, "linearizable by revision: 8 ops (3 writing txns, 1 txns writing nothing, 2 reads, 1 reads at a past revision, 1 unknown left out)",
		RevSummary(h, CheckRevisions(h)))
}
