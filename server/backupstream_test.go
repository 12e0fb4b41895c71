package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/api/backup"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// TestBackupStreamsFromAReadView: a backup held open half-way by a client
// that does not read has written nothing under the member's data
// directory, and a backup taken while writes go on (before, during and
// after it is frozen) restores to exactly the state at its applied index:
// every write at or below its revision, none above.
func TestBackupStreamsFromAReadView(t *testing.T) {
	c := newTestCluster(t, 1, 0)
	c.leader()
	kv := c.conns[1]
	// Several 1 MiB messages: more than the stream's window below.
	big := bytes.Repeat([]byte("b"), 1<<20)
	want := map[string]string{}
	for i := range 6 {
		key := fmt.Sprintf("big/%d", i)
		resp, err := kv.Put(ctx(t), &apipb.PutRequest{Key: []byte(key), Value: big})
		require.NoError(t, err)
		want[key] = digest(big, resp.Version)
	}
	w := &overwriter{kv: kv}
	for range 20 {
		require.NoError(t, w.put(t))
	}
	dir := c.servers[1].cfg.DataDir
	before, beforeOpen := listFiles(t, dir), openFilesUnder(t, dir)

	// A fixed window turns off gRPC's window growth (BDP estimation), so
	// the member's Send blocks once the client stops reading.
	conn, err := grpc.NewClient(c.clients[1], plaintext(),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	require.NoError(t, err)
	defer conn.Close()
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := apipb.NewKVClient(conn).Snapshot(sctx, &apipb.SnapshotRequest{})
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err)
	info := first.Info
	require.NotNil(t, info)
	require.Greater(t, info.Size, uint64(len(big)*6), "the announced size covers the values")
	msg, err := stream.Recv()
	require.NoError(t, err)
	require.NotEmpty(t, msg.Data)
	data := append([]byte(nil), msg.Data...)
	require.Less(t, uint64(len(data)), info.Size, "the backup is only part sent")
	require.Equal(t, before, listFiles(t, dir),
		"a backup streaming half-way has changed nothing in the data directory")
	require.Equal(t, beforeOpen, openFilesUnder(t, dir),
		"nor does it hold a file there open (an unlinked spool file would show here)")

	// Writes go on while the backup's view is open; then the rest of it
	// is read.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	writeErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				writeErr <- nil
				return
			default:
			}
			if err := w.put(t); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	eventually(t, func() error {
		if n := w.count(); n < 60 {
			return fmt.Errorf("%d writes so far", n)
		}
		return nil
	})
	h := sha256.New()
	h.Write(data)
	var sum []byte
	for sum == nil {
		msg, err := stream.Recv()
		require.NoError(t, err)
		data = append(data, msg.Data...)
		h.Write(msg.Data)
		sum = msg.Sha256
	}
	_, err = stream.Recv()
	require.ErrorIs(t, err, io.EOF)
	close(stop)
	wg.Wait()
	require.NoError(t, <-writeErr)
	require.Equal(t, h.Sum(nil), sum)

	path := filepath.Join(t.TempDir(), "b.kvb")
	_, _, err = backup.WriteFile(path, info, bytes.NewReader(data))
	require.NoError(t, err)
	f, err := backup.Open(path)
	require.NoError(t, err)
	defer f.Close()
	restored := kvstore.NewMemory(kvstore.Options{})
	require.NoError(t, restored.Restore(f.Data()))
	require.Equal(t, info.AppliedIndex, restored.AppliedIndex())
	require.Equal(t, info.Revision, restored.Revision())

	included, excluded := w.stateAt(info.Revision, want)
	require.NotZero(t, included, "writes made before the backup are in it")
	require.NotZero(t, excluded, "writes made during the backup are not")
	got := map[string]string{}
	all, err := restored.Range(nil, nil, 0)
	require.NoError(t, err)
	for _, e := range all.Entries {
		got[string(e.Key)] = digest(e.Value, e.Version)
	}
	require.Equal(t, want, got, "the state at revision %d (index %d)", info.Revision, info.AppliedIndex)
	require.Equal(t, uint64(len(want)), info.KeyCount)
}

// overwriter puts values over a few keys, remembering the revision of each
// write.
type overwriter struct {
	kv   apipb.KVClient
	mu   sync.Mutex
	puts []struct {
		key, value string
		rev        uint64
	}
}

func (w *overwriter) put(t *testing.T) error {
	n := w.count()
	key, value := fmt.Sprintf("w/%d", n%7), fmt.Sprintf("value %d", n)
	resp, err := w.kv.Put(ctx(t), &apipb.PutRequest{Key: []byte(key), Value: []byte(value)})
	if err != nil {
		return fmt.Errorf("put %d: %w", n, err)
	}
	if resp.Version == 0 {
		return errors.New("a put without a version")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.puts = append(w.puts, struct {
		key, value string
		rev        uint64
	}{key, value, resp.Version})
	return nil
}

func (w *overwriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.puts)
}

// stateAt adds to state the keys as they were at revision rev, and counts
// the writes at or below it and above it.
func (w *overwriter) stateAt(rev uint64, state map[string]string) (included, excluded int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.puts {
		if p.rev > rev {
			excluded++
			continue
		}
		included++
		state[p.key] = digest([]byte(p.value), p.rev)
	}
	return included, excluded
}

// digest names a value and version briefly, so that a mismatch of large
// values prints readably.
func digest(value []byte, version uint64) string {
	return fmt.Sprintf("%d bytes %x @%d", len(value), sha256.Sum256(value), version)
}

// openFilesUnder is the paths under dir of the files this process (the
// member is in it) has open, as Linux names them: an unlinked one ends in
// " (deleted)". Elsewhere it is empty.
func openFilesUnder(t *testing.T, dir string) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, fd := range fds {
		// A descriptor closed since the listing has no link: skip it.
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			out = append(out, target)
		}
	}
	slices.Sort(out)
	return out
}

// listFiles is every file under dir, by path, with its size.
func listFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[path] = fi.Size()
		return nil
	})
	require.NoError(t, err)
	return out
}
