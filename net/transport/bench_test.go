package transport

import (
	"bytes"
	"io"
	"testing"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// benchHandler counts deliveries by releasing a window slot per message.
type benchHandler struct {
	recorder
	window chan struct{}
}

func (h *benchHandler) Step(core.Message) { <-h.window }

// BenchmarkStream measures one stream over loopback: node 1 sends appends to
// node 2 as fast as node 2 takes them, with at most `window` messages
// outstanding so that nothing is dropped. One op is one message.
func BenchmarkStream(b *testing.B) {
	cases := []struct {
		name    string
		entries int
		size    int
	}{
		{"append-1x256B", 1, 256},
		{"append-64x256B", 64, 256},
		{"heartbeat", 0, 0},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			const window = 1024
			lis1, lis2 := listen(b), listen(b)
			peers := map[core.NodeID]string{1: lis1.Addr().String(), 2: lis2.Addr().String()}
			h2 := &benchHandler{recorder: *newRecorder(), window: make(chan struct{}, window)}
			tr2, err := New(testConfig(2, peers), h2)
			if err != nil {
				b.Fatal(err)
			}
			go func() { _ = tr2.Serve(lis2) }()
			defer tr2.Close()
			a := startNode(b, testConfig(1, peers), newRecorder(), lis1)

			m := core.Message{Type: core.MsgHeartbeat, From: 1, To: 2, Term: 3, Commit: 100}
			if c.entries > 0 {
				m = core.Message{Type: core.MsgApp, From: 1, To: 2, Term: 3, Index: 100, LogTerm: 3, Commit: 90}
				for i := range c.entries {
					m.Entries = append(m.Entries, core.Entry{Term: 3, Index: uint64(101 + i), Data: make([]byte, c.size)})
				}
			}
			msgs := []core.Message{m}
			b.SetBytes(int64(c.entries * c.size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h2.window <- struct{}{}
				msgs[0].Index = uint64(i)
				a.tr.Send(msgs)
			}
			for range window { // wait until every message has been taken
				h2.window <- struct{}{}
			}
			b.StopTimer()
			st := a.tr.Stats()[2]
			if st.Dropped != 0 {
				b.Fatalf("%d messages dropped", st.Dropped)
			}
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/secs, "msgs/s")
			if c.entries > 0 {
				b.ReportMetric(float64(b.N*c.entries)/secs, "entries/s")
			}
			b.ReportMetric(float64(st.Sent)/float64(max(st.SentBatches, 1)), "msgs/batch")
		})
	}
}

// BenchmarkSnapshot measures streaming a 16 MiB snapshot over loopback in
// the default 1 MiB chunks, checksummed on both sides.
func BenchmarkSnapshot(b *testing.B) {
	nodes := cluster(b, 2, nil)
	data := randomBytes(16<<20, 3)
	nodes[1].h.onSnapshot = func(_ core.Message, r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		nodes[0].tr.SendSnapshot(snapMsg(1, 2), io.NopCloser(bytes.NewReader(data)))
		if rep := nodes[0].h.waitSnapshotReport(b); !rep.ok {
			b.Fatal("snapshot failed")
		}
	}
}

// echoHandler answers every heartbeat with a heartbeat response.
type echoHandler struct {
	recorder
	tr   *Transport
	back chan struct{}
}

func (h *echoHandler) Step(m core.Message) {
	switch m.Type {
	case core.MsgHeartbeat:
		h.tr.Send([]core.Message{{Type: core.MsgHeartbeatResp, From: m.To, To: m.From, Term: m.Term}})
	case core.MsgHeartbeatResp:
		h.back <- struct{}{}
	}
}

// BenchmarkRoundTrip measures the latency of one message there and one
// back over established streams, with nothing else in flight: the floor
// under a replication round trip. One op is one round trip.
func BenchmarkRoundTrip(b *testing.B) {
	lis1, lis2 := listen(b), listen(b)
	peers := map[core.NodeID]string{1: lis1.Addr().String(), 2: lis2.Addr().String()}
	var trs [2]*Transport
	back := make(chan struct{}, 1)
	for i := range trs {
		h := &echoHandler{recorder: *newRecorder(), back: back}
		tr, err := New(testConfig(core.NodeID(i+1), peers), h)
		if err != nil {
			b.Fatal(err)
		}
		h.tr = tr
		trs[i] = tr
		defer tr.Close()
	}
	go func() { _ = trs[0].Serve(lis1) }()
	go func() { _ = trs[1].Serve(lis2) }()
	hb := []core.Message{{Type: core.MsgHeartbeat, From: 1, To: 2, Term: 1}}
	trs[0].Send(hb) // establish both streams before timing
	<-back
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		trs[0].Send(hb)
		<-back
	}
}
