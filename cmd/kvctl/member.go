package main

import (
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/therealutkarshpriyadarshi/keyval/client"
)

type clusterMemberJSON struct {
	ID          uint64 `json:"id"`
	PeerAddress string `json:"peer_address"`
	Learner     bool   `json:"learner"`
	Leader      bool   `json:"leader"`
	Match       uint64 `json:"match,omitempty"`
}

type membersJSON struct {
	ClusterID string              `json:"cluster_id,omitempty"`
	LeaderID  uint64              `json:"leader_id,omitempty"`
	Index     uint64              `json:"index,omitempty"`
	Members   []clusterMemberJSON `json:"members"`
}

func (a *app) memberCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "List, add, promote and remove cluster members",
		Long: `member changes the cluster's membership while it serves, one change at a time.

Grow: add the new node as a learner, start it with keyvald --join, wait until
it has caught up (member list shows its match), then promote it to voter.
Shrink: remove a member (also the leader: it hands leadership over first).
Replace: add the new node, promote it, then remove the old one. A removed
node stops; its id is never used again. See docs/membership.md.`,
	}
	return commandGroup(cmd, a.memberListCommand(), a.memberAddLearnerCommand(), a.memberPromoteCommand(), a.memberRemoveCommand())
}

func (a *app) memberListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Show every member: id, peer address, voter or learner, and the leader",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			ms, err := s.c.MemberList(s.ctx)
			if err != nil {
				return a.failure(err)
			}
			return a.writeMembers(ms)
		},
	}
}

func (a *app) memberAddLearnerCommand() *cobra.Command {
	var id uint64
	var peer string
	cmd := &cobra.Command{
		Use:   "add-learner --id ID --peer-addr HOST:PORT",
		Short: "Add a non-voting member; then start it with keyvald --join",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == 0 || peer == "" {
				return usageErrorf("member add-learner needs --id (a new positive id) and --peer-addr (where members reach it)")
			}
			return a.memberChange(cmd, func(s *session) (client.Members, error) { return s.c.MemberAddLearner(s.ctx, id, peer) })
		},
	}
	cmd.Flags().Uint64Var(&id, "id", 0, "the new member's id (never one used before)")
	cmd.Flags().StringVar(&peer, "peer-addr", "", "the new member's peer address (its keyvald --listen-peer)")
	return cmd
}

func (a *app) memberPromoteCommand() *cobra.Command {
	var id uint64
	cmd := &cobra.Command{
		Use:   "promote --id ID",
		Short: "Make a caught-up learner a voter",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == 0 {
				return usageErrorf("member promote needs --id")
			}
			return a.memberChange(cmd, func(s *session) (client.Members, error) { return s.c.MemberPromote(s.ctx, id) })
		},
	}
	cmd.Flags().Uint64Var(&id, "id", 0, "the learner's id")
	return cmd
}

func (a *app) memberRemoveCommand() *cobra.Command {
	var id uint64
	cmd := &cobra.Command{
		Use:   "remove --id ID",
		Short: "Remove a member (voter, learner or the leader); the removed node stops",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == 0 {
				return usageErrorf("member remove needs --id")
			}
			return a.memberChange(cmd, func(s *session) (client.Members, error) { return s.c.MemberRemove(s.ctx, id) })
		},
	}
	cmd.Flags().Uint64Var(&id, "id", 0, "the member's id")
	return cmd
}

func (a *app) memberChange(cmd *cobra.Command, change func(*session) (client.Members, error)) error {
	s, err := a.connect(cmd)
	if err != nil {
		return err
	}
	defer s.close()
	ms, err := change(s)
	if err != nil {
		return a.failure(err)
	}
	if a.output != "json" {
		fmt.Fprintf(a.stdout, "OK (committed at index %d)\n", ms.Index)
	}
	return a.writeMembers(ms)
}

func (a *app) writeMembers(ms client.Members) error {
	if a.output == "json" {
		out := membersJSON{ClusterID: ms.ClusterID, LeaderID: ms.LeaderID, Index: ms.Index, Members: []clusterMemberJSON{}}
		for _, m := range ms.Members {
			out.Members = append(out.Members, clusterMemberJSON{ID: m.ID, PeerAddress: m.PeerAddress, Learner: m.Learner,
				Leader: ms.LeaderID != 0 && m.ID == ms.LeaderID, Match: m.Match})
		}
		return a.writeJSON(out)
	}
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tPEER ADDRESS\tROLE\tMATCH")
	for _, m := range ms.Members {
		role := "voter"
		if m.Learner {
			role = "learner"
		}
		if ms.LeaderID != 0 && m.ID == ms.LeaderID {
			role += " (leader)"
		}
		match := "-"
		if ms.LastIndex > 0 {
			match = strconv.FormatUint(m.Match, 10) + "/" + strconv.FormatUint(ms.LastIndex, 10)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", m.ID, m.PeerAddress, role, match)
	}
	return w.Flush()
}
