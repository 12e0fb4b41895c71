package main

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/therealutkarshpriyadarshi/keyval/cmd/kvbench/stats"
)

// etcd's watch benchmark prints two reports; the figures are the second's
// (events received), not the first's (watches created).
func TestParseEtcdWatchReport(t *testing.T) {
	out := "Watch creation summary:\n\nSummary:\n  Total:\t0.5 secs.\n  Requests/sec:\t2000\n" +
		"Watch events received summary:\n\nSummary:\n  Total:\t2 secs.\n  Requests/sec:\t50000\n"
	res, err := parseEtcdWatchReport([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if res.RequestsPerSec != 50000 || res.TotalSeconds != 2 || res.Requests != 100000 {
		t.Errorf("%v/s over %v s, %d events; want 50000/s over 2 s, 100000", res.RequestsPerSec, res.TotalSeconds, res.Requests)
	}
	if _, err := parseEtcdWatchReport([]byte("Watch creation summary:\n\nSummary:\n  Total:\t0.5 secs.\n")); err == nil {
		t.Error("a report without the events section accepted")
	}
}

func TestSpreadOf(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want spread
	}{
		{nil, spread{}},
		{[]float64{3, 1, 2}, spread{2, 1, 3}},
		{[]float64{4, 1, 2, 10}, spread{3, 1, 10}},
	} {
		if got := spreadOf(c.xs); got != c.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", c.xs, got, c.want)
		}
	}
}

// The etcd members get their own names, URLs and the cluster's timing;
// KeyVal's members keep keyvald's flags.
func TestEtcdMemberArgs(t *testing.T) {
	ec := newEtcdCluster("bin/etcd", "/d/etcd", fixedPorts(3384), 500)
	args := append(ec.ownArgs(ec.nodes[1]), ec.args...)
	line := strings.Join(args, " ")
	for _, want := range []string{
		"--name m2 --data-dir /d/etcd/data/2",
		"--listen-client-urls http://127.0.0.1:13384 --advertise-client-urls http://127.0.0.1:13384",
		"--listen-peer-urls http://127.0.0.1:13385",
		"--initial-cluster m1=http://127.0.0.1:3385,m2=http://127.0.0.1:13385,m3=http://127.0.0.1:23385",
		"--heartbeat-interval 50 --election-timeout 250",
		"--snapshot-count 500",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("etcd member flags lack %q: %s", want, line)
		}
	}
	kv := newCluster("bin/keyvald", "/d", fixedPorts(3379), nil)
	if got := kv.ownArgs(kv.nodes[0]); !slices.Contains(got, "--listen-client") || slices.Contains(got, "--name") {
		t.Errorf("keyvald member flags %v", got)
	}
}

func TestWatchLeaseReport(t *testing.T) {
	opt, err := parseOptions([]string{"--smoke"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if opt.watchLeaseRounds != 1 || opt.etcdServer != defaultEtcdServer {
		t.Errorf("smoke: %d rounds, etcd server %q", opt.watchLeaseRounds, opt.etcdServer)
	}
	ok := func(sys string, rate, p50 float64) watchLeaseRun {
		return watchLeaseRun{system: sys, cmd: "bin/etcd-benchmark " + sys, cpuPerOp: 100,
			res: &benchResult{Summary: stats.Summary{RequestsPerSec: rate, Latency: stats.Latency{P50: p50, P99: 2 * p50}}}}
	}
	r := &report{opt: opt, c: newCluster("bin/keyvald", "/d", fixedPorts(3379), nil), watchLease: &watchLeaseResult{
		rounds: 3, etcd: "etcd Version: 3.4.23", etcdCmds: []string{"bin/etcd --name m1"},
		rows: []*watchLeaseRow{
			{label: "keep-alive", unit: "keep-alives", timed: true, runs: []watchLeaseRun{
				ok(sysKeyVal, 3000, 1), ok(sysEtcd, 1000, 3), ok(sysEtcd, 1200, 4), ok(sysKeyVal, 2000, 2),
				ok(sysKeyVal, 4000, 3), {system: sysEtcd, err: errors.New("timed out\nmore")},
			}},
			{label: "fan-out", unit: "events", runs: []watchLeaseRun{ok(sysKeyVal, 50000, 0)}},
		},
	}}
	md := r.markdown()
	if strings.Contains(md, "| fan-out | etcd") {
		t.Error("a system that did not run has a row")
	}
	reportHas(t, md,
		"## Watch fan-out and lease keep-alive, paired with etcd",
		"etcd Version: 3.4.23",
		"| keep-alive | KeyVal | 3 | 3,000 keep-alives (2,000–4,000) | 2.00 | 4.00 | 100 | 0 |  |",
		"| keep-alive | etcd | 2 | 1,100 keep-alives (1,000–1,200) | 3.50 | 7.00 | 100 | **1 run(s) failed**: timed out | 2.73 |",
		"| fan-out | KeyVal | 1 | 50,000 events (50,000–50,000) | n/a | n/a | 100 | 0 |  |",
		"bin/etcd --name m1\nbin/etcd-benchmark KeyVal\nbin/etcd-benchmark etcd\n",
	)
}
