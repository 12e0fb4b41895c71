package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/therealutkarshpriyadarshi/keyval/api/backup"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// restoreTerm is the term a restored cluster's log starts in. Every member
// restored from one backup writes the same snapshot (index, term and
// members), so they start as if they had all installed it from a leader.
const restoreTerm = 1

// Restore prepares cfg.DataDir so that New starts this member of a new
// cluster from a backup file (as `kvctl snapshot save` writes): it checks
// the file's SHA-256 and its data, and writes them as the member's
// snapshot, at the backup's applied index, with the members of
// cfg.InitialCluster as the configuration. Keys, values, versions, the
// revision and exactly-once sessions are kept; the log starts after the
// backup's index.
//
// Every member of the new cluster must be restored from the same file.
// The data directory must be empty or missing: Restore never overwrites a
// member's data.
func Restore(cfg Config, backupPath string) error {
	if len(cfg.InitialCluster) == 0 || len(cfg.Join) > 0 {
		return errors.New("restore: a restore starts a new cluster: give its members with --initial-cluster, not --join")
	}
	if _, ok := cfg.InitialCluster[cfg.ID]; !ok {
		return fmt.Errorf("restore: node %d is not in the new cluster %s", cfg.ID, FormatCluster(cfg.InitialCluster))
	}
	if err := cfg.setDefaults(); err != nil {
		return fmt.Errorf("server config: %w", err)
	}
	if err := checkEmpty(cfg.DataDir); err != nil {
		return err
	}
	b, err := backup.Open(backupPath)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer b.Close()
	// The file's checksum vouches for its bytes; this checks that they are
	// a state this build can load, and reads the index from the data
	// itself rather than from the metadata beside it.
	sum, err := kvstore.SummarizeSnapshot(b.Data())
	if err != nil {
		return fmt.Errorf("restore: backup %s holds no usable state: %w", backupPath, err)
	}
	if sum.AppliedIndex == 0 {
		return fmt.Errorf("restore: backup %s is of a state with nothing applied; start the cluster without --restore", backupPath)
	}
	if sum.AppliedIndex != b.Info.AppliedIndex {
		return fmt.Errorf("restore: backup %s: %w: its metadata says index %d, its data %d", backupPath, backup.ErrCorrupt, b.Info.AppliedIndex, sum.AppliedIndex)
	}
	voters := make([]core.NodeID, 0, len(cfg.InitialCluster))
	for id := range cfg.InitialCluster {
		voters = append(voters, id)
	}
	slices.Sort(voters)
	meta := core.SnapshotMeta{Index: sum.AppliedIndex, Term: restoreTerm, Conf: core.ConfState{Voters: voters}}
	if err := writeRestored(cfg.DataDir, meta, b.Data); err != nil {
		return fmt.Errorf("restore into %s: %w (remove the directory before trying again)", cfg.DataDir, err)
	}
	cfg.Logger.Info("restored from a backup", "node", uint64(cfg.ID), "file", backupPath, "backup", b.Summary(),
		"cluster", FormatCluster(cfg.InitialCluster))
	return nil
}

// writeRestored lays down what a member that installed the snapshot from a
// leader would have: the snapshot file, the state machine loaded from it,
// and a WAL holding the snapshot marker and a hard state committing it.
// The WAL comes last: until it is synced the directory is not a restored
// member (keyvald refuses to restore into it again, and the message says
// to remove it).
func writeRestored(dir string, meta core.SnapshotMeta, data func() io.Reader) error {
	fsys := disk.OSFS{}
	snaps, err := disk.NewSnapshotStore(fsys, filepath.Join(dir, "snap"), 2)
	if err != nil {
		return err
	}
	w, err := snaps.Create(meta)
	if err != nil {
		return err
	}
	// The old cluster's own records (its members' addresses, the ids it
	// removed) do not describe the new cluster: leave them out.
	if _, err := kvstore.CopySnapshot(data(), w, replica.IsMemberRecord); err != nil {
		_ = w.Abort()
		return fmt.Errorf("write snapshot: %w", err)
	}
	if err := w.Commit(); err != nil {
		return err
	}
	written, _, err := snaps.LoadAtMost(meta.Index)
	if err != nil {
		return err
	}
	defer written.Close()
	// The file New opens. Loading it here (rather than leaving the replica
	// to find it behind the snapshot at start) makes the restore whole
	// before the node starts, and spares a "recovered from a crash" warning.
	// Without NoSync, the restore's commit is fsynced.
	store, err := kvstore.OpenBolt(filepath.Join(dir, "state.db"), kvstore.Options{})
	if err != nil {
		return err
	}
	if err := errors.Join(store.Restore(written), store.Close()); err != nil {
		return fmt.Errorf("load the state machine: %w", err)
	}
	wal, err := disk.Create(fsys, filepath.Join(dir, "wal"), disk.Options{})
	if err != nil {
		return err
	}
	err = wal.InstallSnapshot(meta)
	if err == nil {
		err = wal.Append(core.HardState{Term: meta.Term, Commit: meta.Index}, nil)
	}
	if err == nil {
		err = wal.Sync()
	}
	return errors.Join(err, wal.Close())
}

// checkEmpty refuses a data directory that holds anything.
func checkEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore: check data directory: %w", err)
	}
	if len(entries) > 0 {
		names := make([]string, 0, 3)
		for _, e := range entries[:min(len(entries), 3)] {
			names = append(names, e.Name())
		}
		return fmt.Errorf("restore: the data directory %s is not empty (it holds %v): a restore starts a new member and never overwrites one; "+
			"give an empty --data-dir, or drop --restore to start from the data already there", dir, names)
	}
	return nil
}
