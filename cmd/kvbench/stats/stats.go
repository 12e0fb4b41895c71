// Package stats turns the latencies a load generator records into the
// figures a benchmark reports: throughput, latency extremes, mean and
// standard deviation, percentiles and a histogram, plus a tally of errors.
//
// Recording is split from summarising so that recording costs a load
// generator's workers almost nothing: each worker owns a Recorder (no locks,
// no shared cache lines) and the Recorders are merged once, after the run.
// Latencies go into an HDR histogram (github.com/HdrHistogram/hdrhistogram-go)
// rather than a slice of every sample, so a long run's memory stays fixed;
// the price is that percentiles are exact to three significant digits (and
// to half a microsecond below a millisecond), which is finer than any
// figure the reports print. Fastest, slowest and the mean stay exact.
package stats

import (
	"cmp"
	"math"
	"slices"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// The histogram's range and precision. Nanosecond values with a lowest
// discernible value of a microsecond keep sub-millisecond latencies to
// within half a microsecond; an hour is beyond any request timeout, and a
// longer latency (an open loop hopelessly behind) is counted as an hour in
// the percentiles while Slowest keeps its true value.
const (
	lowestDiscernible = int64(time.Microsecond)
	highestTrackable  = int64(time.Hour)
	significantDigits = 3
)

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(lowestDiscernible, highestTrackable, significantDigits)
}

// Recorder collects one worker's latencies and errors. It is not safe for
// concurrent use: give each worker its own. The zero Recorder is ready to
// use; its histogram is made on the first latency, so a worker's recorder
// for a kind of operation it never makes costs nothing.
type Recorder struct {
	hist     *hdrhistogram.Histogram
	count    int
	sum      float64 // nanoseconds, for the exact mean
	min, max time.Duration
	errs     map[string]int
	errors   int
}

// maxErrorKinds bounds the distinct error messages one Recorder keeps, so a
// storm of errors with varying text cannot grow memory without limit; the
// rest are counted under OtherErrors.
const maxErrorKinds = 32

// OtherErrors is the message under which errors beyond the distinct
// messages a Recorder keeps are counted.
const OtherErrors = "(other errors)"

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{} }

// Observe records the latency of one successful operation.
func (r *Recorder) Observe(d time.Duration) {
	d = max(d, 0)
	if r.hist == nil {
		r.hist = newHistogram()
	}
	// In range by construction, so RecordValue cannot fail.
	_ = r.hist.RecordValue(min(int64(d), highestTrackable))
	if r.count == 0 || d < r.min {
		r.min = d
	}
	r.max = max(r.max, d)
	r.sum += float64(d)
	r.count++
}

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
func (r *Recorder) Count() int { return r.count }

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
	Requests       int          `json:"requests"`
	Errors         int          `json:"errors"`
	ErrorSummary   []ErrorCount `json:"error_summary"`
	TotalSeconds   float64      `json:"total_seconds"`
	RequestsPerSec float64      `json:"requests_per_sec"`
	Latency        Latency      `json:"latency_ms"`
	Histogram      []Bucket     `json:"histogram"`
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
	var all Recorder
	all.hist = newHistogram()
	errs := map[string]int{}
	s := Summary{TotalSeconds: elapsed.Seconds()}
	for _, r := range recs {
		all.merge(r)
		s.Errors += r.errors
		for msg, c := range r.errs {
			errs[msg] += c
		}
	}
	s.Requests = all.count
	if elapsed > 0 {
		s.RequestsPerSec = float64(all.count) / elapsed.Seconds()
	}
	s.ErrorSummary = sortErrors(errs)
	if buckets <= 0 {
		buckets = DefaultBuckets
	}
	if all.count > 0 {
		bars := nonEmptyBars(all.hist)
		s.Histogram = all.buckets(bars, buckets)
		s.Latency = all.latency(bars)
	}
	return s
}

// merge adds o's latencies to r's (r's histogram must exist).
func (r *Recorder) merge(o *Recorder) {
	if o.count == 0 {
		return
	}
	r.hist.Merge(o.hist)
	if r.count == 0 || o.min < r.min {
		r.min = o.min
	}
	r.max = max(r.max, o.max)
	r.sum += o.sum
	r.count += o.count
}

// nonEmptyBars are the histogram's occupied value ranges, ascending.
func nonEmptyBars(h *hdrhistogram.Histogram) []hdrhistogram.Bar {
	var out []hdrhistogram.Bar
	for _, b := range h.Distribution() {
		if b.Count > 0 {
			out = append(out, b)
		}
	}
	return out
}

func (r *Recorder) latency(bars []hdrhistogram.Bar) Latency {
	pct := make([]float64, len(Percentiles))
	for i, p := range Percentiles {
		pct[i] = ms(r.percentile(bars, p))
	}
	return Latency{
		Fastest: ms(r.min), Slowest: ms(r.max),
		Average: r.sum / float64(r.count) / 1e6, Stddev: r.hist.StdDev() / 1e6,
		P10: pct[0], P25: pct[1], P50: pct[2], P75: pct[3], P90: pct[4], P95: pct[5], P99: pct[6], P999: pct[7],
	}
}

// percentile returns the p-th percentile (0 < p ≤ 100) by the nearest-rank
// method: the smallest latency with at least p% of the samples at or below
// it, as the top of its histogram bar, kept within the exact fastest and
// slowest so that it never lies outside what was seen. p ≤ 0 gives the
// fastest and p ≥ 100 the slowest.
func (r *Recorder) percentile(bars []hdrhistogram.Bar, p float64) time.Duration {
	if p <= 0 {
		return r.min
	}
	// The epsilon keeps floating-point noise (99.9% of 1000 computing as a
	// hair above 999) from pushing the rank up by one.
	rank := int64(math.Ceil(p*float64(r.count)/100 - 1e-9))
	rank = min(max(rank, 1), int64(r.count))
	var seen int64
	for _, b := range bars {
		seen += b.Count
		if seen >= rank {
			return min(max(time.Duration(b.To), r.min), r.max)
		}
	}
	return r.max
}

// buckets splits the latencies into n equal-width buckets from the fastest
// to the slowest (fewer if the range is under n nanoseconds). Every sample
// falls in exactly one bucket, placed by the bottom of its histogram bar,
// and the last bucket's bound is the slowest; when all samples are equal
// there is a single bucket.
func (r *Recorder) buckets(bars []hdrhistogram.Bar, n int) []Bucket {
	lo, hi := r.min, r.max
	if lo == hi {
		return []Bucket{{UpToMs: ms(hi), Count: r.count}}
	}
	// Bounds are whole nanoseconds: never more buckets than nanoseconds in
	// the range, or two buckets would share a bound.
	n = int(min(int64(n), int64(hi-lo)))
	width := float64(hi-lo) / float64(n)
	bounds := make([]time.Duration, n)
	out := make([]Bucket, n)
	for i := range out {
		bounds[i] = hi
		if i < n-1 {
			bounds[i] = lo + time.Duration(math.Ceil(width*float64(i+1)))
		}
		out[i].UpToMs = ms(bounds[i])
	}
	i := 0 // bars are ascending, so one pass suffices
	for _, b := range bars {
		v := min(max(time.Duration(b.From), lo), hi)
		for v > bounds[i] {
			i++
		}
		out[i].Count += int(b.Count)
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
