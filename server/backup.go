package server

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
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
// acknowledged before the call. The state is then copied to a spool file
// in one bbolt read transaction (a point-in-time view as of one applied
// index, taken while applying goes on) and streamed from there, so a slow
// client never holds the read transaction open. The spool file is
// unlinked at once where the OS allows it, so a crash leaves nothing.
func (k *kvService) Snapshot(_ *apipb.SnapshotRequest, stream apipb.KV_SnapshotServer) error {
	s := k.s
	release, err := s.takeBackupSlot()
	if err != nil {
		return err
	}
	defer release()
	ctx := stream.Context()
	if err := s.readBarrier(ctx); err != nil {
		return err
	}
	spool, err := os.CreateTemp(s.cfg.DataDir, "backup-*.tmp")
	if err != nil {
		return status.Errorf(codes.Internal, "make a spool file for the snapshot: %v", err)
	}
	defer spool.Close()
	if os.Remove(spool.Name()) != nil {
		defer os.Remove(spool.Name()) // the OS keeps open files: remove after closing
	}
	// KeyVal's own records (the members' addresses) describe this cluster,
	// not the data: a backup leaves them out.
	pr, pw := io.Pipe()
	go func() {
		_, err := s.store.Snapshot(pw)
		pw.CloseWithError(err)
	}()
	_, err = kvstore.CopySnapshot(pr, spool, replica.IsReservedKey)
	pr.CloseWithError(err) // unblocks the writer if the copy stopped early
	if err != nil {
		return status.Errorf(codes.Internal, "snapshot the state machine: %v", err)
	}
	size, err := spool.Seek(0, io.SeekCurrent)
	if err != nil {
		return status.Errorf(codes.Internal, "spool snapshot: %v", err)
	}
	// Reading it back checks what we are about to send and counts it.
	sum, err := kvstore.SummarizeSnapshot(io.NewSectionReader(spool, 0, size))
	if err != nil {
		return status.Errorf(codes.Internal, "the snapshot just taken does not verify: %v", err)
	}
	info := &apipb.SnapshotInfo{
		AppliedIndex: sum.AppliedIndex, Revision: sum.Revision, KeyCount: sum.Keys, SessionCount: sum.Sessions,
		Size: uint64(size), NodeId: uint64(s.cfg.ID), ClusterId: fmt.Sprintf("%016x", s.clusterID),
		CreatedUnixNano: time.Now().UnixNano(),
	}
	if err := stream.Send(&apipb.SnapshotResponse{Header: k.header(sum.Revision), Info: info}); err != nil {
		return err
	}
	h := sha256.New()
	for off := int64(0); off < size; {
		// A fresh buffer per message: gRPC may use a sent message lazily
		// (stats handlers, tracing), so it must not be reused.
		buf := make([]byte, min(backupChunkBytes, size-off))
		if _, err := spool.ReadAt(buf, off); err != nil {
			return status.Errorf(codes.Internal, "read the spooled snapshot: %v", err)
		}
		h.Write(buf)
		if err := stream.Send(&apipb.SnapshotResponse{Data: buf}); err != nil {
			return err
		}
		off += int64(len(buf))
	}
	s.log.Info("sent a snapshot for a backup", "index", info.AppliedIndex, "keys", info.KeyCount, "bytes", size)
	return stream.Send(&apipb.SnapshotResponse{Sha256: h.Sum(nil)})
}

// takeBackupSlot reserves one of --max-concurrent-backups slots, or refuses
// at once: each backup spools the whole state to disk, and a call waiting
// for a slot would still hold its client's connection.
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
