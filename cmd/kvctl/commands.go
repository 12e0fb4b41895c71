package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/client"
)

func (a *app) putCommand() *cobra.Command {
	var fromFile string
	cmd := &cobra.Command{
		Use:   "put KEY {VALUE | - | --from-file FILE}",
		Short: "Set KEY to VALUE (- reads it from stdin, --from-file from a file)",
		Args:  valueArgs(1, &fromFile),
		RunE: func(cmd *cobra.Command, args []string) error {
			value, err := a.value(args, 1, fromFile)
			if err != nil {
				return err
			}
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			res, err := s.c.Put(s.ctx, []byte(args[0]), value)
			if err != nil {
				return a.failure(err)
			}
			if a.output == "json" {
				return a.writeJSON(putJSON{Key: args[0], Version: res.Version, Existed: res.Existed, Revision: res.Revision})
			}
			fmt.Fprintf(a.stdout, "OK (version %d)\n", res.Version)
			return nil
		},
	}
	addFromFileFlag(cmd, &fromFile)
	return cmd
}

func (a *app) getCommand() *cobra.Command {
	var serializable bool
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print KEY's value (exit 1 if the key is missing)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			res, err := s.c.Get(s.ctx, []byte(args[0]), readOpts(serializable)...)
			if err != nil {
				return a.failure(err)
			}
			if a.output == "json" {
				out := getJSON{Key: args[0], Found: res.Found, Version: res.Version, Revision: res.Revision}
				if res.Found {
					out.Value, out.ValueBase64 = textOrBase64(res.Value)
				}
				if err := a.writeJSON(out); err != nil {
					return err
				}
			} else if res.Found {
				fmt.Fprintf(a.stdout, "%s\n", res.Value)
			}
			if !res.Found {
				return &exitError{code: exitFailed, msg: fmt.Sprintf("key %q not found", args[0])}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&serializable, "serializable", false, "read the answering member's local state: faster, possibly stale")
	return cmd
}

func (a *app) deleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete KEY (deleting a missing key is not an error)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			res, err := s.c.Delete(s.ctx, []byte(args[0]))
			if err != nil {
				return a.failure(err)
			}
			if a.output == "json" {
				return a.writeJSON(deleteJSON{Key: args[0], Existed: res.Existed, Revision: res.Revision})
			}
			if res.Existed {
				fmt.Fprintf(a.stdout, "deleted %q\n", args[0])
			} else {
				fmt.Fprintf(a.stdout, "key %q did not exist; nothing deleted\n", args[0])
			}
			return nil
		},
	}
}

func (a *app) casCommand() *cobra.Command {
	var fromFile string
	cmd := &cobra.Command{
		Use:   "cas KEY EXPECTED_VERSION {VALUE | - | --from-file FILE}",
		Short: "Set KEY to VALUE only if KEY is at EXPECTED_VERSION (0: only if absent)",
		Long: `cas sets KEY to VALUE only if the key's version is EXPECTED_VERSION; 0 means
the key must be absent. A key's version is printed by put, get and list. On a
mismatch nothing is written, the key's current version is reported, and kvctl
exits with 1. VALUE - reads the value from stdin; --from-file FILE reads it
from FILE.`,
		Args: valueArgs(2, &fromFile),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			expected, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil {
				return usageErrorf("EXPECTED_VERSION %q is not a version number (0, 1, 2, ...)", args[1])
			}
			value, err := a.value(args, 2, fromFile)
			if err != nil {
				return err
			}
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			res, err := s.c.CompareAndSwap(s.ctx, []byte(key), expected, value)
			if err != nil {
				return a.failure(err)
			}
			if a.output == "json" {
				out := casJSON{Key: key, Succeeded: res.Succeeded, Version: res.Version, Revision: res.Revision}
				if !res.Succeeded {
					out.Exists = &res.Exists
					if res.Exists {
						out.CurrentValue, out.CurrentValueBase64 = textOrBase64(res.CurrentValue)
					}
				}
				if err := a.writeJSON(out); err != nil {
					return err
				}
			} else if res.Succeeded {
				fmt.Fprintf(a.stdout, "OK (version %d)\n", res.Version)
			}
			if !res.Succeeded {
				return &exitError{code: exitFailed, msg: casFailure(key, expected, res)}
			}
			return nil
		},
	}
	addFromFileFlag(cmd, &fromFile)
	return cmd
}

// maxValueInput bounds a value read from stdin or a file: far above any
// server's value limit, low enough that a wrong file or an endless pipe
// cannot exhaust kvctl's memory.
const maxValueInput = 64 << 20

func addFromFileFlag(cmd *cobra.Command, fromFile *string) {
	cmd.Flags().StringVar(fromFile, "from-file", "", "read the value from this file instead of the command line (for large or binary values)")
}

// valueArgs checks the arguments of a command whose value, the last
// argument, is given inline, as - (stdin), or by --from-file: n arguments
// come before the value.
func valueArgs(n int, fromFile *string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if *fromFile != "" {
			if len(args) != n {
				return usageErrorf("%s with --from-file takes %d argument(s) before it, got %d: usage: %s", cmd.Name(), n, len(args), cmd.UseLine())
			}
			return nil
		}
		return exactArgs(n+1)(cmd, args)
	}
}

// value returns the command's value: args[i] itself, stdin if args[i] is
// "-", or the contents of fromFile.
func (a *app) value(args []string, i int, fromFile string) ([]byte, error) {
	var r io.Reader
	var from string
	switch {
	case fromFile != "":
		f, err := os.Open(fromFile)
		if err != nil {
			return nil, usageErrorf("--from-file: %v", err)
		}
		defer f.Close()
		r, from = f, fromFile
	case args[i] == "-":
		r, from = a.stdin, "stdin"
	default:
		return []byte(args[i]), nil
	}
	v, err := io.ReadAll(io.LimitReader(r, maxValueInput+1))
	if err != nil {
		return nil, &exitError{code: exitFailed, msg: fmt.Sprintf("reading the value from %s: %v", from, err)}
	}
	if len(v) > maxValueInput {
		return nil, usageErrorf("the value from %s is over %d MiB, more than kvctl reads", from, maxValueInput>>20)
	}
	return v, nil
}

// casFailure explains a failed CAS in the key's terms.
func casFailure(key string, expected uint64, res client.CASResult) string {
	switch {
	case !res.Exists:
		return fmt.Sprintf("cas failed: key %q does not exist, expected version %d (use 0 to create it)", key, expected)
	case expected == 0:
		return fmt.Sprintf("cas failed: key %q already exists at version %d, expected it absent (version 0)", key, res.Version)
	default:
		return fmt.Sprintf("cas failed: key %q is at version %d, expected %d", key, res.Version, expected)
	}
}

func (a *app) listCommand() *cobra.Command {
	var limit int
	var serializable bool
	cmd := &cobra.Command{
		Use:   "list [PREFIX]",
		Short: "List keys starting with PREFIX (all keys without one), in byte order",
		Long: `list prints the keys starting with PREFIX, in byte order, with their versions
and values: every key unless --limit is given. Long listings are fetched page
by page; each page is a separate read, so keys written meanwhile may or may
not appear.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("list takes at most one PREFIX, got %d arguments: usage: %s", len(args), cmd.UseLine())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return usageErrorf("invalid --limit %d: use 0 (no limit) or more", limit)
			}
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			res, err := s.c.List(s.ctx, []byte(prefix), limit, readOpts(serializable)...)
			if err != nil {
				return a.failure(err)
			}
			if a.output == "json" {
				out := listJSON{Prefix: prefix, KVs: make([]kvJSON, len(res.KVs)), More: res.More, Revision: res.Revision}
				for i, kv := range res.KVs {
					out.KVs[i] = toKVJSON(kv)
				}
				return a.writeJSON(out)
			}
			if len(res.KVs) == 0 {
				fmt.Fprintf(a.stderr, "no keys with prefix %q\n", prefix)
				return nil
			}
			a.writeListTable(res.KVs)
			if res.More {
				fmt.Fprintf(a.stderr, "more keys follow; raise --limit (now %d) or use 0 for all\n", limit)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "list at most this many keys (0: all)")
	cmd.Flags().BoolVar(&serializable, "serializable", false, "read the answering member's local state: faster, possibly stale")
	return cmd
}

func (a *app) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show every member in --endpoints: id, address, role, term, commit, applied, leader",
		Long: `status asks every member in --endpoints about itself, at once, and prints one
row per member; a member that does not answer is shown as unreachable. It
exits with 0 if at least one member answered and 3 if none did.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			defer s.close()
			all := s.c.StatusAll(s.ctx)
			answered := 0
			for _, st := range all {
				if st.Err == nil {
					answered++
				}
			}
			if a.output == "json" {
				out := statusJSON{Members: make([]memberJSON, len(all))}
				for i, st := range all {
					out.Members[i] = toMemberJSON(st)
				}
				if err := a.writeJSON(out); err != nil {
					return err
				}
			} else {
				a.writeStatusTable(all)
			}
			for _, st := range all {
				if st.Err != nil && a.output != "json" {
					fmt.Fprintf(a.stderr, "%s: %s\n", st.Endpoint, describe(st.Err))
				}
			}
			if answered == 0 {
				return &exitError{code: exitUnavailable, msg: noMemberMessage(s.c.Endpoints())}
			}
			return nil
		},
	}
}

func readOpts(serializable bool) []client.ReadOption {
	if serializable {
		return []client.ReadOption{client.Serializable}
	}
	return nil
}

// failure turns a client error into an exit code and a message a person can
// act on.
func (a *app) failure(err error) error {
	endpoints := a.cleanEndpoints
	var refused *client.StatusError
	switch {
	case errors.As(err, &refused):
		return &exitError{code: exitFailed, msg: fmt.Sprintf("%s refused by %s: %s", refused.Op, refused.Endpoint, refused.Message)}
	case errors.Is(err, client.ErrOutcomeUnknown):
		return &exitError{code: exitUnavailable, msg: fmt.Sprintf("the write may or may not have been applied: %v", err)}
	case errors.Is(err, client.ErrUnavailable):
		var ue *client.UnavailableError
		if !errors.As(err, &ue) {
			return &exitError{code: exitUnavailable, msg: noMemberMessage(endpoints)}
		}
		msg := noMemberMessage(endpoints)
		if len(ue.Answered) > 0 {
			msg = ue.Diagnosis() + ": start the members that are down (kvctl status shows which)"
		}
		return &exitError{code: exitUnavailable, msg: msg + "\nlast error: " + describe(ue.Last)}
	case errors.Is(err, context.DeadlineExceeded):
		return &exitError{code: exitUnavailable, msg: fmt.Sprintf(
			"timed out after %v waiting for the cluster at %s: is the cluster running and does it have a leader? check with kvctl status, or raise --timeout\n%v",
			a.timeout, strings.Join(endpoints, ", "), err)}
	case errors.Is(err, context.Canceled):
		return &exitError{code: exitUnavailable, msg: "interrupted"}
	default:
		return &exitError{code: exitFailed, msg: err.Error()}
	}
}

func noMemberMessage(endpoints []string) string {
	return fmt.Sprintf("no member answered at %s: is the cluster running? try make cluster-start",
		strings.Join(endpoints, ", "))
}

// describe returns the gist of a gRPC error: its status message, without
// the "rpc error: code = ... desc =" wrapping.
func describe(err error) string {
	var ue *client.UnavailableError
	if errors.As(err, &ue) {
		err = ue.Last
	}
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}
