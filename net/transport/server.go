package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/net/peerpb"
	"github.com/therealutkarshpriyadarshi/keyval/raftpb"
)

// ErrChecksum is returned by a snapshot's data reader when the bytes that
// arrived do not match the sender's size and CRC-32C.
var ErrChecksum = errors.New("snapshot checksum mismatch")

// errProtocol marks a stream that broke the rules of the peer protocol.
var errProtocol = errors.New("peer protocol violation")

// peerService is the receiving side: the Peer gRPC service.
type peerService struct {
	peerpb.UnimplementedPeerServer
	t *Transport
}

// accept checks a new stream's metadata and returns the sending node.
func (s *peerService) accept(ctx context.Context) (core.NodeID, error) {
	t := s.t
	if t.closing.Load() {
		return 0, status.Errorf(codes.Unavailable, "node %d is shutting down", t.cfg.ID)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(key string) (uint64, error) {
		vals := md.Get(key)
		if len(vals) != 1 {
			return 0, status.Errorf(codes.InvalidArgument,
				"stream has no %s metadata: is the caller a KeyVal node of a compatible version?", key)
		}
		v, err := strconv.ParseUint(vals[0], 10, 64)
		if err != nil {
			return 0, status.Errorf(codes.InvalidArgument, "bad %s metadata %q: %v", key, vals[0], err)
		}
		return v, nil
	}
	cluster, err := get(mdClusterID)
	if err != nil {
		return 0, err
	}
	from, err := get(mdFrom)
	if err != nil {
		return 0, err
	}
	to, err := get(mdTo)
	if err != nil {
		return 0, err
	}
	if cluster != t.cfg.ClusterID {
		return 0, status.Errorf(codes.FailedPrecondition,
			"cluster id mismatch: node %d belongs to cluster %d and refuses node %d of cluster %d; "+
				"check both nodes' cluster id and peer addresses", t.cfg.ID, t.cfg.ClusterID, from, cluster)
	}
	if core.NodeID(to) != t.cfg.ID {
		return 0, status.Errorf(codes.FailedPrecondition,
			"stream meant for node %d reached node %d: node %d's peer address for node %d points here",
			to, t.cfg.ID, from, to)
	}
	if from == 0 || core.NodeID(from) == t.cfg.ID {
		return 0, status.Errorf(codes.InvalidArgument, "invalid sender node id %d", from)
	}
	if err := t.checkIdentity(ctx, core.NodeID(from)); err != nil {
		return 0, err
	}
	return core.NodeID(from), nil
}

// checkAddressing verifies that a message really is from the stream's
// sender and for this node.
func (s *peerService) checkAddressing(m *core.Message, from core.NodeID) error {
	if m.To != s.t.cfg.ID {
		return status.Errorf(codes.FailedPrecondition,
			"%s from node %d is addressed to node %d, but this is node %d", m.Type, from, m.To, s.t.cfg.ID)
	}
	if m.From != from {
		return status.Errorf(codes.InvalidArgument,
			"%s claims to be from node %d on a stream from node %d", m.Type, m.From, from)
	}
	return nil
}

// Messages receives a peer's stream of batches and steps every message.
func (s *peerService) Messages(stream peerpb.Peer_MessagesServer) error {
	t := s.t
	from, err := s.accept(stream.Context())
	if err != nil {
		return err
	}
	// Response headers tell the sender the stream was accepted.
	if err := stream.SendHeader(metadata.Pairs(mdNodeID, strconv.FormatUint(uint64(t.cfg.ID), 10))); err != nil {
		return err
	}
	t.peerIsBack(from)
	c := t.counters(from)
	var msgs []core.Message
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&peerpb.BatchAck{})
		}
		if err != nil {
			return err
		}
		if msgs, err = raftpb.DecodeBatch(b, msgs[:0]); err != nil {
			return status.Errorf(codes.InvalidArgument, "malformed batch from node %d: %v", from, err)
		}
		for i := range msgs {
			if err := s.checkAddressing(&msgs[i], from); err != nil {
				return err
			}
		}
		for i := range msgs {
			if t.closing.Load() {
				return status.Errorf(codes.Unavailable, "node %d is shutting down", t.cfg.ID)
			}
			t.h.Step(msgs[i])
			msgs[i] = core.Message{} // do not pin the handler's messages until the next batch
		}
		c.received.Add(uint64(len(msgs)))
		c.receivedBatches.Add(1)
		c.receivedBytes.Add(uint64(proto.Size(b)))
	}
}

// Snapshot receives a MsgSnap and streams its data to the handler.
func (s *peerService) Snapshot(stream peerpb.Peer_SnapshotServer) error {
	t := s.t
	from, err := s.accept(stream.Context())
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return status.Errorf(codes.InvalidArgument, "snapshot stream from node %d does not start with its header", from)
	}
	m, err := raftpb.ToCore(hdr)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "malformed snapshot header from node %d: %v", from, err)
	}
	if m.Type != core.MsgSnap || m.Snapshot == nil {
		return status.Errorf(codes.InvalidArgument,
			"snapshot stream from node %d carries %s without snapshot metadata", from, m.Type)
	}
	if err := s.checkAddressing(&m, from); err != nil {
		return err
	}
	r := &snapshotReader{stream: stream}
	herr := t.h.ReceiveSnapshot(m, r)
	switch {
	case errors.Is(herr, ErrChecksum) || errors.Is(r.err, ErrChecksum):
		return status.Errorf(codes.DataLoss, "snapshot from node %d refused: %v", from, errors.Join(r.err, herr))
	case errors.Is(r.err, errProtocol) || errors.Is(r.err, io.ErrUnexpectedEOF):
		return status.Errorf(codes.InvalidArgument, "snapshot stream from node %d: %v", from, r.err)
	case herr != nil:
		if st, ok := status.FromError(herr); ok && st.Code() != codes.Unknown {
			return herr
		}
		return status.Errorf(codes.Aborted, "node %d could not install the snapshot from node %d: %v", t.cfg.ID, from, herr)
	case !errors.Is(r.err, io.EOF):
		return status.Errorf(codes.Internal, "node %d stopped reading the snapshot from node %d before its end", t.cfg.ID, from)
	}
	c := t.counters(from)
	c.snapsRecvd.Add(1)
	c.receivedBytes.Add(r.size)
	return stream.SendAndClose(&peerpb.SnapshotAck{Size: r.size})
}

// snapshotReader hands a snapshot's data chunks to the handler as they
// arrive, computing the checksum on the way, and reports io.EOF only once
// the trailer's size and checksum match and the sender has closed its side.
// So the receiver never holds the whole snapshot in memory, but the handler
// sees data before it is verified and must treat it as tentative until EOF.
type snapshotReader struct {
	stream peerpb.Peer_SnapshotServer
	buf    []byte // unread rest of the current chunk
	sum    uint32
	size   uint64
	err    error // sticky: io.EOF when verified, or why the data is bad
}

func (r *snapshotReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// next receives one chunk, returning nil after a data chunk and the sticky
// end state (io.EOF or an error) otherwise.
func (r *snapshotReader) next() error {
	c, err := r.stream.Recv()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: snapshot stream ended after %d bytes without its trailer", io.ErrUnexpectedEOF, r.size)
	}
	if err != nil {
		return fmt.Errorf("receive snapshot chunk: %w", err)
	}
	switch k := c.Kind.(type) {
	case *peerpb.SnapshotChunk_Data:
		r.sum = crc32.Update(r.sum, castagnoli, k.Data)
		r.size += uint64(len(k.Data))
		r.buf = k.Data
		return nil
	case *peerpb.SnapshotChunk_Trailer:
		tr := k.Trailer
		if tr.GetSize() != r.size || tr.GetCrc32C() != r.sum {
			return fmt.Errorf("%w: received %d bytes with CRC-32C %08x, sender sent %d bytes with %08x",
				ErrChecksum, r.size, r.sum, tr.GetSize(), tr.GetCrc32C())
		}
		if _, err := r.stream.Recv(); !errors.Is(err, io.EOF) {
			if err != nil {
				return fmt.Errorf("receive after snapshot trailer: %w", err)
			}
			return fmt.Errorf("%w: chunk after the snapshot trailer", errProtocol)
		}
		return io.EOF
	default:
		return fmt.Errorf("%w: unexpected %T chunk in snapshot data", errProtocol, c.Kind)
	}
}
