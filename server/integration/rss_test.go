//go:build integration

package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// TestPipelineThatIsNotReadCannotGrowRSS: a client that sends 1,000
// pipelined Gets of a 1 MiB value and never reads a reply cannot raise the
// member's resident memory above its baseline + 2 × --max-pipeline-reply-bytes
// + 32 MiB: the member holds the stream back instead (before the budget,
// such a client took a member from 28 to 742 MB). The factor 2 is the
// garbage collector's (a heap may reach twice what is live before it
// runs); the 32 MiB are what flow control lets out of the queue into
// gRPC's buffers (a stream window of at most 16 MiB) and the reply being
// encoded.
func TestPipelineThatIsNotReadCannotGrowRSS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads VmRSS from /proc")
	}
	const valueBytes, gets, perMessage = 1 << 20, 1000, 100
	const budget = 64 << 20 // --max-pipeline-reply-bytes, its default
	c := newCluster(t, 1, 0, "--max-pipeline-reply-bytes", strconv.Itoa(budget))
	m := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := m.kv.Put(ctx, &apipb.PutRequest{Key: []byte("big"), Value: make([]byte, valueBytes)})
	require.NoError(t, err)
	// One Get first: the baseline includes what serving the value costs.
	g, err := m.kv.Get(ctx, &apipb.GetRequest{Key: []byte("big")})
	require.NoError(t, err)
	require.Len(t, g.Value, valueBytes)
	pid := m.cmd.Process.Pid
	baseline := vmRSS(t, pid)
	bound := baseline + 2*budget + 32<<20

	stream, err := m.kv.Pipeline(ctx)
	require.NoError(t, err)
	sent := make(chan error, 1)
	go func() {
		for n := 0; n < gets; n += perMessage {
			req := &apipb.PipelineRequest{}
			for i := range perMessage {
				req.Calls = append(req.Calls, &apipb.Call{Id: uint64(n + i + 1),
					Op: &apipb.Call_Get{Get: &apipb.GetRequest{Key: []byte("big")}}})
			}
			if err := stream.Send(req); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()

	// Watch the member until it says it holds the stream back, then for a
	// while longer: its memory must stay under the bound all along.
	highest := baseline
	var heldSince time.Time
	deadline := time.Now().Add(60 * time.Second)
	for heldSince.IsZero() || time.Since(heldSince) < 3*time.Second {
		rss := vmRSS(t, pid)
		highest = max(highest, rss)
		require.Less(t, rss, bound, "the member's RSS: %d MiB over a baseline of %d MiB, bound %d MiB",
			(rss-baseline)>>20, baseline>>20, bound>>20)
		if heldSince.IsZero() && scrape(t, m)["keyval_pipeline_streams_held"] == 1 {
			heldSince = time.Now()
		}
		require.True(t, time.Now().Before(deadline), "the stream was not held back within 60s (RSS %d MiB, baseline %d MiB)",
			rss>>20, baseline>>20)
		time.Sleep(20 * time.Millisecond) // sampling interval
	}
	t.Logf("RSS: baseline %d MiB, highest %d MiB while the stream was held, bound %d MiB",
		baseline>>20, highest>>20, bound>>20)
	require.NoError(t, <-sent, "the Gets fit in the stream's window")

	// The member still serves everyone else.
	_, err = m.kv.Put(ctx, &apipb.PutRequest{Key: []byte("other"), Value: []byte("x")})
	require.NoError(t, err)
}

// vmRSS is the resident memory of process pid, in bytes.
func vmRSS(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			require.NoError(t, err, "VmRSS line %q", sc.Text())
			return kb << 10
		}
	}
	require.NoError(t, sc.Err())
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
