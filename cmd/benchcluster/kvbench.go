package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/cmd/kvbench/stats"
)

// benchResult is the part of kvbench's --json report the driver uses.
type benchResult struct {
	stats.Summary
	Op          string  `json:"op"`
	Target      string  `json:"target"`
	Clients     int     `json:"clients"`
	Conns       int     `json:"conns"`
	Interrupted bool    `json:"interrupted"`
	LoadAverage loadAvg `json:"load_average"`
	Cluster     struct {
		LeaderStart uint64 `json:"leader_start"`
		TermStart   uint64 `json:"term_start"`
		LeaderEnd   uint64 `json:"leader_end"`
		TermEnd     uint64 `json:"term_end"`
	} `json:"cluster"`
}

type loadAvg struct {
	Start []float64 `json:"start"`
	End   []float64 `json:"end"`
}

// benchRun is one run of a load generator: kvbench, or etcd's benchmark
// tool.
type benchRun struct {
	bin      string
	args     []string
	progress io.Writer // the tool's stderr (kvbench's progress lines), or nil
	// parse reads the tool's report from its stdout; nil for kvbench's
	// --json report.
	parse  func([]byte) (*benchResult, error)
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
	// cpu is the CPU time (user and system) the tool used, known once it
	// has exited.
	cpu time.Duration
}

// commandLine is the command as a person would type it.
func (r *benchRun) commandLine() string { return shellQuote(r.bin, r.args) }

// start launches the tool; the context kills it if cancelled.
func (r *benchRun) start(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, r.bin, r.args...)
	cmd.SysProcAttr = childAttrs()
	cmd.Stdout = &r.stdout
	cmd.Stderr = &r.stderr
	if r.progress != nil {
		cmd.Stderr = io.MultiWriter(&r.stderr, r.progress)
	}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", r.commandLine(), err)
	}
	track(cmd.Process)
	r.cmd = cmd
	return nil
}

// wait waits for the tool and reads its report. kvbench exits 1 when some
// operations failed, etcd's tool lists them in its report: either way the
// report is still returned (with its error count) and so is an error
// saying so.
func (r *benchRun) wait() (*benchResult, error) {
	err := r.cmd.Wait()
	untrack(r.cmd.Process)
	if ps := r.cmd.ProcessState; ps != nil {
		r.cpu = ps.UserTime() + ps.SystemTime()
	}
	parse := r.parse
	var exitErr *exec.ExitError
	if err != nil && !(parse == nil && errors.As(err, &exitErr) && exitErr.ExitCode() == 1) {
		return nil, fmt.Errorf("%s: %w\n%s", r.commandLine(), err, lastLines(r.stderr.String(), 10))
	}
	if parse == nil {
		parse = parseKvbenchJSON
	}
	res, perr := parse(r.stdout.Bytes())
	if perr != nil {
		return nil, fmt.Errorf("%s: reading its report: %w\n%s", r.commandLine(), perr, lastLines(r.stderr.String(), 10))
	}
	if err != nil || res.Errors > 0 {
		return res, fmt.Errorf("%s: %d operations failed: %s", r.commandLine(), res.Errors, summariseErrors(res.ErrorSummary))
	}
	return res, nil
}

func parseKvbenchJSON(out []byte) (*benchResult, error) {
	var res benchResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// runBench runs the tool to completion; it returns the report, the
// command line and the CPU time the tool used.
func runBench(ctx context.Context, r *benchRun) (*benchResult, string, time.Duration, error) {
	if err := r.start(ctx); err != nil {
		return nil, r.commandLine(), 0, err
	}
	res, err := r.wait()
	return res, r.commandLine(), r.cpu, err
}

// runKvbench runs kvbench to completion.
func runKvbench(ctx context.Context, bin string, args []string, progress io.Writer) (*benchResult, string, time.Duration, error) {
	return runBench(ctx, &benchRun{bin: bin, args: args, progress: progress})
}

func summariseErrors(es []stats.ErrorCount) string {
	var parts []string
	for i, e := range es {
		if i == 3 {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, fmt.Sprintf("%d× %s", e.Count, e.Message))
	}
	return strings.Join(parts, "; ")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// shellQuote renders a command line that can be pasted into a shell; bin
// is taken as written (it may be "go run ./cmd/x").
func shellQuote(bin string, args []string) string {
	parts := []string{bin}
	for _, a := range args {
		parts = append(parts, quoteArg(a))
	}
	return strings.Join(parts, " ")
}

func quoteArg(a string) string {
	if a != "" && strings.IndexFunc(a, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@+", r))
	}) < 0 {
		return a
	}
	return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
}

// stderrIfVerbose is where kvbench progress lines go: the driver's own
// stderr, unless quiet.
func stderrIfVerbose(quiet bool) io.Writer {
	if quiet {
		return nil
	}
	return os.Stderr
}
