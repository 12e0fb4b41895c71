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
