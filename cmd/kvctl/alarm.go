package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/therealutkarshpriyadarshi/keyval/client"
)

type alarmJSON struct {
	Type     string `json:"type"`
	MemberID uint64 `json:"member_id"`
	Index    uint64 `json:"index"`
}

type alarmsJSON struct {
	Alarms      []alarmJSON `json:"alarms"`
	StoreBytes  uint64      `json:"store_bytes"`
	QuotaBytes  uint64      `json:"quota_bytes"`
	Sessions    uint64      `json:"sessions"`
	MaxSessions uint64      `json:"max_sessions"`
}

func (a *app) alarmCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "alarm",
		Short: "List and disarm the cluster's alarms (NOSPACE: the storage quota is reached)",
		Long: `alarm lists and disarms alarms. A member raises NOSPACE when a write would take
the store past its --quota-backend-bytes; while it is raised every member
refuses puts and compare-and-swaps (deletes go on). Delete keys to free space,
then disarm it; disarmed while still over the quota, it is raised again by the
next write that would pass it. See docs/operations.md.`,
	}
	return commandGroup(cmd, a.alarmListCommand(), a.alarmDisarmCommand())
}

func (a *app) alarmListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Show the raised alarms, the store's size against its quota, and the open sessions",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			al, err := s.c.AlarmList(s.ctx)
			if err != nil {
				return a.failure(err)
			}
			return a.writeAlarms(al)
		},
	}
}

func (a *app) alarmDisarmCommand() *cobra.Command {
	typ := "NOSPACE"
	cmd := &cobra.Command{
		Use:   "disarm [--type NOSPACE]",
		Short: "Clear an alarm on every member (free space first)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			was, err := s.c.AlarmDisarm(s.ctx, typ)
			if err != nil {
				return a.failure(err)
			}
			if a.output == "json" {
				out := struct {
					Disarmed *alarmJSON `json:"disarmed"`
				}{}
				if was != nil {
					out.Disarmed = &alarmJSON{Type: was.Type, MemberID: was.MemberID, Index: was.Index}
				}
				return a.writeJSON(out)
			}
			if was == nil {
				fmt.Fprintf(a.stdout, "OK (no %s alarm was raised)\n", typ)
				return nil
			}
			fmt.Fprintf(a.stdout, "OK (disarmed %s, raised by member %d at index %d)\n", was.Type, was.MemberID, was.Index)
			return nil
		},
	}
	cmd.Flags().StringVar(&typ, "type", typ, "the alarm to disarm")
	return cmd
}

func (a *app) writeAlarms(al client.Alarms) error {
	if a.output == "json" {
		out := alarmsJSON{Alarms: []alarmJSON{}, StoreBytes: al.StoreBytes, QuotaBytes: al.QuotaBytes, Sessions: al.Sessions, MaxSessions: al.MaxSessions}
		for _, x := range al.Alarms {
			out.Alarms = append(out.Alarms, alarmJSON{Type: x.Type, MemberID: x.MemberID, Index: x.Index})
		}
		return a.writeJSON(out)
	}
	if len(al.Alarms) == 0 {
		fmt.Fprintln(a.stdout, "no alarm raised")
	} else {
		w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ALARM\tRAISED BY\tAT INDEX")
		for _, x := range al.Alarms {
			fmt.Fprintf(w, "%s\tmember %d\t%d\n", x.Type, x.MemberID, x.Index)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stdout, "store: %d of %d bytes (--quota-backend-bytes of %s); sessions: %d of %d\n",
		al.StoreBytes, al.QuotaBytes, al.Endpoint, al.Sessions, al.MaxSessions)
	return nil
}
