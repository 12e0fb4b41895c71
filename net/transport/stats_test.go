package transport

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// TestByteCounters: the bytes one side counts as sent to a peer are the
// bytes the peer counts as received from it, messages and snapshot data
// alike, and they cover at least the entry data carried.
func TestByteCounters(t *testing.T) {
	nodes := cluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	const n, size = 300, 100
	for seq := uint64(0); seq < n; seq++ {
		a.tr.Send([]core.Message{app(1, 2, seq, size)})
	}
	for range n {
		b.h.next(t)
	}
	eventually(t, "byte counters to agree", func() bool {
		sent, recvd := a.tr.Stats()[2], b.tr.Stats()[1]
		return recvd.Received == n && sent.SentBytes == recvd.ReceivedBytes
	})
	before := a.tr.Stats()[2].SentBytes
	if before < n*size {
		t.Fatalf("counted %d bytes sent for %d entries of %d bytes", before, n, size)
	}

	data := bytes.Repeat([]byte{7}, 3<<20)
	a.tr.SendSnapshot(snapMsg(1, 2), &closeRecorder{Reader: bytes.NewReader(data)})
	if rep := a.h.waitSnapshotReport(t); !rep.ok {
		t.Fatalf("snapshot refused: %+v", rep)
	}
	sent, recvd := a.tr.Stats()[2], b.tr.Stats()[1]
	if got := sent.SentBytes - before; got != uint64(len(data)) {
		t.Errorf("snapshot added %d bytes sent; it has %d", got, len(data))
	}
	if sent.SentBytes != recvd.ReceivedBytes {
		t.Errorf("sender counted %d bytes, receiver %d", sent.SentBytes, recvd.ReceivedBytes)
	}
}

// TestOversizedMessageLoggedOnce: a message over MaxMessageBytes, which
// Raft would resend again and again, is dropped every time but logged once.
func TestOversizedMessageLoggedOnce(t *testing.T) {
	var logs syncBuffer
	nodes := cluster(t, 2, func(c *Config) {
		c.MaxMessageBytes, c.MaxBatchBytes, c.SnapshotChunkBytes = 64<<10, 32<<10, 32<<10
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	a := nodes[0]
	for seq := range uint64(20) {
		a.tr.Send([]core.Message{app(1, 2, seq, 100<<10)})
	}
	if got := a.tr.Stats()[2].Dropped; got != 20 {
		t.Fatalf("%d of 20 oversized messages dropped", got)
	}
	if n := strings.Count(logs.String(), "larger than MaxMessageBytes"); n != 1 {
		t.Fatalf("%d log lines for 20 oversized messages:\n%s", n, logs.String())
	}
}
