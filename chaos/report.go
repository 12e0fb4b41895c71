package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// OpCounts counts client operations by outcome: answered (ok), certainly
// without effect (failed: reads that got no answer, refused writes), and
// writes whose outcome the client never learned (unknown).
type OpCounts struct {
	OK      int `json:"ok"`
	Failed  int `json:"failed"`
	Unknown int `json:"unknown"`
}

func (c *OpCounts) add(op lin.Op) {
	switch op.Status {
	case lin.Returned, lin.Resolved:
		c.OK++
	case lin.Dropped:
		c.Failed++
	default: // unknown or still pending
		c.Unknown++
	}
}

// notChecked is the verdict of a run cut short before the judging.
const notChecked = "not checked"

// Report is everything a run found, for people (Text) and scripts (JSON).
type Report struct {
	Seed     int64         `json:"seed"`
	Nodes    int           `json:"nodes"`
	Duration time.Duration `json:"duration"`
	Elapsed  time.Duration `json:"elapsed"`
	Hosts    string        `json:"hosts"`
	Nemeses  []string      `json:"nemeses"`
	// Skipped are nemeses asked for but impossible here (no namespaces).
	Skipped          []string `json:"skipped,omitempty"`
	Schedule         []Step   `json:"schedule"`
	SnapshotInterval uint64   `json:"snapshot_interval"`
	CatchUpEntries   uint64   `json:"snapshot_catchup_entries"`

	Ops       OpCounts            `json:"ops"`
	OpsByKind map[string]OpCounts `json:"ops_by_kind"`
	// Faults counts the faults injected, by kind and by "kind/variant".
	Faults        map[string]int `json:"faults"`
	FaultVariants map[string]int `json:"fault_variants"`

	// NodeIDs is each node's Raft id at the end, by index (i+1 unless the
	// membership nemesis replaced it).
	NodeIDs []uint64 `json:"node_ids"`

	LeaderElections int    `json:"leader_elections"`
	LeaderChanges   int    `json:"leader_changes"`
	FinalTerm       uint64 `json:"final_term"`

	Verdict         string   `json:"linearizability_verdict"`
	Linearizability string   `json:"linearizability"`
	IllegalKeys     []string `json:"illegal_keys,omitempty"`
	// AckedChanges counts acknowledged writes that changed the store.
	AckedChanges int          `json:"acked_changes"`
	Lost         []Loss       `json:"lost_writes"`
	Divergent    []Divergence `json:"divergent,omitempty"`
	// Watch is the watch workload's result; its problems are also in
	// Problems.
	Watch WatchReport `json:"watch"`
	// Lock is the lock workload's result; its problems are also in
	// Problems.
	Lock LockReport `json:"lock"`
	// Problems are everything else that fails the run: a member that
	// crashed or did not stop cleanly, no progress after healing, a fault
	// that could not be carried out, a final read that failed.
	Problems []string `json:"problems,omitempty"`

	OutDir        string   `json:"out_dir"`
	Visualization string   `json:"visualization,omitempty"`
	History       string   `json:"history,omitempty"`
	Events        string   `json:"events,omitempty"`
	Logs          []string `json:"logs"`

	Interrupted bool `json:"interrupted,omitempty"`
	Pass        bool `json:"pass"`
}

// countOps fills the operation counts from the history.
func (r *Report) countOps(h lin.History) {
	r.Ops = OpCounts{}
	r.OpsByKind = map[string]OpCounts{}
	for _, op := range h.Ops {
		r.Ops.add(op)
		c := r.OpsByKind[op.Input.Kind.String()]
		c.add(op)
		r.OpsByKind[op.Input.Kind.String()] = c
	}
}

// decide sets Pass: linearizable, nothing lost, replicas agree, no
// problems, not interrupted.
func (r *Report) decide() {
	r.Pass = !r.Interrupted && r.Verdict == lin.Linearizable.String() && len(r.Lost) == 0 &&
		len(r.Divergent) == 0 && len(r.Problems) == 0
}

// Text writes the summary a person reads at the end of a run.
func (r *Report) Text(w io.Writer) {
	verdict := "PASS"
	switch {
	case r.Interrupted:
		verdict = "INTERRUPTED (not judged)"
	case !r.Pass:
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n== kvchaos: %s ==\n", verdict)
	fmt.Fprintf(w, "seed %d, %d nodes, %v planned (%v elapsed)\n", r.Seed, r.Nodes, r.Duration, r.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "hosts: %s\n", r.Hosts)
	fmt.Fprintf(w, "keyvald --snapshot-interval %d --snapshot-catchup-entries %d\n", r.SnapshotInterval, r.CatchUpEntries)
	fmt.Fprintf(w, "nemeses: %s", strings.Join(r.Nemeses, ", "))
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, " (skipped, need network namespaces: %s)", strings.Join(r.Skipped, ", "))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "operations: %d ok, %d failed, %d unknown\n", r.Ops.OK, r.Ops.Failed, r.Ops.Unknown)
	for _, kind := range []lin.OpKind{lin.OpPut, lin.OpGet, lin.OpDelete, lin.OpCAS} {
		c := r.OpsByKind[kind.String()]
		fmt.Fprintf(w, "  %-6s %6d ok %5d failed %5d unknown\n", kind, c.OK, c.Failed, c.Unknown)
	}
	fmt.Fprintf(w, "faults injected: %d", sumCounts(r.Faults))
	for _, kind := range sortedMapKeys(r.Faults) {
		fmt.Fprintf(w, "\n  %-16s %3d  (", kind, r.Faults[kind])
		var parts []string
		for _, kv := range sortedMapKeys(r.FaultVariants) {
			if k, v, _ := strings.Cut(kv, "/"); k == kind {
				parts = append(parts, fmt.Sprintf("%s %d", v, r.FaultVariants[kv]))
			}
		}
		fmt.Fprintf(w, "%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "leader changes: %d (%d elections observed, final term %d)\n", r.LeaderChanges, r.LeaderElections, r.FinalTerm)
	if len(r.NodeIDs) > 0 {
		ids := make([]string, len(r.NodeIDs))
		for i, id := range r.NodeIDs {
			ids[i] = fmt.Sprintf("%s=%d", nodeName(i), id)
		}
		fmt.Fprintf(w, "raft ids at the end: %s\n", strings.Join(ids, " "))
	}
	if r.Interrupted || r.Verdict == notChecked {
		fmt.Fprintln(w, "linearizable: not checked (the run was cut short); lost writes: not checked")
	} else {
		yes := "no"
		if r.Verdict == lin.Linearizable.String() {
			yes = "yes"
		}
		fmt.Fprintf(w, "linearizable: %s\nporcupine: %s\n", yes, r.Linearizability)
		fmt.Fprintf(w, "lost acknowledged writes: %d (of %d acknowledged changes)\n", len(r.Lost), r.AckedChanges)
		for _, l := range r.Lost {
			fmt.Fprintf(w, "  %v: %s\n", l.Write, l.Why)
		}
		if len(r.Divergent) == 0 {
			fmt.Fprintf(w, "replicas agree: yes (%d nodes' local reads match the final reads)\n", r.Nodes)
		} else {
			fmt.Fprintf(w, "replicas agree: NO\n")
			for _, d := range r.Divergent {
				fmt.Fprintf(w, "  %v\n", d)
			}
		}
		ok := "yes"
		if len(r.Watch.Problems) > 0 {
			ok = "NO (see problems)"
		}
		fmt.Fprintf(w, "watch complete and in order: %s (%d events through revision %d)\n", ok, r.Watch.Events, r.Watch.Through)
		ok = "yes"
		if len(r.Lock.Problems) > 0 {
			ok = "NO (see problems)"
		}
		fmt.Fprintf(w, "lock fenced: %s (taken %d times; %d guarded writes took effect, %d refused by the fence; %d tried after a pause past the lease)\n",
			ok, r.Lock.Acquired, r.Lock.Fenced, r.Lock.Refused, r.Lock.Stale)
	}
	if len(r.Problems) == 0 {
		fmt.Fprintln(w, "problems: none")
	} else {
		fmt.Fprintf(w, "problems: %d\n", len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	if r.Visualization != "" {
		fmt.Fprintf(w, "visualization: %s\n", r.Visualization)
	}
	if r.History != "" {
		fmt.Fprintf(w, "history: %s\n", r.History)
	}
	if r.Events != "" {
		fmt.Fprintf(w, "events: %s\n", r.Events)
	}
	fmt.Fprintf(w, "node logs: %s\n", strings.Join(r.Logs, " "))
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sortedMapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// writeJSON writes v to path, indented for people (the report), or one
// line for the large files (history, writes) that tools read.
func writeJSON(path string, v any, indent bool) error {
	var b []byte
	var err error
	if indent {
		b, err = json.MarshalIndent(v, "", "  ")
	} else {
		b, err = json.Marshal(v)
	}
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
