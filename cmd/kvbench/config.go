package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/internal/version"
)

// DefaultEndpoints are the members make cluster-start runs.
const DefaultEndpoints = "127.0.0.1:2379,127.0.0.1:12379,127.0.0.1:22379"

// Operations kvbench can measure.
const (
	opPut             = "put"
	opGet             = "get"
	opGetSerializable = "get-serializable"
	opMix             = "mix"
)

// Targets: send everything to the leader, or spread connections over every
// member.
const (
	targetLeader = "leader"
	targetAll    = "all"
)

// config is a parsed and checked command line.
type config struct {
	endpoints      []string
	target         string
	clients        int
	conns          int
	total          int           // operations; 0 when duration is set
	duration       time.Duration // 0 when total is set
	keySize        int
	valSize        int
	keySpace       uint64
	sequentialKeys bool
	op             string
	readRatio      float64
	requestTimeout time.Duration
	seed           uint64
	buckets        int
	json           bool
	progress       bool
	unary          bool
	rate           float64 // operations per second offered (0: closed loop)
}

// parseFlags reads the command line. The flag names follow etcd's
// benchmark tool where it has the same notion, so that a figure and its
// command line can be compared with etcd's side by side.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("kvbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `kvbench drives load at a KeyVal cluster and reports throughput and latency.

Examples (against make cluster-start):
  kvbench --op put --clients 64 --conns 8 --total 100000
  kvbench --op get --target all --clients 64 --conns 8 --duration 30s --json
  kvbench --op mix --read-ratio 0.9 --clients 16 --conns 4 --duration 10s

Each worker (--clients) runs one operation at a time over one of --conns
gRPC connections, first one untimed operation to open its connection and
session, then timed ones. Keys are --key-size bytes of zero-padded decimal,
chosen uniformly from --key-space-size keys (or in order with
--sequential-keys, which writes every key once when --total equals the key
space). Exit status: 0 done without errors, 1 some operations failed or the
run was interrupted, 2 usage error, 3 the cluster could not be reached.

Flags:
`)
		fs.PrintDefaults()
	}
	endpoints := fs.String("endpoints", DefaultEndpoints, "client addresses of the members, comma-separated")
	fs.StringVar(&c.target, "target", targetLeader, "leader: every connection to the leader (found with Status); all: connections spread over every endpoint")
	fs.IntVar(&c.clients, "clients", 1, "concurrent workers, each with one operation in flight")
	fs.IntVar(&c.conns, "conns", 1, "gRPC connections the workers share (worker i uses connection i mod conns)")
	fs.IntVar(&c.total, "total", 10000, "timed operations in all (or give --duration instead)")
	fs.DurationVar(&c.duration, "duration", 0, "run for this long instead of a --total count")
	fs.IntVar(&c.keySize, "key-size", 8, "key size in bytes")
	fs.IntVar(&c.valSize, "val-size", 256, "value size in bytes (writes)")
	keySpace := fs.Uint64("key-space-size", 100000, "number of distinct keys")
	fs.BoolVar(&c.sequentialKeys, "sequential-keys", false, "use keys 0, 1, 2, ... in order (wrapping at the key space) instead of at random")
	fs.StringVar(&c.op, "op", opPut, "put, get (linearizable), get-serializable, or mix (linearizable gets and puts)")
	fs.Float64Var(&c.readRatio, "read-ratio", 0.5, "with --op mix: the fraction of operations that are gets")
	fs.DurationVar(&c.requestTimeout, "request-timeout", 5*time.Second, "an operation unanswered after about this long (retries included) fails")
	fs.Uint64Var(&c.seed, "seed", 0, "seed for the random keys and choices (0: from the clock)")
	fs.IntVar(&c.buckets, "histogram-buckets", 10, "bars in the latency histogram")
	fs.BoolVar(&c.json, "json", false, "print the result as JSON on stdout (progress still goes to stderr)")
	fs.BoolVar(&c.progress, "progress", true, "print a progress line on stderr about once a second")
	fs.Float64Var(&c.rate, "rate", 0, "open loop: offer this many operations a second, on a fixed schedule, and time each from when the schedule said to send it (0: closed loop, each worker sending its next as soon as its last is answered); --clients bounds how many are in flight")
	fs.BoolVar(&c.unary, "unary", false, "one gRPC call per operation, as etcd's tool does, instead of the client's default of one pipelined stream per connection")
	showVersion := version.AddFlag(fs)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *showVersion {
		return c, version.ErrRequested
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (kvbench takes only flags)", fs.Arg(0))
	}
	totalSet := false
	fs.Visit(func(f *flag.Flag) { totalSet = totalSet || f.Name == "total" })
	c.keySpace = *keySpace
	for _, e := range strings.Split(*endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			c.endpoints = append(c.endpoints, e)
		}
	}
	if c.duration > 0 {
		if totalSet {
			return c, errors.New("give --total or --duration, not both")
		}
		c.total = 0
	}
	return c, c.check()
}

// check refuses settings that cannot give a meaningful run.
func (c *config) check() error {
	switch {
	case len(c.endpoints) == 0:
		return errors.New("--endpoints is empty")
	case c.target != targetLeader && c.target != targetAll:
		return fmt.Errorf("--target %q: want leader or all", c.target)
	case c.op != opPut && c.op != opGet && c.op != opGetSerializable && c.op != opMix:
		return fmt.Errorf("--op %q: want put, get, get-serializable or mix", c.op)
	case c.clients < 1:
		return fmt.Errorf("--clients %d: want at least 1", c.clients)
	case c.conns < 1 || c.conns > c.clients:
		return fmt.Errorf("--conns %d: want between 1 and --clients (%d)", c.conns, c.clients)
	case c.duration < 0:
		return fmt.Errorf("--duration %v: want a positive duration", c.duration)
	case c.duration == 0 && c.total < 1:
		return fmt.Errorf("--total %d: want at least 1 (or set --duration)", c.total)
	case c.keySize < 1:
		return fmt.Errorf("--key-size %d: want at least 1", c.keySize)
	case c.valSize < 0:
		return fmt.Errorf("--val-size %d: want 0 or more", c.valSize)
	case c.keySpace < 1:
		return errors.New("--key-space-size: want at least 1")
	case c.keySize < 20 && float64(c.keySpace) > math.Pow10(c.keySize):
		return fmt.Errorf("--key-space-size %d does not fit in %d decimal digits: raise --key-size or lower the key space",
			c.keySpace, c.keySize)
	case c.readRatio < 0 || c.readRatio > 1:
		return fmt.Errorf("--read-ratio %v: want between 0 and 1", c.readRatio)
	case c.requestTimeout <= 0:
		return fmt.Errorf("--request-timeout %v: want a positive duration", c.requestTimeout)
	case c.buckets < 1:
		return fmt.Errorf("--histogram-buckets %d: want at least 1", c.buckets)
	case c.rate < 0 || math.IsInf(c.rate, 0) || math.IsNaN(c.rate):
		return fmt.Errorf("--rate %v: want 0 (closed loop) or a positive rate", c.rate)
	}
	return nil
}
