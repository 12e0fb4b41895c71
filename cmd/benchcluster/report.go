package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/server"
)

// report gathers the results and renders them as markdown.
type report struct {
	opt        options
	c          *cluster
	started    time.Time
	finished   time.Time
	loadStart  []float64
	loadEnd    []float64
	env        []envLine
	writes     []benchRow
	preload    *benchRow
	reads      []benchRow
	etcd       []benchRow
	watchLease *watchLeaseResult
	compare    *compareResult
	rss        *rssResult
	failover   *failoverResult
	catchup    *catchupResult
	stepTimes  []stepTime
	failures   []string
}

type stepTime struct {
	name string
	took time.Duration
}

type envLine struct{ key, value string }

func newReport(opt options, c *cluster) *report {
	r := &report{opt: opt, c: c, started: time.Now()}
	r.env = environment(opt)
	return r
}

// save writes what is known so far, so an interrupted or failed run still
// leaves its results behind. Errors are reported by the final write.
func (r *report) save() { _ = r.write() }

func (r *report) write() error {
	if err := os.MkdirAll(filepath.Dir(r.opt.out), 0o755); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	tmp := r.opt.out + ".tmp"
	if err := os.WriteFile(tmp, []byte(r.markdown()), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	if err := os.Rename(tmp, r.opt.out); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

func (r *report) markdown() string {
	var b strings.Builder
	kind := "full run"
	if r.opt.smoke {
		kind = "smoke run (tiny counts: checks the tooling, the figures mean nothing)"
	}
	fmt.Fprintf(&b, "# KeyVal cluster benchmark: %s\n\n", kind)
	fmt.Fprintf(&b, "Three keyvald members on 127.0.0.1, data on the real disk, WAL fsync on; load from kvbench on the same machine. ")
	fmt.Fprintf(&b, "The machine may be shared: the load average is given beside each figure.\n\n")
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| started | %s |\n", r.started.UTC().Format("2006-01-02 15:04:05 UTC"))
	if !r.finished.IsZero() {
		fmt.Fprintf(&b, "| finished | %s (%s) |\n", r.finished.UTC().Format("2006-01-02 15:04:05 UTC"), r.finished.Sub(r.started).Round(time.Second))
	} else {
		fmt.Fprintf(&b, "| finished | not yet (partial results) |\n")
	}
	for _, e := range r.env {
		fmt.Fprintf(&b, "| %s | %s |\n", e.key, e.value)
	}
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) | %s at start, %s at end |\n", loadString(r.loadStart), loadString(r.loadEnd))
	fmt.Fprintf(&b, "| driver | `%s` |\n\n", shellQuote("go run ./cmd/benchcluster", r.opt.args))

	if len(r.failures) > 0 {
		fmt.Fprintf(&b, "## FAILURES\n\n")
		for _, f := range r.failures {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(f, "\n", "\n  "))
		}
		b.WriteString("\n")
	}

	if len(r.writes) > 0 {
		fmt.Fprintf(&b, "## Writes\n\nPuts to the leader, 8-byte random keys over a %d-key space, 256-byte values.\n\n", r.opt.keySpace)
		writeRows(&b, "clients / conns", r.writes)
	}
	if r.preload != nil || len(r.reads) > 0 {
		fmt.Fprintf(&b, "## Reads\n\n64 clients over 8 connections, random keys over the %d keys preloaded first; "+
			"`leader`: every connection to the leader, `all`: connections spread over the three members.\n\n", r.opt.keySpace)
		rows := r.reads
		if r.preload != nil {
			rows = append([]benchRow{*r.preload}, rows...)
		}
		writeRows(&b, "op → target", rows)
	}
	if len(r.etcd) > 0 {
		fmt.Fprintf(&b, "## etcd's benchmark tool\n\n"+
			"The same cluster driven through etcd's v3 API by etcd's own `benchmark` tool (etcd "+etcdToolVersion+"'s `tools/benchmark`, "+
			"built by `make etcd-benchmark` from Debian's etcd source tarball; etcd 3.4's tool speaks the same v3 API). "+
			"One gRPC call per operation; `--target-leader` puts every connection on the leader. Puts and transactions: "+
			"8-byte random keys over a %d-key space, 256-byte values; ranges read the one key `%s`.\n\n", r.opt.keySpace, etcdRangeKey)
		writeRows(&b, "etcd benchmark", r.etcd)
	}
	if r.watchLease != nil {
		r.writeWatchLease(&b)
	}
	if r.rss != nil {
		r.writeRSS(&b)
	}
	if r.failover != nil {
		r.writeFailover(&b)
	}
	if r.catchup != nil {
		r.writeCatchup(&b)
	}
	if r.compare != nil {
		r.writeCompare(&b)
	}

	fmt.Fprintf(&b, "## How the cluster was run\n\n```\n")
	for _, cmd := range r.c.commands {
		fmt.Fprintf(&b, "%s\n", cmd)
	}
	fmt.Fprintf(&b, "```\n\nLogs: `%s`.\n", filepath.Join(r.opt.dir, "logs"))
	if len(r.stepTimes) > 0 {
		fmt.Fprintf(&b, "\nStep durations:")
		for _, s := range r.stepTimes {
			fmt.Fprintf(&b, " %s %s;", s.name, s.took.Round(100*time.Millisecond))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// writeRows renders kvbench runs as a table followed by their commands.
func writeRows(b *strings.Builder, first string, rows []benchRow) {
	fmt.Fprintf(b, "| %s | ops | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | elections | load avg 1m start → end | CPU %% of a core: leader / followers / load generator | CPU µs per op, all four |\n", first)
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range rows {
		res := row.res
		if res == nil {
			fmt.Fprintf(b, "| %s | failed: %s | | | | | | | | | | | |\n", row.label, firstLine(row.err))
			continue
		}
		l := res.Latency
		fmt.Fprintf(b, "| %s | %d | %s | %.2f | %.2f | %.2f | %.2f | %.1f | %s | %s | %s → %s | %s | %s |\n",
			row.label, res.Requests, thousands(res.RequestsPerSec), l.P50, l.P90, l.P99, l.P999, l.Slowest,
			errorCell(row), electionCell(row), oneMinute(res.LoadAverage.Start), oneMinute(res.LoadAverage.End), cpuCell(row.cpu),
			cpuPerOp(row.cpu, res.RequestsPerSec))
	}
	fmt.Fprintf(b, "\n```\n")
	for _, row := range rows {
		fmt.Fprintf(b, "%s\n", row.cmd)
	}
	fmt.Fprintf(b, "```\n\n")
	for _, row := range rows {
		if len(row.roles.Lines) > 0 {
			fmt.Fprintf(b, "Role changes logged during %s:\n\n```\n%s\n```\n\n", row.label, strings.Join(row.roles.Lines, "\n"))
		}
	}
}

// cpuCell lists the CPU shares as "leader / follower / follower /
// kvbench", percentages of one core (the machine has runtime.NumCPU()).
func cpuCell(cpu []cpuShare) string {
	if len(cpu) == 0 {
		return "?"
	}
	parts := make([]string, len(cpu))
	for i, c := range cpu {
		parts[i] = strconv.FormatFloat(c.percent, 'f', 0, 64)
	}
	return strings.Join(parts, " / ")
}

// cpuPerOp is the CPU time the three members and kvbench spent per
// operation, in µs: steadier than ops/s when the machine's speed varies
// from run to run.
func cpuPerOp(cpu []cpuShare, opsPerSec float64) string {
	if len(cpu) == 0 || opsPerSec <= 0 {
		return "?"
	}
	total := 0.0
	for _, c := range cpu {
		total += c.percent
	}
	return strconv.FormatFloat(total/100/opsPerSec*1e6, 'f', 0, 64)
}

func errorCell(row benchRow) string {
	if row.res.Errors == 0 && row.err == nil {
		return "0"
	}
	if row.res.Errors == 0 {
		return "run failed: " + firstLine(row.err)
	}
	return fmt.Sprintf("**%d**: %s", row.res.Errors, strings.ReplaceAll(summariseErrors(row.res.ErrorSummary), "|", `\|`))
}

// electionCell says how many terms began (from Status) and how many
// leaders the logs show elected during the run.
func electionCell(row benchRow) string {
	n := row.elections()
	if n == 0 && row.roles.Leader == 0 && row.roles.Candidate == 0 {
		return "0"
	}
	return fmt.Sprintf("**%d** (term %d → %d; %d leader, %d candidate, %d pre-candidate log lines)",
		n, row.termBefore, row.termAfter, row.roles.Leader, row.roles.Candidate, row.roles.PreCandidate)
}

func (r *report) writeRSS(b *strings.Builder) {
	res := r.rss
	fmt.Fprintf(b, "## Memory over a sustained-overwrite run\n\n")
	fmt.Fprintf(b, "Puts at 64 clients / 8 connections for %s over the %d-key space; each member's VmRSS sampled once a second; "+
		"a compaction is the member's first log index moving forward (a snapshot was taken and the log cut behind it).\n\n",
		res.duration, r.opt.keySpace)
	if p := res.preload; p != nil && p.res != nil {
		fmt.Fprintf(b, "Before sampling, every key was written once in order, so that the store is at its full size "+
			"(%d writes, %s/s, errors %s):\n\n```\n%s\n```\n\n", p.res.Requests, thousands(p.res.RequestsPerSec), errorCell(*p), p.cmd)
	}
	if res.row.res != nil {
		l := res.row.res.Latency
		fmt.Fprintf(b, "Load: %d writes, %s/s, p50 %.2f ms, p99 %.2f ms, max %.1f ms, errors %s, elections %s, load avg 1m %s → %s, "+
			"CPU %% of a core (leader / followers / kvbench) %s.\n\n",
			res.row.res.Requests, thousands(res.row.res.RequestsPerSec), l.P50, l.P99, l.Slowest, errorCell(res.row),
			electionCell(res.row), oneMinute(res.row.res.LoadAverage.Start), oneMinute(res.row.res.LoadAverage.End), cpuCell(res.row.cpu))
	}
	fmt.Fprintf(b, "| member | samples | first MiB | min MiB | max MiB | last MiB | max / first | last / first | compactions |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range res.nodes {
		if len(s.samples) == 0 {
			fmt.Fprintf(b, "| %d | 0 | | | | | | | |\n", s.id)
			continue
		}
		first, last := s.samples[0], s.samples[len(s.samples)-1]
		lo, hi := slices.Min(s.samples), slices.Max(s.samples)
		fmt.Fprintf(b, "| %d | %d | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %d |\n", s.id, len(s.samples),
			mib(first), mib(lo), mib(hi), mib(last), float64(hi)/float64(first), float64(last)/float64(first), s.compactions)
	}
	fmt.Fprintf(b, "\nThe steady state: from each member's first compaction (its log has filled to the snapshot interval once) to the end.\n\n")
	fmt.Fprintf(b, "| member | samples | at first compaction MiB | min MiB | max MiB | last MiB | max / min | last / first |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|\n")
	for _, s := range res.nodes {
		if s.compactions == 0 || s.steadyFrom >= len(s.samples) {
			fmt.Fprintf(b, "| %d | 0 | no compaction during the run | | | | | |\n", s.id)
			continue
		}
		steady := s.samples[s.steadyFrom:]
		first, last := steady[0], steady[len(steady)-1]
		lo, hi := slices.Min(steady), slices.Max(steady)
		fmt.Fprintf(b, "| %d | %d | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f |\n", s.id, len(steady),
			mib(first), mib(lo), mib(hi), mib(last), float64(hi)/float64(lo), float64(last)/float64(first))
	}
	fmt.Fprintf(b, "\nBy snapshot cycle: the log fills to the snapshot interval and is cut once per cycle, so memory rises and falls once "+
		"per cycle by design; what must stay flat is the cycle's peak (and trough) from one cycle to the next. "+
		"A complete cycle runs from the sample after one compaction to the first sample after the next.\n\n")
	fmt.Fprintf(b, "| member | complete cycles | peaks MiB | peaks max / min | troughs MiB | troughs max / min |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|\n")
	for _, s := range res.nodes {
		peaks, troughs := s.cycles()
		if len(peaks) == 0 {
			fmt.Fprintf(b, "| %d | 0 | fewer than two compactions during the run | | | |\n", s.id)
			continue
		}
		fmt.Fprintf(b, "| %d | %d | %s | %.2f | %s | %.2f |\n", s.id, len(peaks), mibList(peaks),
			float64(slices.Max(peaks))/float64(slices.Min(peaks)), mibList(troughs), float64(slices.Max(troughs))/float64(slices.Min(troughs)))
	}
	fmt.Fprintf(b, "\nBy kind, over the same cycles: anonymous memory (Go's heap and stacks: what the program holds) and "+
		"file-backed memory (mostly bbolt's memory map, which grows with the store's file and the pages read).\n\n")
	fmt.Fprintf(b, "| member | anonymous peaks MiB | anonymous peaks max / min | file-backed peaks MiB | file-backed peaks max / min |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|\n")
	for _, s := range res.nodes {
		anon, _ := cyclesOf(s.anon, s.compactedAt)
		file, _ := cyclesOf(s.file, s.compactedAt)
		if len(anon) == 0 || len(file) == 0 {
			fmt.Fprintf(b, "| %d | fewer than two compactions during the run | | | |\n", s.id)
			continue
		}
		fmt.Fprintf(b, "| %d | %s | %.2f | %s | %.2f |\n", s.id, mibList(anon), float64(slices.Max(anon))/float64(slices.Min(anon)),
			mibList(file), float64(slices.Max(file))/float64(slices.Min(file)))
	}
	fmt.Fprintf(b, "\n```\n%s\n```\n\n", res.row.cmd)
}

// mibList formats KiB figures as MiB, comma-separated.
func mibList(kib []int64) string {
	parts := make([]string, len(kib))
	for i, k := range kib {
		parts[i] = fmt.Sprintf("%.0f", mib(k))
	}
	return strings.Join(parts, ", ")
}

func (r *report) writeFailover(b *strings.Builder) {
	res := r.failover
	fmt.Fprintf(b, "## Failover\n\n")
	fmt.Fprintf(b, "Each trial: %d goroutines write continuously through a client that knows all three members "+
		"(retry backoff 5–50 ms instead of the default 25–500 ms, so the client's pauses barely show); once they are "+
		"acknowledged steadily, the leader is killed with SIGKILL. *Kill → ack* is the time from the kill to the first "+
		"acknowledgement of a write begun after the killed process was gone (so it cannot be a reply the old leader "+
		"sent); it includes one write's latency on the new leader. *Kill → leader seen* is when polling the survivors' "+
		"Status (every ~5 ms) first found one leading in a higher term. The killed member is restarted and caught up "+
		"between trials. %s\n\n", res.writers, keyvaldTiming())
	fmt.Fprintf(b, "| trial | killed | new leader | term | kill → leader seen ms | kill → ack ms | writes acked / failed |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|\n")
	var toAck, toLeader []time.Duration
	for i, t := range res.trials {
		if t.err != nil {
			fmt.Fprintf(b, "| %d | %d | failed: %s | | | | %d / %d |\n", i+1, t.killed, firstLine(t.err), t.acks, t.writeErrors)
			continue
		}
		toAck = append(toAck, t.toAck)
		toLeader = append(toLeader, t.toLeader)
		fmt.Fprintf(b, "| %d | %d | %d | %d → %d | %.0f | %.0f | %d / %d |\n", i+1, t.killed, t.newLeader, t.oldTerm, t.newTerm,
			msOf(t.toLeader), msOf(t.toAck), t.acks, t.writeErrors)
	}
	if len(toAck) > 0 {
		fmt.Fprintf(b, "\n| of %d trials | median ms | mean ms | min ms | max ms |\n|---|---|---|---|---|\n", len(toAck))
		for _, s := range []struct {
			name string
			xs   []time.Duration
		}{{"kill → ack", toAck}, {"kill → leader seen", toLeader}} {
			med, mean, lo, hi := describe(s.xs)
			fmt.Fprintf(b, "| %s | %.0f | %.0f | %.0f | %.0f |\n", s.name, msOf(med), msOf(mean), msOf(lo), msOf(hi))
		}
	}
	b.WriteString("\n")
}

func (r *report) writeCatchup(b *strings.Builder) {
	res := r.catchup
	fmt.Fprintf(b, "## Restart catch-up\n\n")
	fmt.Fprintf(b, "Follower %d stopped with SIGTERM; %d distinct keys (256-byte values) written through the other two "+
		"by kvbench at 256 clients; the follower restarted and its Status polled every 20 ms (a fresh connection each "+
		"time) until its applied index reached the leader's commit index at the restart, and its store's revision the leader's "+
		"(a member counts a snapshot's index as applied once it takes the snapshot in, before its store is restored from it).\n\n", res.follower, res.keys)
	if res.load.res != nil {
		l := res.load.res.Latency
		fmt.Fprintf(b, "Load: %d writes in %.1f s, %s/s, p50 %.2f ms, p99 %.2f ms, errors %s, elections %s.\n\n",
			res.load.res.Requests, res.load.res.TotalSeconds, thousands(res.load.res.RequestsPerSec), l.P50, l.P99,
			errorCell(res.load), electionCell(res.load))
	}
	fmt.Fprintf(b, "| leader commit | restart → answering Status | restart → caught up | snapshots received | follower's peak RSS since the restart · RSS caught up | leader data dir |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|\n")
	caught, memory := "not reached", "not read"
	if res.toCaughtUp > 0 {
		caught = fmt.Sprintf("%.2f s", res.toCaughtUp.Seconds())
	}
	if res.mem.rss > 0 {
		memory = fmt.Sprintf("%.0f MiB · %.0f MiB (anonymous %.0f)", mib(res.mem.peak), mib(res.mem.rss), mib(res.mem.anon))
	}
	fmt.Fprintf(b, "| %d | %.2f s | %s | %d | %s | %.1f MiB (WAL %.1f, snapshots %.1f, bbolt %.1f) |\n\n", res.target,
		res.toAnswer.Seconds(), caught, res.snapshots, memory, mib(res.dataBytes>>10), mib(res.walBytes>>10),
		mib(res.snapBytes>>10), mib(res.stateBytes>>10))
	fmt.Fprintf(b, "```\n%s\n```\n\n", res.load.cmd)
}

// describe returns the median, mean, minimum and maximum (the median of
// an even count is the mean of the middle two).
func describe(xs []time.Duration) (med, mean, lo, hi time.Duration) {
	if len(xs) == 0 {
		return 0, 0, 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	return med, sum / time.Duration(n), s[0], s[n-1]
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func mib(kib int64) float64        { return float64(kib) / 1024 }

// thousands formats a rate with a thousands separator, as the issue does.
func thousands(x float64) string {
	s := strconv.FormatInt(int64(x+0.5), 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func oneMinute(l []float64) string {
	if len(l) == 0 {
		return "?"
	}
	return strconv.FormatFloat(l[0], 'f', 2, 64)
}

func loadString(l []float64) string {
	if len(l) == 0 {
		return "unknown"
	}
	var parts []string
	for _, x := range l {
		parts = append(parts, strconv.FormatFloat(x, 'f', 2, 64))
	}
	return strings.Join(parts, " ")
}

func firstLine(err error) string {
	if err == nil {
		return ""
	}
	line, _, _ := strings.Cut(err.Error(), "\n")
	return strings.ReplaceAll(line, "|", `\|`)
}

// currentLoad reads /proc/loadavg (nil where there is none).
func currentLoad() []float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	fields := strings.Fields(string(raw))
	if len(fields) < 3 {
		return nil
	}
	var out []float64
	for _, f := range fields[:3] {
		x, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil
		}
		out = append(out, x)
	}
	return out
}

// environment describes the machine and the code measured.
func environment(opt options) []envLine {
	var out []envLine
	commit := strings.TrimSpace(commandOutput("git", "rev-parse", "--short", "HEAD"))
	if commit == "" {
		commit = "unknown"
	} else if exec.Command("git", "diff-index", "--quiet", "HEAD", "--").Run() != nil ||
		strings.TrimSpace(commandOutput("git", "ls-files", "--others", "--exclude-standard", "*.go")) != "" {
		// Read-only plumbing: diff-index compares without refreshing (or
		// writing) the index.
		commit += " plus uncommitted changes"
	}
	out = append(out, envLine{"commit", commit})
	out = append(out, envLine{"go", runtime.Version()})
	cpu := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := strings.TrimSpace(commandOutput("uname", "-r"))
	out = append(out, envLine{"machine", fmt.Sprintf("%d CPUs (%s), %s %s", runtime.NumCPU(), cpu, runtime.GOOS, kernel)})
	disk := strings.Join(strings.Fields(lastLines(commandOutput("df", "-hT", "."), 1)), " ")
	out = append(out, envLine{"data", fmt.Sprintf("`%s` on `%s`", opt.dir, disk)})
	flags := fmt.Sprintf("defaults (heartbeat %v, election timeout %v, snapshot every %d entries)",
		server.DefaultHeartbeatInterval, server.DefaultElectionTimeout, server.DefaultSnapshotEvery)
	if opt.snapshotInterval > 0 {
		flags = fmt.Sprintf("defaults (heartbeat %v, election timeout %v) but --snapshot-interval %d",
			server.DefaultHeartbeatInterval, server.DefaultElectionTimeout, opt.snapshotInterval)
	}
	if opt.quotaBytes > 0 {
		flags += fmt.Sprintf(", and --quota-backend-bytes %d", opt.quotaBytes)
	}
	out = append(out, envLine{"keyvald flags", flags})
	return out
}

// keyvaldTiming states the election settings the members ran with: the
// defaults of the keyvald built from this checkout (the driver is built
// from the same one).
func keyvaldTiming() string {
	return fmt.Sprintf("keyvald defaults: heartbeat %v, election timeout %v (followers wait 1–2× that).",
		server.DefaultHeartbeatInterval, server.DefaultElectionTimeout)
}

func commandOutput(name string, args ...string) string {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout = &out
	if cmd.Run() != nil {
		return ""
	}
	return out.String()
}

// dirSize adds up the sizes of the files under dir.
func dirSize(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}
