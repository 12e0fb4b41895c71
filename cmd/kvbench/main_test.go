package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/therealutkarshpriyadarshi/keyval/internal/fakekv"
)

// fakeCluster starts n fake members sharing one store; the first leads.
func fakeCluster(t testing.TB, n int) (*fakekv.Store, []*fakekv.Node, string) {
	t.Helper()
	store := fakekv.NewStore()
	t.Cleanup(store.Close)
	var nodes []*fakekv.Node
	var addrs []string
	for i := range n {
		node, err := store.StartNode(uint64(i + 1))
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, node)
		addrs = append(addrs, node.Addr())
	}
	return store, nodes, strings.Join(addrs, ",")
}

// kvbench runs the command in-process and returns its exit status and
// output.
func kvbench(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runMain(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func decode(t *testing.T, out string) Report {
	t.Helper()
	var r Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output is not a report: %v\n%s", err, out)
	}
	return r
}

func TestPutToLeader(t *testing.T) {
	store, nodes, eps := fakeCluster(t, 3)
	code, out, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--op", "put", "--clients", "8", "--conns", "3",
		"--total", "500", "--json", "--progress=false", "--seed", "1")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	r := decode(t, out)
	if r.Requests != 500 || r.Errors != 0 {
		t.Errorf("requests %d errors %d, want 500 and 0", r.Requests, r.Errors)
	}
	if !slices.Equal(r.Endpoints, []string{nodes[0].Addr()}) {
		t.Errorf("endpoints %v, want only the leader %s", r.Endpoints, nodes[0].Addr())
	}
	// Every timed put and one warm-up put per worker, each applied once,
	// every one within its session's rules.
	if got := store.Applied(); got != 500+8 {
		t.Errorf("store applied %d writes, want 508", got)
	}
	if v := store.Violations(); len(v) > 0 {
		t.Errorf("session rules broken: %v", v)
	}
	for _, n := range nodes[1:] {
		if c := n.Calls("Put"); c != 0 {
			t.Errorf("follower %d got %d puts with --target leader", n.ID(), c)
		}
	}
	if r.Latency.P50 <= 0 || r.Latency.Fastest > r.Latency.P50 || r.Latency.P50 > r.Latency.P999 || r.Latency.P999 > r.Latency.Slowest {
		t.Errorf("latency figures out of order: %+v", r.Latency)
	}
	if r.RequestsPerSec <= 0 || r.TotalSeconds <= 0 {
		t.Errorf("throughput %v over %vs", r.RequestsPerSec, r.TotalSeconds)
	}
	if r.Cluster.LeaderStart != 1 || r.Cluster.LeaderEnd != 1 || r.Cluster.Elections() != 0 {
		t.Errorf("cluster %+v, want leader 1 throughout", r.Cluster)
	}
}

func TestTargetAllSpreadsConnections(t *testing.T) {
	_, nodes, eps := fakeCluster(t, 3)
	code, out, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--target", "all", "--op", "get",
		"--clients", "6", "--conns", "3", "--total", "300", "--json", "--progress=false")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if r := decode(t, out); r.Requests != 300 || len(r.Endpoints) != 3 {
		t.Errorf("requests %d over %v", r.Requests, r.Endpoints)
	}
	for _, n := range nodes {
		if n.Calls("Get") == 0 {
			t.Errorf("member %d got no gets with --target all", n.ID())
		}
	}
}

func TestRunSurvivesTheLeaderGoingDown(t *testing.T) {
	store, nodes, eps := fakeCluster(t, 3)
	// Take the leader down as soon as the timed run starts: the workers'
	// connections move to the other members instead of failing every
	// remaining operation.
	testHookTimedStart = func() { nodes[0].Stop(); store.SetLeader(2) }
	defer func() { testHookTimedStart = nil }()
	code, out, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--clients", "4", "--conns", "2",
		"--total", "200", "--json", "--progress=false")
	if code != exitOK && code != exitFailures {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	r := decode(t, out)
	if r.Requests+r.Errors != 200 || r.Requests < 190 {
		t.Errorf("%d succeeded and %d failed of 200 after the leader went down", r.Requests, r.Errors)
	}
	if r.Cluster.LeaderEnd != 2 {
		t.Errorf("leader at the end %d, want 2", r.Cluster.LeaderEnd)
	}
}

func TestSequentialKeysWriteTheWholeKeySpace(t *testing.T) {
	store, _, eps := fakeCluster(t, 1)
	code, _, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--sequential-keys", "--key-space-size", "100",
		"--total", "100", "--clients", "4", "--conns", "2", "--key-size", "5", "--val-size", "10", "--progress=false")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for i := range 100 {
		key := fmt.Sprintf("%05d", i)
		if v, version := store.Value(key); version == 0 || len(v) != 10 {
			t.Errorf("key %q: version %d, %d-byte value", key, version, len(v))
		}
	}
	if _, version := store.Value("00100"); version != 0 {
		t.Errorf("a key outside the key space was written")
	}
}

func TestFailuresAreCountedAndReported(t *testing.T) {
	_, nodes, eps := fakeCluster(t, 1)
	// The 4 warm-up puts take the first 4 failures, timed puts the other 3.
	nodes[0].Fail("Put", codes.InvalidArgument, "value rejected", 7)
	code, out, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--clients", "4", "--total", "50", "--progress=false")
	if code != exitFailures {
		t.Fatalf("exit %d, want %d: %s", code, exitFailures, errOut)
	}
	for _, want := range []string{"Requests:     47 succeeded, 7 failed", "Errors: 7 ", "value rejected"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "7 of 54 operations failed") {
		t.Errorf("stderr does not say the run had failures: %s", errOut)
	}
}

func TestDurationAndTextReport(t *testing.T) {
	_, _, eps := fakeCluster(t, 2)
	code, out, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--duration", "300ms", "--clients", "2",
		"--conns", "2", "--op", "get-serializable", "--target", "all")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"get-serializable, 0.3s, 2 clients over 2 connections to all", "Requests/s:",
		"Latency histogram", "Latency distribution:", "99.9% in", "Errors: none", "Load average:", "Cluster: leader 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestMixReportsEachOperation(t *testing.T) {
	_, _, eps := fakeCluster(t, 1)
	code, out, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--op", "mix", "--read-ratio", "0.75",
		"--clients", "3", "--total", "400", "--json", "--progress=false")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	r := decode(t, out)
	gets, puts := r.ByOp["get"], r.ByOp["put"]
	if gets.Requests+puts.Requests != 400 || gets.Requests < puts.Requests {
		t.Errorf("%d gets and %d puts of 400 at 75%% gets", gets.Requests, puts.Requests)
	}
	if r.ReadRatio == nil || *r.ReadRatio != 0.75 {
		t.Errorf("read ratio %v", r.ReadRatio)
	}
}

func TestProgressLines(t *testing.T) {
	_, _, eps := fakeCluster(t, 1)
	code, _, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--duration", "1200ms", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, " done  ") || !strings.Contains(errOut, "/s now  0 errors") {
		t.Errorf("no progress line on stderr: %q", errOut)
	}
}

func TestInterruptReportsWhatRan(t *testing.T) {
	_, nodes, eps := fakeCluster(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Once the timed run has started, hold the member's calls and
	// interrupt as soon as one is held: the run then stops mid-way.
	held := make(chan *fakekv.Hold, 1)
	testHookTimedStart = func() { held <- nodes[0].Hold() }
	defer func() { testHookTimedStart = nil }()
	go func() {
		h := <-held
		<-h.Arrived()
		cancel()
		h.Release()
	}()
	code, out, errOut := kvbench(t, ctx, "--endpoints", eps, "--duration", "1m", "--clients", "2", "--json", "--progress=false")
	if code != exitFailures {
		t.Fatalf("exit %d, want %d: %s", code, exitFailures, errOut)
	}
	r := decode(t, out)
	if !r.Interrupted || r.Errors != 0 {
		t.Errorf("interrupted %v, errors %d: the interruption is not a failure of the cluster", r.Interrupted, r.Errors)
	}
}

func TestUnreachableCluster(t *testing.T) {
	_, nodes, eps := fakeCluster(t, 1)
	nodes[0].Stop()
	code, _, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--request-timeout", "300ms")
	if code != exitUnreachable || !strings.Contains(errOut, "no member answered") {
		t.Errorf("exit %d, want %d: %s", code, exitUnreachable, errOut)
	}
}

func TestNoLeader(t *testing.T) {
	store, _, eps := fakeCluster(t, 2)
	store.SetLeader(0)
	code, _, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--request-timeout", "300ms")
	if code != exitUnreachable || !strings.Contains(errOut, "reports being the leader") {
		t.Errorf("exit %d, want %d: %s", code, exitUnreachable, errOut)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := kvbench(t, context.Background(), "--version")
	if code != exitOK || !strings.HasPrefix(out, "kvbench ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("exit %d, output %q: want 0 and a line naming kvbench and %s", code, out, runtime.Version())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--op", "scan"},
		{"--target", "followers"},
		{"--clients", "0"},
		{"--clients", "2", "--conns", "3"},
		{"--total", "10", "--duration", "1s"},
		{"--key-size", "4", "--key-space-size", "100000"},
		{"--read-ratio", "1.5"},
		{"--endpoints", " , "},
		{"extra"},
		{"--no-such-flag"},
	} {
		code, _, errOut := kvbench(t, context.Background(), args...)
		if code != exitUsage || errOut == "" {
			t.Errorf("%v: exit %d (%q), want %d with a message", args, code, errOut, exitUsage)
		}
	}
}

func TestFormatKey(t *testing.T) {
	key := make([]byte, 8)
	for _, tc := range []struct {
		n    uint64
		want string
	}{{0, "00000000"}, {42, "00000042"}, {99999999, "99999999"}} {
		formatKey(key, tc.n)
		if string(key) != tc.want {
			t.Errorf("formatKey(%d) = %q, want %q", tc.n, key, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { formatKey(key, 12345) }); n != 0 {
		t.Errorf("formatKey allocates %v times", n)
	}
}

func TestParseLoadAverage(t *testing.T) {
	if got := parseLoadAverage("1.50 0.75 0.25 2/94 5464\n"); !slices.Equal(got, []float64{1.5, 0.75, 0.25}) {
		t.Errorf("got %v", got)
	}
	if got := parseLoadAverage("garbage"); got != nil {
		t.Errorf("got %v from garbage", got)
	}
}

func TestJSONReportFields(t *testing.T) {
	_, _, eps := fakeCluster(t, 1)
	code, out, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--total", "20", "--json", "--progress=false")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tool", "op", "target", "endpoints", "clients", "conns", "total", "key_size", "val_size",
		"key_space_size", "sequential_keys", "interrupted", "requests", "errors", "error_summary", "total_seconds",
		"requests_per_sec", "latency_ms", "histogram", "load_average", "cluster"} {
		if _, ok := m[f]; !ok {
			t.Errorf("report lacks %q", f)
		}
	}
	for _, f := range []string{"leader_start", "term_start", "leader_end", "term_end"} {
		if _, ok := m["cluster"].(map[string]any)[f]; !ok {
			t.Errorf("cluster lacks %q", f)
		}
	}
}

// --unary sends one gRPC call per operation (as etcd's tool does); by
// default the client pipelines them over a stream per connection.
func TestUnaryFlagChoosesTheCallPath(t *testing.T) {
	for _, unary := range []bool{false, true} {
		_, nodes, eps := fakeCluster(t, 1)
		args := []string{"--endpoints", eps, "--op", "mix", "--clients", "4", "--conns", "2", "--total", "200", "--json", "--progress=false"}
		if unary {
			args = append(args, "--unary")
		}
		code, out, errOut := kvbench(t, context.Background(), args...)
		if code != exitOK {
			t.Fatalf("unary=%v: exit %d: %s", unary, code, errOut)
		}
		r := decode(t, out)
		if r.Unary != unary || r.Requests != 200 || r.Errors != 0 {
			t.Errorf("unary=%v: report says unary=%v, %d requests, %d errors", unary, r.Unary, r.Requests, r.Errors)
		}
		if streams := nodes[0].Streams(); (streams > 0) == unary {
			t.Errorf("unary=%v: the member served %d pipeline streams", unary, streams)
		}
	}
}

// The open loop sends operation n no earlier than n / rate seconds into
// the run, so a run of --total operations lasts at least the schedule.
func TestOpenLoopKeepsItsSchedule(t *testing.T) {
	start := time.Unix(100, 0)
	if got := scheduled(start, 250, 1000); !got.Equal(start.Add(250 * time.Millisecond)) {
		t.Fatalf("operation 250 at 1000/s scheduled at %v", got.Sub(start))
	}
	_, _, eps := fakeCluster(t, 1)
	code, out, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--op", "put", "--clients", "4",
		"--total", "300", "--rate", "1000", "--json", "--progress=false", "--seed", "1")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	r := decode(t, out)
	if r.Rate != 1000 || r.Requests != 300 || r.Errors != 0 {
		t.Fatalf("rate %v, requests %d, errors %d", r.Rate, r.Requests, r.Errors)
	}
	if r.TotalSeconds < 0.299 {
		t.Errorf("300 operations at 1000/s took %vs: sent ahead of the schedule", r.TotalSeconds)
	}
	code, _, errOut = kvbench(t, context.Background(), "--endpoints", eps, "--rate", "-5")
	if code != exitUsage || !strings.Contains(errOut, "--rate") {
		t.Errorf("--rate -5: exit %d, %s", code, errOut)
	}
}

// Behind its schedule, the open loop times each operation from when the
// schedule said to send it, not from when a worker got round to it: with
// one worker and a schedule it cannot keep, the last operation's latency
// is nearly the whole run, where timing from the actual send (coordinated
// omission) would show one call's latency.
func TestOpenLoopTimesFromTheSchedule(t *testing.T) {
	_, _, eps := fakeCluster(t, 1)
	const ops, rate = 1000, 1e6 // all scheduled within the first millisecond
	code, out, errOut := kvbench(t, context.Background(), "--endpoints", eps, "--op", "put", "--clients", "1",
		"--total", strconv.Itoa(ops), "--rate", strconv.Itoa(rate), "--json", "--progress=false", "--seed", "1")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	r := decode(t, out)
	scheduleMs := 1000 * float64(ops) / rate
	if behind := 1000*r.TotalSeconds - scheduleMs; r.Latency.Slowest < 0.75*behind {
		t.Errorf("slowest %v ms in a run of %v s whose schedule ended after %v ms: latency not timed from the schedule",
			r.Latency.Slowest, r.TotalSeconds, scheduleMs)
	}
}
