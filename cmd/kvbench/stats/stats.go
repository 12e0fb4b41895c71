// Package stats turns the latencies a load generator records into the
// figures a benchmark reports: throughput, latency extremes, mean and
// standard deviation, percentiles and a histogram, plus a tally of errors.
//
// Recording is split from summarising so that recording costs a load
// generator's workers almost nothing: each worker owns a Recorder (no locks,
// no shared cache lines, storage allocated up front) and the Recorders are
// merged and sorted once, after the run.
package stats

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Recorder collects one worker's latencies and errors. It is not safe for
// concurrent use: give each worker its own.
type Recorder struct {
	lat    []time.Duration
	errs   map[string]int
	errors int
}

// maxErrorKinds bounds the distinct error messages one Recorder keeps, so a
// storm of errors with varying text cannot grow memory without limit; the
// rest are counted under OtherErrors.
const maxErrorKinds = 32

// OtherErrors is the message under which errors beyond the distinct
// messages a Recorder keeps are counted.
const OtherErrors = "(other errors)"

// NewRecorder returns a Recorder with room for capacity latencies before
// it has to grow.
func NewRecorder(capacity int) *Recorder {
	return &Recorder{lat: make([]time.Duration, 0, max(capacity, 0))}
}

// Observe records the latency of one successful operation.
func (r *Recorder) Observe(d time.Duration) { r.lat = append(r.lat, d) }

// Fail records one failed operation under msg (errors with the same
// message are counted together).
func (r *Recorder) Fail(msg string) {
	r.errors++
	if r.errs == nil {
		r.errs = make(map[string]int)
	}
	if _, ok := r.errs[msg]; !ok && len(r.errs) >= maxErrorKinds {
		msg = OtherErrors
	}
	r.errs[msg]++
}

// Count returns how many latencies have been recorded.
func (r *Recorder) Count() int { return len(r.lat) }

// Errors returns how many failures have been recorded.
func (r *Recorder) Errors() int { return r.errors }

// Percentiles are the percentiles every Summary reports, in order.
var Percentiles = []float64{10, 25, 50, 75, 90, 95, 99, 99.9}

// DefaultBuckets is the number of histogram buckets Summarize uses when
// asked for none.
const DefaultBuckets = 10

// Summary is what a run measured. Latencies are in milliseconds so the JSON
// form reads directly; Requests counts successes only.
type Summary struct {
	Requests       int             `json:"requests"`
	Errors         int             `json:"errors"`
	ErrorSummary   []ErrorCount    `json:"error_summary"`
	TotalSeconds   float64         `json:"total_seconds"`
	RequestsPerSec float64         `json:"requests_per_sec"`
	Latency        Latency         `json:"latency_ms"`
	Histogram      []Bucket        `json:"histogram"`
	sortedLatency  []time.Duration // kept for tests and further analysis
}

// Latency holds the latency figures, in milliseconds. With no successful
// requests every field is zero.
type Latency struct {
	Fastest float64 `json:"fastest"`
	Slowest float64 `json:"slowest"`
	Average float64 `json:"average"`
	Stddev  float64 `json:"stddev"`
	P10     float64 `json:"p10"`
	P25     float64 `json:"p25"`
	P50     float64 `json:"p50"`
	P75     float64 `json:"p75"`
	P90     float64 `json:"p90"`
	P95     float64 `json:"p95"`
	P99     float64 `json:"p99"`
	P999    float64 `json:"p99_9"`
}

// ErrorCount is one error message and how often it was seen.
type ErrorCount struct {
	Message string `json:"message"`
	Count   int    `json:"count"`
}

// Bucket is one histogram bar: Count latencies above the previous bucket's
// bound and at most UpToMs.
type Bucket struct {
	UpToMs float64 `json:"up_to_ms"`
	Count  int     `json:"count"`
}

// Summarize merges the Recorders and computes the figures for a run that
// took elapsed. buckets is the histogram's bar count (DefaultBuckets if not
// positive). The Recorders are left as they were.
func Summarize(recs []*Recorder, elapsed time.Duration, buckets int) Summary {
	n := 0
	for _, r := range recs {
		n += len(r.lat)
	}
	all := make([]time.Duration, 0, n)
	errs := map[string]int{}
	s := Summary{TotalSeconds: elapsed.Seconds()}
	for _, r := range recs {
		all = append(all, r.lat...)
		s.Errors += r.errors
		for msg, c := range r.errs {
			errs[msg] += c
		}
	}
	slices.Sort(all)
	s.sortedLatency = all
	s.Requests = len(all)
	if elapsed > 0 {
		s.RequestsPerSec = float64(len(all)) / elapsed.Seconds()
	}
	s.ErrorSummary = sortErrors(errs)
	if buckets <= 0 {
		buckets = DefaultBuckets
	}
	s.Histogram = Histogram(all, buckets)
	s.Latency = latencyOf(all)
	return s
}

// Sorted returns the merged latencies in ascending order.
func (s Summary) Sorted() []time.Duration { return s.sortedLatency }

// PercentileMs returns the p-th percentile of the run's latencies in ms.
func (s Summary) PercentileMs(p float64) float64 { return ms(Percentile(s.sortedLatency, p)) }

func latencyOf(sorted []time.Duration) Latency {
	if len(sorted) == 0 {
		return Latency{}
	}
	mean, sd := meanStddev(sorted)
	pct := make([]float64, len(Percentiles))
	for i, p := range Percentiles {
		pct[i] = ms(Percentile(sorted, p))
	}
	return Latency{
		Fastest: ms(sorted[0]), Slowest: ms(sorted[len(sorted)-1]),
		Average: mean / 1e6, Stddev: sd / 1e6,
		P10: pct[0], P25: pct[1], P50: pct[2], P75: pct[3], P90: pct[4], P95: pct[5], P99: pct[6], P999: pct[7],
	}
}

// meanStddev returns the mean and population standard deviation in
// nanoseconds, computed in two passes to keep rounding error small.
func meanStddev(xs []time.Duration) (mean, sd float64) {
	var sum float64
	for _, x := range xs {
		sum += float64(x)
	}
	mean = sum / float64(len(xs))
	var sq float64
	for _, x := range xs {
		d := float64(x) - mean
		sq += d * d
	}
	return mean, math.Sqrt(sq / float64(len(xs)))
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method: the smallest sample with at least p% of the samples
// at or below it. It is always one of the samples, so it never reports a
// latency nobody saw. Empty input gives 0; p ≤ 0 gives the smallest sample
// and p ≥ 100 the largest.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	// The epsilon keeps floating-point noise (99.9% of 1000 computing as a
	// hair above 999) from pushing the rank up by one.
	rank := int(math.Ceil(p*float64(n)/100 - 1e-9))
	return sorted[min(max(rank, 1), n)-1]
}

// Histogram splits sorted into n equal-width buckets from the fastest to
// the slowest sample (fewer if the range is under n nanoseconds). Every
// sample falls in exactly one bucket, the last bucket's bound is the slowest
// sample, and when all samples are equal there is a single bucket. Empty
// input gives no buckets.
func Histogram(sorted []time.Duration, n int) []Bucket {
	if len(sorted) == 0 || n <= 0 {
		return nil
	}
	lo, hi := sorted[0], sorted[len(sorted)-1]
	if lo == hi {
		return []Bucket{{UpToMs: ms(hi), Count: len(sorted)}}
	}
	// Bounds are whole nanoseconds: never more buckets than nanoseconds in
	// the range, or two buckets would share a bound.
	n = int(min(int64(n), int64(hi-lo)))
	width := float64(hi-lo) / float64(n)
	out := make([]Bucket, n)
	i := 0 // next sample to place; sorted, so one pass suffices
	for b := range out {
		bound := hi
		if b < n-1 {
			bound = lo + time.Duration(math.Ceil(width*float64(b+1)))
		}
		start := i
		for i < len(sorted) && sorted[i] <= bound {
			i++
		}
		out[b] = Bucket{UpToMs: ms(bound), Count: i - start}
	}
	return out
}

func sortErrors(m map[string]int) []ErrorCount {
	out := make([]ErrorCount, 0, len(m))
	for msg, c := range m {
		out = append(out, ErrorCount{Message: msg, Count: c})
	}
	slices.SortFunc(out, func(a, b ErrorCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Message, b.Message)
	})
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
