// Command kvbench is KeyVal's load generator: many concurrent workers
// issue puts, gets or a mix over a chosen number of gRPC connections, and
// kvbench reports throughput, latency percentiles and a histogram, as text
// or JSON. Its flags follow etcd's benchmark tool so the figures of the two
// can be compared directly. See kvbench --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/therealutkarshpriyadarshi/keyval/internal/version"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailures    = 1 // some operations failed, or the run was interrupted
	exitUsage       = 2
	exitUnreachable = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runMain is kvbench without the process around it: it parses args, runs
// the benchmark, prints the report to stdout and the progress and problems
// to stderr, and returns the exit status.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if errors.Is(err, version.ErrRequested) {
		fmt.Fprintln(stdout, version.String("kvbench"))
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvbench:", err)
		return exitUsage
	}
	var progress io.Writer
	if cfg.progress {
		progress = stderr
	}
	rep, err := run(ctx, cfg, progress)
	if err != nil {
		fmt.Fprintln(stderr, "kvbench:", err)
		if isUnreachable(err) {
			return exitUnreachable
		}
		return exitFailures
	}
	if cfg.json {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvbench: writing the report:", err)
		return exitFailures
	}
	switch {
	case rep.Interrupted:
		fmt.Fprintln(stderr, "kvbench: interrupted; the report covers only the part that ran")
		return exitFailures
	case rep.Errors > 0:
		fmt.Fprintf(stderr, "kvbench: %d of %d operations failed (see the report)\n", rep.Errors, rep.Errors+rep.Requests)
		return exitFailures
	}
	return exitOK
}
