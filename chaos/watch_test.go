package chaos

import (
	"testing"

	"github.com/stretchr/testify/require"

	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// The watch judge passes a watch that saw every change in order, and
// names each way one can be wrong.
func TestCheckWatch(t *testing.T) {
	writes := []Write{
		{Op: 1, Kind: lin.OpPut, Key: "k1", Value: "a", Acked: true, Version: 2},
		{Op: 2, Kind: lin.OpPut, Key: "k2", Value: "b", Acked: true, Version: 3},
		{Op: 3, Kind: lin.OpDelete, Key: "k1", Acked: true, Existed: true, Version: 4},
		{Op: 4, Kind: lin.OpPut, Key: "k2", Value: "c"}, // outcome unknown
		{Op: 5, Kind: lin.OpCAS, Key: "k1", Value: "d", Acked: true, Succeeded: false, Version: 0},
	}
	good := []WatchEvent{
		{Revision: 2, Key: "k1", Value: "a"},
		{Revision: 3, Key: "k2", Value: "b"},
		{Revision: 4, Key: "k1", Delete: true},
		{Revision: 5, Key: "k2", Value: "c"},
	}
	require.Empty(t, CheckWatch(good, writes, 5))
	require.Empty(t, CheckWatch(good[:3], writes, 4), "the unknown write need not appear")

	cases := map[string][]WatchEvent{
		"missing":    {good[0], good[2], good[3]},
		"duplicated": {good[0], good[1], good[1], good[2]},
		"reordered":  {good[1], good[0], good[2]},
		"wrong rev":  {good[0], {Revision: 4, Key: "k2", Value: "b"}, good[2]},
		"unwritten":  {good[0], good[1], good[2], {Revision: 5, Key: "k2", Value: "zz"}},
		"failed cas": {good[0], good[1], good[2], {Revision: 5, Key: "k1", Value: "d"}},
	}
	for name, evs := range cases {
		require.NotEmpty(t, CheckWatch(evs, writes, 4), name)
	}
}

// The fencing judge passes tokens that never go down in revision order
// and names a stale holder's write.
func TestCheckFencing(t *testing.T) {
	good := []FencedWrite{{1, 5, 6}, {1, 5, 7}, {2, 9, 10}, {2, 9, 12}}
	require.Empty(t, CheckFencing(good))
	stale := append(good, FencedWrite{Locker: 1, Token: 5, Revision: 11})
	require.Len(t, CheckFencing(stale), 1)
	require.Contains(t, CheckFencing(stale)[0], "a stale holder wrote")
	require.NotEmpty(t, CheckFencing(append(good, FencedWrite{Locker: 3, Token: 9, Revision: 12})), "one revision twice")
}
