package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/client"
	"github.com/therealutkarshpriyadarshi/keyval/cmd/kvbench/stats"
)

// defaultEtcdBenchmark is where make etcd-benchmark puts etcd's tool.
const defaultEtcdBenchmark = "bin/etcd-benchmark"

// etcdToolVersion is the etcd release whose benchmark tool make
// etcd-benchmark builds (the Makefile's ETCD_SRC_VERSION): the module
// proxy refuses the tool's module, so it comes from a source tarball.
const etcdToolVersion = "3.4.23"

// etcdRangeKey is the key etcd's range rows read, written once before
// them so that every read finds a 256-byte value, as the writes left.
const etcdRangeKey = "foo"

// etcdMatrix is what the etcd step asks etcd's benchmark tool for: the
// writes at the concurrencies the issue compares (one client, 64 and 256),
// linearizable and serializable ranges, and single-put transactions. share
// scales --write-ops (writes) or --read-ops (ranges).
var etcdMatrix = []struct {
	label          string
	sub            []string // the subcommand and its own arguments
	clients, conns int
	share          float64
	reads          bool
}{
	{"put, 1 / 1", []string{"put"}, 1, 1, 0.1, false},
	{"put, 64 / 8", []string{"put"}, 64, 8, 1, false},
	{"put, 256 / 16", []string{"put"}, 256, 16, 1, false},
	{"range linearizable, 64 / 8", []string{"range", etcdRangeKey, "--consistency", "l"}, 64, 8, 1, true},
	{"range serializable, 64 / 8", []string{"range", etcdRangeKey, "--consistency", "s"}, 64, 8, 1, true},
	{"txn-put, 64 / 8", []string{"txn-put"}, 64, 8, 0.5, false},
}

// buildEtcdBinary makes sure one of etcd's binaries (what) is at path:
// its default path is built (or found up to date) by make target; a path
// given on the command line must already exist.
func buildEtcdBinary(ctx context.Context, path, defaultPath, target, what string, stderr io.Writer) error {
	if path == defaultPath {
		cmd := exec.CommandContext(ctx, "make", "--no-print-directory", target)
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s (make %s): %w", what, target, err)
		}
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// stepEtcd drives the cluster with etcd's own benchmark tool, one gRPC
// call per operation through etcd's v3 API, every connection to the
// leader (--target-leader finds it through etcd's MemberList and Status).
func (d *driver) stepEtcd(ctx context.Context) error {
	if err := d.putRangeKey(ctx); err != nil {
		return err
	}
	var errs []error
	for _, m := range etcdMatrix {
		ops := d.opt.writeOps
		if m.reads {
			ops = d.opt.readOps
		}
		args := []string{"--endpoints", d.c.endpoints(), "--target-leader", "--precise",
			"--conns", strconv.Itoa(m.conns), "--clients", strconv.Itoa(m.clients)}
		args = append(args, m.sub...)
		args = append(args, "--total", strconv.Itoa(max(int(m.share*float64(ops)), 1)))
		if !m.reads {
			args = append(args, "--key-size", "8", "--val-size", "256", "--key-space-size", strconv.Itoa(d.opt.keySpace))
		}
		row := d.runRowWith(ctx, m.label, func(ctx context.Context) (*benchResult, string, time.Duration, error) {
			// kvbench reports the load average itself; etcd's tool does not.
			load := currentLoad()
			res, cmd, cpu, err := runBench(ctx, &benchRun{bin: d.opt.etcdBenchmark, args: args, parse: parseEtcdReport})
			if res != nil {
				res.LoadAverage = loadAvg{Start: load, End: currentLoad()}
			}
			return res, cmd, cpu, err
		})
		d.rep.etcd = append(d.rep.etcd, row)
		d.rep.save()
		if row.err != nil {
			errs = append(errs, row.err)
			if ctx.Err() != nil || !d.c.allRunning() {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// putRangeKey writes the key the range rows read.
func (d *driver) putRangeKey(ctx context.Context) error {
	cl, err := client.New(client.Config{Endpoints: []string{d.c.nodes[0].clientAddr, d.c.nodes[1].clientAddr, d.c.nodes[2].clientAddr}})
	if err != nil {
		return fmt.Errorf("writing %q for the range rows: %w", etcdRangeKey, err)
	}
	defer cl.Close()
	if _, err := cl.Put(ctx, []byte(etcdRangeKey), make([]byte, 256)); err != nil {
		return fmt.Errorf("writing %q for the range rows: %w", etcdRangeKey, err)
	}
	return nil
}

// parseEtcdReport reads the text report etcd's benchmark tool prints at
// the end (run with --precise, so figures are not rounded to 0.1 ms):
// the summary in seconds, the latency percentiles and the error counts.
// Requests counts successes only, as kvbench's does.
func parseEtcdReport(out []byte) (*benchResult, error) {
	res := &benchResult{}
	seen := false
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// The progress bar redraws itself with carriage returns.
		if i := strings.LastIndexByte(line, '\r'); i >= 0 {
			line = line[i+1:]
		}
		trimmed := strings.TrimSpace(line)
		if strings.HasSuffix(trimmed, ":") && !strings.Contains(trimmed, "\t") {
			section = trimmed
			continue
		}
		var err error
		switch section {
		case "Summary:":
			seen = true
			err = parseEtcdSummaryLine(trimmed, res)
		case "Latency distribution:":
			err = parseEtcdPercentile(trimmed, &res.Latency)
		case "Error distribution:":
			err = parseEtcdErrorLine(trimmed, res)
		}
		if err != nil {
			return nil, fmt.Errorf("etcd benchmark report: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("etcd benchmark report: %w", err)
	}
	if !seen && res.Errors == 0 {
		return nil, errors.New("etcd benchmark report: no summary in its output")
	}
	res.Requests = int(math.Round(res.RequestsPerSec * res.TotalSeconds))
	return res, nil
}

// parseEtcdSummaryLine reads "Name:\t<seconds> secs." or
// "Requests/sec:\t<rate>".
func parseEtcdSummaryLine(line string, res *benchResult) error {
	name, value, ok := strings.Cut(line, ":")
	if !ok {
		return nil
	}
	value = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(value), "."), " secs")
	x, err := strconv.ParseFloat(value, 64)
	if err != nil {
		return fmt.Errorf("summary line %q: %w", line, err)
	}
	ms := x * 1000
	switch name {
	case "Total":
		res.TotalSeconds = x
	case "Slowest":
		res.Latency.Slowest = ms
	case "Fastest":
		res.Latency.Fastest = ms
	case "Average":
		res.Latency.Average = ms
	case "Stddev":
		res.Latency.Stddev = ms
	case "Requests/sec":
		res.RequestsPerSec = x
	}
	return nil
}

// parseEtcdPercentile reads "50% in <seconds> secs.".
func parseEtcdPercentile(line string, l *stats.Latency) error {
	pct, rest, ok := strings.Cut(line, "% in ")
	if !ok {
		return nil
	}
	x, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSuffix(rest, "."), " secs"), 64)
	if err != nil {
		return fmt.Errorf("percentile line %q: %w", line, err)
	}
	into := map[string]*float64{"10": &l.P10, "25": &l.P25, "50": &l.P50, "75": &l.P75,
		"90": &l.P90, "95": &l.P95, "99": &l.P99, "99.9": &l.P999}
	if p, ok := into[pct]; ok {
		*p = x * 1000
	}
	return nil
}

// parseEtcdErrorLine reads "[count]\tmessage".
func parseEtcdErrorLine(line string, res *benchResult) error {
	count, msg, ok := strings.Cut(strings.TrimPrefix(line, "["), "]")
	if !ok {
		return nil
	}
	n, err := strconv.Atoi(count)
	if err != nil {
		return fmt.Errorf("error line %q: %w", line, err)
	}
	res.Errors += n
	res.ErrorSummary = append(res.ErrorSummary, stats.ErrorCount{Message: strings.TrimSpace(msg), Count: n})
	return nil
}
