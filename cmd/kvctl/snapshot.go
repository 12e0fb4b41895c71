package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/therealutkarshpriyadarshi/keyval/api/backup"
)

// snapshotJSON describes a backup file, for both snapshot commands.
type snapshotJSON struct {
	File      string `json:"file"`
	Endpoint  string `json:"endpoint,omitempty"` // save only: the member that made it
	Index     uint64 `json:"index"`
	Revision  uint64 `json:"revision"`
	Keys      uint64 `json:"keys"`
	Sessions  uint64 `json:"sessions"`
	DataBytes uint64 `json:"data_bytes"`
	FileBytes int64  `json:"file_bytes"`
	SHA256    string `json:"sha256"`
	NodeID    uint64 `json:"node_id,omitempty"`    // status only
	ClusterID string `json:"cluster_id,omitempty"` // status only
	Created   string `json:"created,omitempty"`    // status only, RFC 3339
}

func (a *app) snapshotCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Back up the cluster's state to a file (save), or describe such a file (status)",
		Long: `snapshot save FILE asks a member for a consistent copy of the cluster's
key-value state (including every write acknowledged before the command) and
writes it to FILE as a checksummed backup; keyvald --restore FILE starts a new
cluster from it. snapshot status FILE checks a backup and describes it.`,
	}
	return commandGroup(cmd, a.snapshotSaveCommand(), a.snapshotStatusCommand())
}

func (a *app) snapshotSaveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent snapshot of the cluster's state to FILE",
		Long: `save fetches a point-in-time snapshot of the key-value state from a member,
checks its SHA-256 as it arrives, and writes FILE atomically (a temporary file,
fsync, rename): FILE is either the whole verified backup or untouched. The
snapshot includes every write acknowledged before the command started.
--timeout covers the whole download: raise it for large states.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			res, err := s.c.SaveSnapshot(s.ctx, args[0])
			if err != nil {
				return a.failure(err)
			}
			if a.output == "json" {
				return a.writeJSON(snapshotJSON{File: args[0], Endpoint: res.Endpoint, Index: res.AppliedIndex, Revision: res.Revision,
					Keys: res.Keys, Sessions: res.Sessions, DataBytes: res.DataBytes, FileBytes: res.FileBytes, SHA256: res.SHA256})
			}
			fmt.Fprintf(a.stdout, "saved %s from %s: index %d, revision %d, %d keys, %d bytes, sha256 %s\n",
				args[0], res.Endpoint, res.AppliedIndex, res.Revision, res.Keys, res.FileBytes, res.SHA256)
			return nil
		},
	}
}

func (a *app) snapshotStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status FILE",
		Short: "Check a backup file and print its index, size, key count and checksum",
		Long: `status reads FILE whole, checks its SHA-256, and prints what it holds. It
talks to no member. Exit 1 if the file is unreadable or damaged.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := backup.Open(args[0])
			if err != nil {
				return &exitError{code: exitFailed, msg: err.Error()}
			}
			defer b.Close()
			in := b.Info
			out := snapshotJSON{File: args[0], Index: in.AppliedIndex, Revision: in.Revision, Keys: in.KeyCount,
				Sessions: in.SessionCount, DataBytes: in.Size, FileBytes: b.Size, SHA256: b.Sum.String(),
				NodeID: in.NodeId, ClusterID: in.ClusterId}
			if in.CreatedUnixNano != 0 {
				out.Created = time.Unix(0, in.CreatedUnixNano).UTC().Format(time.RFC3339)
			}
			if a.output == "json" {
				return a.writeJSON(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			for _, row := range [][2]string{
				{"file", out.File},
				{"index", fmt.Sprint(out.Index)},
				{"revision", fmt.Sprint(out.Revision)},
				{"keys", fmt.Sprint(out.Keys)},
				{"sessions", fmt.Sprint(out.Sessions)},
				{"size", fmt.Sprintf("%d bytes (state %d bytes)", out.FileBytes, out.DataBytes)},
				{"sha256", out.SHA256},
				{"made by", fmt.Sprintf("node %d of cluster %s", out.NodeID, out.ClusterID)},
				{"created", out.Created},
			} {
				fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
			}
			return tw.Flush()
		},
	}
}
