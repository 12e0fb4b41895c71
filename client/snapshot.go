package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/api/backup"
)

// ErrSnapshotDamaged: a snapshot download was cut short, carried more or
// other bytes than announced, or failed its SHA-256 check. Nothing was
// written.
var ErrSnapshotDamaged = errors.New("snapshot download damaged")

// SnapshotInfo describes a backup SaveSnapshot wrote.
type SnapshotInfo struct {
	Header
	// Endpoint is the member that made it.
	Endpoint string
	// AppliedIndex is the log index the state is as of; Revision the
	// store revision there.
	AppliedIndex uint64
	Revision     uint64
	Keys         uint64
	Sessions     uint64
	// DataBytes is the size of the state; FileBytes of the whole file.
	DataBytes uint64
	FileBytes int64
	// SHA256 is the file's checksum, in hex (as `kvctl snapshot status`
	// prints it).
	SHA256 string
}

// SaveSnapshot asks a member for a consistent snapshot of the cluster's
// key-value state and writes it to path as a backup file (see package
// backup), atomically: either the whole verified file is at path or
// nothing is. The snapshot reflects every write acknowledged before the
// call. Members are tried in turn, like any call, until one starts
// sending; a failure after that ends the call (run it again).
// AttemptTimeout, if set, bounds the wait for a member to start sending.
func (c *Client) SaveSnapshot(ctx context.Context, path string) (SnapshotInfo, error) {
	if c.closed.Load() {
		return SnapshotInfo{}, fmt.Errorf("snapshot: %w", ErrClosed)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	ep, stream, first, cancel, err := c.startSnapshot(ctx)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer cancel()
	info := first.Info
	// The first message normally carries only the description; whatever
	// data or checksum it has goes through the same checks as the rest.
	r := &snapshotReader{stream: stream, want: info.Size, h: sha256.New()}
	if err := r.take(first); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot from %s: %w", ep.addr, err)
	}
	sum, fileBytes, err := backup.WriteFile(path, info, r)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot from %s: %w", ep.addr, err)
	}
	return SnapshotInfo{
		Header: headerOf(first.Header), Endpoint: ep.addr,
		AppliedIndex: info.AppliedIndex, Revision: info.Revision, Keys: info.KeyCount, Sessions: info.SessionCount,
		DataBytes: info.Size, FileBytes: fileBytes, SHA256: sum.String(),
	}, nil
}

// startSnapshot tries the members in turn, from the preferred one, until
// one sends the first message of a snapshot; it retries transient failures
// the way every call does (see do).
func (c *Client) startSnapshot(ctx context.Context) (*endpoint, apipb.KV_SnapshotClient, *apipb.SnapshotResponse, context.CancelFunc, error) {
	const op = "snapshot"
	n := len(c.eps)
	idx := int(c.preferred.Load())
	var lastErr error
	unreachable := 0
	for attempt := 0; ; {
		ep := c.eps[idx]
		sctx, cancel := context.WithCancel(ctx)
		var timer *time.Timer
		if c.cfg.AttemptTimeout > 0 {
			timer = time.AfterFunc(c.cfg.AttemptTimeout, cancel)
		}
		var p peer.Peer
		stream, first, err := openSnapshot(sctx, ep.kv, grpc.Peer(&p))
		attemptTimedOut := timer != nil && !timer.Stop()
		if err == nil && attemptTimedOut {
			err = status.Error(codes.DeadlineExceeded, "attempt timed out")
		}
		if err == nil {
			c.noteSuccess(idx, first.Header)
			return ep, stream, first, cancel, nil
		}
		cancel()
		if c.closed.Load() {
			return nil, nil, nil, nil, fmt.Errorf("%s: %w", op, ErrClosed)
		}
		if ctx.Err() != nil {
			return nil, nil, nil, nil, contextError(ctx, op, lastErr, err)
		}
		if errors.Is(err, ErrSnapshotDamaged) {
			return nil, nil, nil, nil, fmt.Errorf("%s from %s: %w", op, ep.addr, err)
		}
		class, st := classify(err)
		if class != classRetry {
			return nil, nil, nil, nil, &StatusError{Op: op, Endpoint: ep.addr, Code: st.Code(), Message: st.Message()}
		}
		if lastErr == nil || !isContextStatus(err) {
			lastErr = err
		}
		c.noteFailure(idx)
		// The peer is known once the call reached the member (see invoke).
		if attemptTimedOut || p.Addr == nil {
			unreachable++
		}
		if c.maxRetries < 0 || unreachable > c.maxRetries {
			return nil, nil, nil, nil, &UnavailableError{Op: op, Endpoints: c.addrs, Attempts: attempt + 1, Last: err}
		}
		attempt++
		idx = (idx + 1) % n
		if attempt%n == 0 {
			if err := c.pause(ctx, attempt/n); err != nil {
				return nil, nil, nil, nil, contextError(ctx, op, lastErr, nil)
			}
		}
	}
}

func openSnapshot(ctx context.Context, kv apipb.KVClient, opts ...grpc.CallOption) (apipb.KV_SnapshotClient, *apipb.SnapshotResponse, error) {
	stream, err := kv.Snapshot(ctx, &apipb.SnapshotRequest{}, opts...)
	if err != nil {
		return nil, nil, err
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%w: the member ended the stream without sending anything", ErrSnapshotDamaged)
	}
	if err != nil {
		return nil, nil, err
	}
	if first.Info == nil {
		return nil, nil, fmt.Errorf("%w: the first message carries no snapshot description", ErrSnapshotDamaged)
	}
	return stream, first, nil
}

// snapshotReader yields a snapshot stream's data and checks, as it goes,
// that no more arrives than announced, and at the end that all of it
// arrived and matches the SHA-256 the member sent last. Any shortfall is
// an error, never io.EOF, so a cut stream cannot pass for a whole one.
type snapshotReader struct {
	stream apipb.KV_SnapshotClient
	h      hash.Hash
	want   uint64
	got    uint64
	buf    []byte
	done   bool
}

func (r *snapshotReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		msg, err := r.stream.Recv()
		if errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("%w: truncated: the stream ended after %d of %d bytes, before its checksum", ErrSnapshotDamaged, r.got, r.want)
		}
		if err != nil {
			return 0, fmt.Errorf("download failed after %d of %d bytes: %w", r.got, r.want, err)
		}
		if err := r.take(msg); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// take accepts one message's data and, if it is the last, its checksum.
func (r *snapshotReader) take(msg *apipb.SnapshotResponse) error {
	r.got += uint64(len(msg.Data))
	if r.got > r.want {
		return fmt.Errorf("%w: the member sent more than the %d bytes it announced", ErrSnapshotDamaged, r.want)
	}
	r.h.Write(msg.Data)
	r.buf = msg.Data
	if len(msg.Sha256) > 0 {
		return r.finish(msg.Sha256)
	}
	return nil
}

// finish checks the last message's checksum against everything received
// and that the stream then ends cleanly.
func (r *snapshotReader) finish(sum []byte) error {
	if r.got != r.want {
		return fmt.Errorf("%w: truncated: %d of %d bytes arrived before the checksum", ErrSnapshotDamaged, r.got, r.want)
	}
	if got := r.h.Sum(nil); !bytes.Equal(got, sum) {
		return fmt.Errorf("%w: the data's SHA-256 is %s, the member sent %s", ErrSnapshotDamaged, hex.EncodeToString(got), hex.EncodeToString(sum))
	}
	if _, err := r.stream.Recv(); !errors.Is(err, io.EOF) {
		if err == nil {
			return fmt.Errorf("%w: the member sent more after the checksum", ErrSnapshotDamaged)
		}
		return fmt.Errorf("download failed at its end: %w", err)
	}
	r.done = true
	return nil
}
