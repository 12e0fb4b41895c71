package disk

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func receive(t *testing.T, s *SnapshotStore, index uint64) {
	t.Helper()
	w, err := s.CreateReceived(snapMeta(index, 1))
	must(t, err)
	_, err = w.Write(snapData(index, 100))
	must(t, err)
	must(t, w.Commit())
}

func wantNames(t *testing.T, m *MemFS, want ...string) {
	t.Helper()
	got, err := m.ReadDir("/n/snap")
	must(t, err)
	if !slices.Equal(got, want) {
		t.Fatalf("snapshot directory holds %v, want %v", got, want)
	}
}

// TestReceivedSnapshotsKeptApart: a received snapshot is not in use (not
// listed, loaded or counted among the kept) and prunes nothing until it is
// promoted; pruning at an index drops the received ones at or below it,
// and DropReceived the rest.
func TestReceivedSnapshotsKeptApart(t *testing.T) {
	m := NewMemFS(rand.New(rand.NewPCG(1, 1)))
	s, err := NewSnapshotStore(m, "/n/snap", 2)
	must(t, err)
	must(t, saveSnapshot(t, s, snapMeta(10, 1), snapData(10, 100)))
	must(t, saveSnapshot(t, s, snapMeta(20, 1), snapData(20, 100)))
	for _, i := range []uint64{25, 30, 40, 50} {
		receive(t, s, i)
	}
	own := []string{snapName(10, 1), snapName(20, 1)}
	inUse, err := s.List()
	must(t, err)
	if !slices.Equal(inUse, own) {
		t.Fatalf("in use: %v, want only the node's own %v", inUse, own)
	}
	if snap, _, err := s.Load(); err != nil || snap.Meta.Index != 20 {
		t.Fatalf("Load: %v, %v; want the node's own snapshot at 20", snap, err)
	} else {
		snap.Close()
	}

	must(t, s.Promote(snapMeta(30, 1)))
	must(t, s.Promote(snapMeta(30, 1))) // again: already in use
	must(t, s.Prune(30))
	wantNames(t, m, snapName(20, 1), snapName(30, 1), snapName(40, 1)+receivedExt, snapName(50, 1)+receivedExt)

	must(t, s.DropReceived())
	wantNames(t, m, snapName(20, 1), snapName(30, 1))

	// A crash while one was being written leaves a temporary file, which
	// reopening removes.
	f, err := m.Create("/n/snap/" + snapName(60, 1) + receivedExt + tmpExt)
	must(t, err)
	must(t, f.Close())
	_, err = NewSnapshotStore(m, "/n/snap", 2)
	must(t, err)
	wantNames(t, m, snapName(20, 1), snapName(30, 1))
}
