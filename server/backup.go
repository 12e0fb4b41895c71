package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// backupChunkBytes is the data carried by one message of a Snapshot
// stream: well under gRPC's default 4 MiB receive limit.
const backupChunkBytes = 1 << 20

// Snapshot streams a backup of this node's state (see apipb.KV.Snapshot).
//
// A ReadIndex barrier first makes the state include every write
// acknowledged before the call. The state is then frozen in one bbolt read
// transaction (a point-in-time view as of one applied index, while
// applying goes on) and encoded from it twice: once to learn the size and
// counts the first message must announce, once onto the stream. Nothing
// is written to disk, and no more than a message or two of the backup is
// held in memory: Send blocks on the client's flow-control window, and
// reading the view waits for it. The cost is that the read transaction is
// open for as long as the client takes to read (docs/operations.md).
func (k *kvService) Snapshot(_ *apipb.SnapshotRequest, stream apipb.KV_SnapshotServer) error {
	return k.s.serveBackup(stream.Context(), &nativeBackup{stream: stream, k: k, h: sha256.New()})
}

// backupSink is where serveBackup sends a backup: the API's messages.
type backupSink interface {
	// begin gets the backup's metadata, before any data.
	begin(info *apipb.SnapshotInfo) error
	// data gets the next piece of the data; a sink must not keep or
	// change it (it is the message's own buffer).
	data(chunk []byte) error
	end() error
}

// serveBackup sends a backup of this node's state to sink, for root only.
//
// A ReadIndex barrier first makes the state include every write
// acknowledged before the call. The state is then frozen in one bbolt read
// transaction (a point-in-time view as of one applied index, while
// applying goes on) and encoded from it twice: once to learn the size and
// counts the first message must announce, once onto the stream. Nothing
// is written to disk, and no more than a message or two of the backup is
// held in memory: Send blocks on the client's flow-control window, and
// reading the view waits for it. The cost is that the read transaction is
// open for as long as the client takes to read (docs/operations.md).
func (s *Server) serveBackup(ctx context.Context, sink backupSink) error {
	if err := s.requireFresh(ctx, needRoot); err != nil {
		return err
	}
	release, err := s.takeBackupSlot()
	if err != nil {
		return err
	}
	defer release()
	if err := s.readBarrier(ctx); err != nil {
		return err
	}
	frozen, err := s.store.Freeze()
	if err != nil {
		return status.Errorf(codes.Internal, "freeze the state machine for a backup: %v", err)
	}
	defer frozen.Close()
	// The first pass also checks the encoding before anything is sent.
	var size byteCounter
	sum, err := encodeBackup(frozen, &size)
	if err != nil {
		return status.Errorf(codes.Internal, "snapshot the state machine: %v", err)
	}
	info := &apipb.SnapshotInfo{
		AppliedIndex: sum.AppliedIndex, Revision: sum.Revision, KeyCount: sum.Keys, SessionCount: sum.Sessions,
		Size: uint64(size), NodeId: uint64(s.cfg.ID), ClusterId: fmt.Sprintf("%016x", s.clusterID),
		CreatedUnixNano: time.Now().UnixNano(),
	}
	if err := sink.begin(info); err != nil {
		return err
	}
	out := &backupSender{send: sink.data}
	again, err := encodeBackup(frozen, out)
	if err == nil {
		err = out.flush()
	}
	if out.err != nil {
		return out.err // the stream's own status (the client went away)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "snapshot the state machine: %v", err)
	}
	if out.sent != int64(size) || again != sum {
		return status.Errorf(codes.Internal, "the backup's second encoding (%d bytes, %+v) differs from its first (%d bytes, %+v)",
			out.sent, again, size, sum)
	}
	s.log.Info("sent a snapshot for a backup", "index", info.AppliedIndex, "keys", info.KeyCount, "bytes", info.Size)
	return sink.end()
}

// nativeBackup sends a backup as KeyVal's Snapshot messages: the metadata
// first, then the data, then the SHA-256 of the data.
type nativeBackup struct {
	stream apipb.KV_SnapshotServer
	k      *kvService
	h      hash.Hash
}

func (n *nativeBackup) begin(info *apipb.SnapshotInfo) error {
	return n.stream.Send(&apipb.SnapshotResponse{Header: n.k.header(info.Revision), Info: info})
}

func (n *nativeBackup) data(chunk []byte) error {
	n.h.Write(chunk)
	return n.stream.Send(&apipb.SnapshotResponse{Data: chunk})
}

func (n *nativeBackup) end() error {
	return n.stream.Send(&apipb.SnapshotResponse{Sha256: n.h.Sum(nil)})
}

// encodeBackup writes the frozen state to w as a backup's data: the
// members' addresses describe this cluster, not the data, so a backup
// leaves them out; users, roles and the auth switch go with the data. The same view always gives the same
// bytes.
func encodeBackup(f kvstore.Frozen, w io.Writer) (kvstore.SnapshotSummary, error) {
	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := f.WriteSnapshot(pw)
		pw.CloseWithError(err)
		written <- err
	}()
	sum, err := kvstore.CopySnapshot(pr, w, replica.IsMemberRecord)
	pr.CloseWithError(errors.New("backup stopped")) // unblocks the writer if the copy stopped early
	// The read transaction must not be used by two goroutines, nor closed
	// under the writer: wait for it.
	if werr := <-written; err == nil && werr != nil {
		err = werr
	}
	return sum, err
}

// byteCounter is an io.Writer that only counts.
type byteCounter int64

func (c *byteCounter) Write(p []byte) (int, error) {
	*c += byteCounter(len(p))
	return len(p), nil
}

// backupSender cuts a backup's data into messages of backupChunkBytes.
type backupSender struct {
	send func([]byte) error
	buf  []byte
	sent int64
	err  error // from send: sticks
}

func (b *backupSender) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if b.buf == nil {
			b.buf = make([]byte, 0, backupChunkBytes)
		}
		c := copy(b.buf[len(b.buf):cap(b.buf)], p)
		b.buf, p, n = b.buf[:len(b.buf)+c], p[c:], n+c
		if len(b.buf) == cap(b.buf) {
			if err := b.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (b *backupSender) flush() error {
	if b.err != nil || len(b.buf) == 0 {
		return b.err
	}
	b.sent += int64(len(b.buf))
	b.err = b.send(b.buf)
	// A fresh buffer per message: gRPC may use a sent message lazily
	// (stats handlers, tracing), so it must not be reused.
	b.buf = nil
	return b.err
}

// takeBackupSlot reserves one of --max-concurrent-backups slots, or refuses
// at once: each backup holds a bbolt read transaction open while it runs,
// and a call waiting for a slot would still hold its client's connection.
func (s *Server) takeBackupSlot() (release func(), err error) {
	select {
	case s.backupSlots <- struct{}{}:
	default:
		s.obs.m.backupsRefused.Inc()
		return nil, status.Errorf(codes.ResourceExhausted,
			"node %d is serving %d backups already, its limit (--max-concurrent-backups): retry when one has finished", s.cfg.ID, cap(s.backupSlots))
	}
	s.obs.m.backupsRunning.Inc()
	return func() {
		s.obs.m.backupsRunning.Dec()
		<-s.backupSlots
	}, nil
}
