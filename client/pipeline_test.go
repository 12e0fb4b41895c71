package client

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
)

// A member without Pipeline (an older server) is used with unary calls,
// from the first call on, with no error reaching the caller.
func TestServerWithoutPipelineGetsUnaryCalls(t *testing.T) {
	store, nodes := startCluster(t, 1)
	nodes[0].UnaryOnly()
	c := newClient(t, Config{Endpoints: addrs(nodes...)})
	ctx := context.Background()
	for range 3 {
		_, err := c.Put(ctx, []byte("k"), []byte("v"))
		require.NoError(t, err)
	}
	got, err := c.Get(ctx, []byte("k"))
	require.NoError(t, err)
	assert.Equal(t, "v", string(got.Value))
	assert.Equal(t, 3, store.Applied())
	checkSessionRules(t, store)
}

// Both paths answer alike, refusals included.
func TestUnaryAndPipelinedCallsAnswerAlike(t *testing.T) {
	type answers struct {
		put1, put2 PutResult
		get        GetResult
		cas        CASResult
		del        DeleteResult
		badCode    codes.Code
	}
	run := func(unary bool) answers {
		_, nodes := startCluster(t, 1)
		c, err := New(Config{Endpoints: addrs(nodes...), Unary: unary})
		require.NoError(t, err)
		defer c.Close()
		ctx := context.Background()
		var a answers
		a.put1, err = c.Put(ctx, []byte("k"), []byte("v1"))
		require.NoError(t, err)
		a.put2, err = c.Put(ctx, []byte("k"), []byte("v2"))
		require.NoError(t, err)
		a.get, err = c.Get(ctx, []byte("k"))
		require.NoError(t, err)
		a.cas, err = c.CompareAndSwap(ctx, []byte("k"), 1, []byte("v3"))
		require.NoError(t, err)
		a.del, err = c.Delete(ctx, []byte("k"))
		require.NoError(t, err)
		_, err = c.Put(ctx, nil, []byte("v"))
		var se *StatusError
		require.ErrorAs(t, err, &se)
		a.badCode = se.Code
		return a
	}
	unary, piped := run(true), run(false)
	assert.Equal(t, unary, piped)
	assert.False(t, piped.cas.Succeeded, "version 1 is stale after the second put")
	assert.Equal(t, codes.InvalidArgument, piped.badCode)
}
