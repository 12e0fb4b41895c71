package transport

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/net/peerpb"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

func snapMsg(from, to core.NodeID) core.Message {
	return core.Message{Type: core.MsgSnap, From: from, To: to, Term: 3,
		Snapshot: &core.SnapshotMeta{Index: 100, Term: 3, Conf: core.ConfState{Voters: []core.NodeID{1, 2, 3}, Learners: []core.NodeID{4}}}}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func readCloser(r io.Reader) io.ReadCloser { return &closeRecorder{Reader: r} }

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestSnapshotStreamed: a multi-chunk snapshot arrives whole, its metadata
// intact, its data handed over piece by piece; the sender hears success.
func TestSnapshotStreamed(t *testing.T) {
	nodes := cluster(t, 2, func(c *Config) { c.SnapshotChunkBytes = 64 << 10 })
	a, b := nodes[0], nodes[1]
	data := randomBytes(3<<20+12345, 1)
	type got struct {
		m     core.Message
		data  []byte
		reads int
		err   error
	}
	gotCh := make(chan got, 1)
	b.h.onSnapshot = func(m core.Message, r io.Reader) error {
		var g got
		g.m = m
		buf := make([]byte, 1<<20)
		for {
			n, err := r.Read(buf)
			g.data = append(g.data, buf[:n]...)
			g.reads++
			if err != nil {
				if !errors.Is(err, io.EOF) {
					g.err = err
				}
				break
			}
		}
		gotCh <- g
		return g.err
	}
	src := &closeRecorder{Reader: bytes.NewReader(data)}
	a.tr.SendSnapshot(snapMsg(1, 2), src)
	if rep := a.h.waitSnapshotReport(t); rep != (snapReport{2, true}) {
		t.Fatalf("report %+v", rep)
	}
	g := <-gotCh
	if g.err != nil {
		t.Fatal(g.err)
	}
	if !bytes.Equal(g.data, data) {
		t.Fatalf("received %d bytes, sent %d; contents differ", len(g.data), len(data))
	}
	want := snapMsg(1, 2)
	if g.m.Type != core.MsgSnap || g.m.From != 1 || g.m.To != 2 || g.m.Term != 3 ||
		g.m.Snapshot.Index != 100 || g.m.Snapshot.Term != 3 || !g.m.Snapshot.Conf.Equal(want.Snapshot.Conf) {
		t.Fatalf("header arrived as %v %+v", g.m, g.m.Snapshot)
	}
	// 1 MiB reads of 64 KiB chunks: the reader hands over a chunk at a time.
	if g.reads < len(data)/(64<<10) {
		t.Errorf("data handed over in %d reads; expected one per chunk", g.reads)
	}
	if !src.closed {
		t.Error("snapshot data not closed")
	}
	if sa, sb := a.tr.Stats()[2], b.tr.Stats()[1]; sa.SnapshotsSent != 1 || sb.SnapshotsReceived != 1 {
		t.Errorf("stats: sender %+v receiver %+v", sa, sb)
	}
}

// TestSnapshotEmptyData: a snapshot with no bytes is still a snapshot.
func TestSnapshotEmptyData(t *testing.T) {
	nodes := cluster(t, 2, nil)
	nodes[0].tr.SendSnapshot(snapMsg(1, 2), readCloser(strings.NewReader("")))
	if rep := nodes[0].h.waitSnapshotReport(t); !rep.ok {
		t.Fatal("empty snapshot failed")
	}
}

// TestSnapshotFailuresReported: the receiver refusing the snapshot, or
// returning without reading it, or a peer that does not exist, or data that
// cannot be read, all end in ReportSnapshot(to, false).
func TestSnapshotFailuresReported(t *testing.T) {
	nodes := cluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	cases := []struct {
		name    string
		handler func(core.Message, io.Reader) error
		to      core.NodeID
		data    io.Reader
	}{
		{"handler refuses", func(_ core.Message, r io.Reader) error {
			_, _ = io.Copy(io.Discard, r)
			return errors.New("disk full")
		}, 2, strings.NewReader("data")},
		{"handler stops early", func(core.Message, io.Reader) error { return nil }, 2, strings.NewReader("data")},
		{"unknown peer", nil, 9, strings.NewReader("data")},
		{"unreadable data", nil, 2, io.MultiReader(strings.NewReader("abc"), errReader{})},
	}
	failed := uint64(0)
	for _, c := range cases {
		b.h.onSnapshot = c.handler
		src := &closeRecorder{Reader: c.data}
		a.tr.SendSnapshot(snapMsg(1, c.to), src)
		if rep := a.h.waitSnapshotReport(t); rep != (snapReport{c.to, false}) {
			t.Fatalf("%s: report %+v", c.name, rep)
		}
		if !src.closed {
			t.Errorf("%s: data not closed", c.name)
		}
		if c.to == 2 {
			failed++
			if got := a.tr.Stats()[2].SnapshotsFailed; got != failed {
				t.Errorf("%s: SnapshotsFailed %d", c.name, got)
			}
		}
	}
	if got := b.tr.Stats()[1].SnapshotsReceived; got != 0 {
		t.Errorf("receiver counted %d snapshots", got)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk read error") }

// TestSnapshotCorruptionRejected plays a sender with a raw gRPC client: a
// flipped bit in a chunk, a wrong size, a stream cut short, a chunk after
// the trailer, or a stream without a header is an error for the handler's
// reader and for the stream, never a success.
func TestSnapshotCorruptionRejected(t *testing.T) {
	nodes := cluster(t, 2, nil)
	b := nodes[1]
	data := randomBytes(200<<10, 2)
	sum := crc32.Checksum(data, castagnoli)
	chunks := [][]byte{data[:64<<10], data[64<<10 : 128<<10], data[128<<10:]}
	hdr := func() *peerpb.SnapshotChunk {
		m := snapMsg(1, 2)
		return &peerpb.SnapshotChunk{Kind: &peerpb.SnapshotChunk_Header{Header: raftpb.FromCore(&m)}}
	}
	dataChunk := func(b []byte) *peerpb.SnapshotChunk {
		return &peerpb.SnapshotChunk{Kind: &peerpb.SnapshotChunk_Data{Data: b}}
	}
	trailer := func(size uint64, sum uint32) *peerpb.SnapshotChunk {
		return &peerpb.SnapshotChunk{Kind: &peerpb.SnapshotChunk_Trailer{Trailer: &peerpb.SnapshotTrailer{Size: size, Crc32C: sum}}}
	}
	flipped := bytes.Clone(chunks[1])
	flipped[777] ^= 0x10
	notSnap := core.Message{Type: core.MsgHeartbeat, From: 1, To: 2}

	cases := []struct {
		name      string
		send      []*peerpb.SnapshotChunk
		code      codes.Code
		readerErr error // what the handler's reader must fail with; nil if not called
	}{
		{"intact (control)", []*peerpb.SnapshotChunk{hdr(), dataChunk(chunks[0]), dataChunk(chunks[1]), dataChunk(chunks[2]), trailer(uint64(len(data)), sum)}, codes.OK, nil},
		{"flipped bit", []*peerpb.SnapshotChunk{hdr(), dataChunk(chunks[0]), dataChunk(flipped), dataChunk(chunks[2]), trailer(uint64(len(data)), sum)}, codes.DataLoss, ErrChecksum},
		{"wrong size", []*peerpb.SnapshotChunk{hdr(), dataChunk(chunks[0]), dataChunk(chunks[1]), dataChunk(chunks[2]), trailer(uint64(len(data))+1, sum)}, codes.DataLoss, ErrChecksum},
		{"chunk missing", []*peerpb.SnapshotChunk{hdr(), dataChunk(chunks[0]), dataChunk(chunks[2]), trailer(uint64(len(data)), sum)}, codes.DataLoss, ErrChecksum},
		{"no trailer", []*peerpb.SnapshotChunk{hdr(), dataChunk(chunks[0])}, codes.InvalidArgument, io.ErrUnexpectedEOF},
		{"chunk after trailer", []*peerpb.SnapshotChunk{hdr(), dataChunk(data), trailer(uint64(len(data)), sum), dataChunk(chunks[0])}, codes.InvalidArgument, errProtocol},
		{"second header", []*peerpb.SnapshotChunk{hdr(), dataChunk(chunks[0]), hdr()}, codes.InvalidArgument, errProtocol},
		{"no header", []*peerpb.SnapshotChunk{dataChunk(chunks[0]), trailer(uint64(len(chunks[0])), 0)}, codes.InvalidArgument, nil},
		{"not a MsgSnap", []*peerpb.SnapshotChunk{{Kind: &peerpb.SnapshotChunk_Header{Header: raftpb.FromCore(&notSnap)}}}, codes.InvalidArgument, nil},
	}
	client := rawConn(t, b.addr)
	for _, c := range cases {
		readerErr := make(chan error, 1)
		b.h.onSnapshot = func(_ core.Message, r io.Reader) error {
			got, err := io.ReadAll(r)
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("reader returned EOF on wrong data")
			}
			readerErr <- err
			return err
		}
		stream, err := client.Snapshot(streamCtx(t, 7, 1, 2))
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range c.send {
			if err := stream.Send(ch); err != nil {
				break // the server has answered; CloseAndRecv says how
			}
		}
		_, err = stream.CloseAndRecv()
		if got := status.Code(err); got != c.code {
			t.Errorf("%s: status %v (%v), want %v", c.name, got, err, c.code)
		}
		select {
		case rerr := <-readerErr:
			if c.readerErr == nil && c.code != codes.OK {
				t.Errorf("%s: handler called", c.name)
			} else if c.code == codes.OK && rerr != nil {
				t.Errorf("%s: reader failed: %v", c.name, rerr)
			} else if c.code != codes.OK && !errors.Is(rerr, c.readerErr) {
				t.Errorf("%s: reader error %v, want %v", c.name, rerr, c.readerErr)
			}
		default:
			if c.readerErr != nil || c.code == codes.OK {
				t.Errorf("%s: handler not called", c.name)
			}
		}
	}
	if got := b.tr.Stats()[1].SnapshotsReceived; got != 1 {
		t.Errorf("SnapshotsReceived %d, want 1 (the control)", got)
	}
}
