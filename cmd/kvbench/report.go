package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/therealutkarshpriyadarshi/keyval/cmd/kvbench/stats"
)

// Report is one run: what was asked, what was measured, and the
// circumstances (load average, elections). Its JSON field names are stable:
// scripts such as the cluster benchmark read them.
type Report struct {
	Tool            string   `json:"tool"`
	Op              string   `json:"op"`
	Target          string   `json:"target"`
	Endpoints       []string `json:"endpoints"`
	Clients         int      `json:"clients"`
	Conns           int      `json:"conns"`
	Total           int      `json:"total,omitempty"`
	DurationSeconds float64  `json:"duration_seconds,omitempty"`
	KeySize         int      `json:"key_size"`
	ValSize         int      `json:"val_size"`
	KeySpaceSize    uint64   `json:"key_space_size"`
	SequentialKeys  bool     `json:"sequential_keys"`
	// Unary: one gRPC call per operation (--unary), not the pipeline.
	Unary bool `json:"unary"`
	// Rate is the operations a second offered (--rate; 0: closed loop).
	Rate      float64  `json:"rate,omitempty"`
	ReadRatio *float64 `json:"read_ratio,omitempty"`
	// Interrupted: the run was stopped (Ctrl-C) before it was done.
	Interrupted bool `json:"interrupted"`
	stats.Summary
	// ByOp splits a mix into its gets and puts.
	ByOp        map[string]stats.Summary `json:"by_op,omitempty"`
	LoadAverage LoadAverage              `json:"load_average"`
	Cluster     ClusterChange            `json:"cluster"`
}

// LoadAverage is /proc/loadavg's 1, 5 and 15 minute figures at the start
// and end of the timed run; absent where the system has no /proc.
type LoadAverage struct {
	Start []float64 `json:"start"`
	End   []float64 `json:"end"`
}

// ClusterChange is the leader and the highest term before and after the
// run. TermEnd > TermStart means at least one election happened during it.
type ClusterChange struct {
	LeaderStart uint64 `json:"leader_start"`
	TermStart   uint64 `json:"term_start"`
	LeaderEnd   uint64 `json:"leader_end"`
	TermEnd     uint64 `json:"term_end"`
}

// Elections is how many terms began during the run (each election starts
// a new term; a PreVote that fails does not).
func (c ClusterChange) Elections() uint64 {
	if c.TermEnd > c.TermStart {
		return c.TermEnd - c.TermStart
	}
	return 0
}

// writeJSON prints the report as one indented JSON object.
func (r *Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeText prints the report for people.
func (r *Report) writeText(w io.Writer) error {
	var b strings.Builder
	what := fmt.Sprintf("%d operations", r.Total)
	if r.DurationSeconds > 0 {
		what = fmt.Sprintf("%gs", r.DurationSeconds)
	}
	op := r.Op
	if r.ReadRatio != nil {
		op = fmt.Sprintf("mix (%g%% gets)", 100**r.ReadRatio)
	}
	keys := "random"
	if r.SequentialKeys {
		keys = "sequential"
	}
	fmt.Fprintf(&b, "kvbench: %s, %s, %d clients over %d connections to %s (%s)\n",
		op, what, r.Clients, r.Conns, r.Target, strings.Join(r.Endpoints, ","))
	fmt.Fprintf(&b, "  keys %d B (%s, %d-key space), values %d B\n", r.KeySize, keys, r.KeySpaceSize, r.ValSize)
	if r.Unary {
		fmt.Fprintf(&b, "  one gRPC call per operation (--unary)\n")
	}
	if r.Rate > 0 {
		fmt.Fprintf(&b, "  open loop: %g operations/s offered, latency from each one's scheduled send time (--rate)\n", r.Rate)
	}
	if r.Interrupted {
		fmt.Fprintf(&b, "  INTERRUPTED: the figures cover only the part that ran\n")
	}
	b.WriteString("\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if err := r.Summary.WriteText(w); err != nil {
		return err
	}
	b.Reset()
	if len(r.ByOp) > 0 {
		b.WriteString("\nBy operation:\n")
		names := make([]string, 0, len(r.ByOp))
		for name := range r.ByOp {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			s := r.ByOp[name]
			fmt.Fprintf(&b, "  %-4s %8d ok %6d failed  %9.1f/s  p50 %.3f ms  p99 %.3f ms\n",
				name, s.Requests, s.Errors, s.RequestsPerSec, s.Latency.P50, s.Latency.P99)
		}
	}
	fmt.Fprintf(&b, "\nLoad average: %s at start, %s at end\n", formatLoad(r.LoadAverage.Start), formatLoad(r.LoadAverage.End))
	c := r.Cluster
	fmt.Fprintf(&b, "Cluster: leader %d, term %d at start; leader %d, term %d at end", c.LeaderStart, c.TermStart, c.LeaderEnd, c.TermEnd)
	if n := c.Elections(); n > 0 {
		fmt.Fprintf(&b, " (%d election(s) during the run)", n)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func formatLoad(l []float64) string {
	if len(l) == 0 {
		return "unknown"
	}
	parts := make([]string, len(l))
	for i, x := range l {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(parts, " ")
}

// loadAverage reads the 1, 5 and 15 minute load averages (nil if the
// system does not say).
func loadAverage() []float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	return parseLoadAverage(string(raw))
}

func parseLoadAverage(s string) []float64 {
	fields := strings.Fields(s)
	if len(fields) < 3 {
		return nil
	}
	out := make([]float64, 3)
	for i := range out {
		x, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return nil
		}
		out[i] = x
	}
	return out
}
