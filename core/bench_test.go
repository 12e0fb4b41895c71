package core

import (
	"fmt"
	"testing"
)

// benchCluster is a bare driver for measuring the core alone: no storage,
// no checker, instant delivery. It is what a real runtime pays in core CPU
// time per committed entry.
type benchCluster struct {
	nodes []*Node
	queue []Message
}

func newBenchCluster(b *testing.B, size int) *benchCluster {
	c := &benchCluster{}
	ids := peers(size)
	for _, id := range ids {
		n, err := NewNode(Config{ID: id, Peers: ids, Seed: 1}, PersistentState{})
		if err != nil {
			b.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	c.nodes[0].r.campaign(false, false)
	c.pump(b)
	if c.nodes[0].Status().Role != Leader {
		b.Fatal("node 1 did not become leader")
	}
	return c
}

func (c *benchCluster) pump(b *testing.B) {
	for {
		for _, n := range c.nodes {
			if !n.HasReady() {
				continue
			}
			rd := n.Ready()
			c.queue = append(c.queue, rd.Messages...)
			c.queue = append(c.queue, rd.MessagesAfterPersist...)
			n.Advance(rd)
		}
		if len(c.queue) == 0 {
			return
		}
		q := c.queue
		c.queue = nil
		for _, m := range q {
			if err := c.nodes[m.To-1].Step(m); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkCommit measures a 3-node cluster proposing entries in batches and
// committing and applying them on every node. entries/s is the figure for
// docs/core.md.
func BenchmarkCommit(b *testing.B) {
	for _, batch := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			c := newBenchCluster(b, 3)
			lead := c.nodes[0]
			data := make([]byte, 128)
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; {
				var last uint64
				for k := 0; k < batch && done < b.N; k++ {
					idx, _, err := lead.Propose(data)
					if err != nil {
						b.Fatal(err)
					}
					last = idx
					done++
				}
				c.pump(b)
				if lead.Status().Applied < last {
					b.Fatalf("entry %d not applied", last)
				}
				if last%8192 < uint64(batch) {
					for _, n := range c.nodes {
						if _, err := n.SnapshotTaken(n.Status().Applied); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
