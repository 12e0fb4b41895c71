package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// KeyVal's Go client watches through etcd's Watch service: every change
// under a prefix, once and in order, also after the member serving the
// watch stops and the watch goes on at another; other keys' changes are
// left out.
func TestClientWatchResumesOnAnotherMember(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	cl, err := client.New(client.Config{Endpoints: c.endpoints(), DialTimeout: time.Second})
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	first, err := cl.Put(ctx, []byte("w/0"), []byte("v0"))
	require.NoError(t, err)
	events := cl.Watch(ctx, []byte("w/"), client.PrefixEnd([]byte("w/")), first.Version)
	want := map[uint64]string{first.Version: "w/0=v0"}
	put := func(i int) {
		r, err := cl.Put(ctx, []byte(fmt.Sprintf("w/%d", i)), []byte(fmt.Sprintf("v%d", i)))
		require.NoError(t, err)
		want[r.Version] = fmt.Sprintf("w/%d=v%d", i, i)
		_, err = cl.Put(ctx, []byte("other"), []byte("x"))
		require.NoError(t, err)
	}
	var got []string
	var last uint64
	receive := func(n int) {
		for len(got) < n {
			select {
			case resp, ok := <-events:
				require.True(t, ok, "the watch ended")
				require.NoError(t, resp.Err)
				for _, ev := range resp.Events {
					require.Greater(t, ev.Revision, last, "in revision order, none twice")
					last = ev.Revision
					require.Equal(t, want[ev.Revision], string(ev.Key)+"="+string(ev.Value), "revision %d", ev.Revision)
					got = append(got, string(ev.Key))
				}
			case <-ctx.Done():
				t.Fatalf("%d of %d events after %v", len(got), n, got)
			}
		}
	}
	for i := 1; i <= 5; i++ {
		put(i)
	}
	receive(6)
	// Stop every member in turn: whichever serves the watch goes.
	for _, id := range []core.NodeID{1, 2, 3} {
		c.stop(id)
		put(10 + int(id))
		c.start(id)
		// Back in the quorum before the next one stops.
		eventually(t, func() error {
			_, err := c.conns[id].Get(ctx, &apipb.GetRequest{Key: []byte("w/0")})
			return err
		})
	}
	put(20)
	receive(10)
	require.Len(t, got, 10)
}
