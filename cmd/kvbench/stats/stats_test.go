package stats

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

// summaryOf records ds in one Recorder and summarises them.
func summaryOf(ds []time.Duration, buckets int) Summary {
	r := NewRecorder()
	for _, d := range ds {
		r.Observe(d)
	}
	return Summarize([]*Recorder{r}, time.Second, buckets)
}

// nearestRank is the exact p-th percentile of sorted by the nearest-rank
// method, which the histogram's figures must match to its precision.
func nearestRank(sorted []time.Duration, p float64) time.Duration {
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p*float64(len(sorted))/100 - 1e-9))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// resolution is how far above a latency the histogram may report it: half
// a microsecond below a millisecond, three significant digits above.
func resolution(ms float64) float64 { return max(0.000512, ms/1024) }

// checkPercentile fails unless got (ms) is want or above it by at most the
// histogram's resolution.
func checkPercentile(t interface {
	Helper()
	Fatalf(string, ...any)
}, p, got float64, want time.Duration) {
	t.Helper()
	w := ms(want)
	if got < w || got > w+resolution(w) {
		t.Fatalf("p%v = %v ms, want %v ms (to within %v ms above)", p, got, w, resolution(w))
	}
}

func (l Latency) at(p float64) float64 { return l.percentile(slices.Index(Percentiles, p)) }

func TestPercentileOneSampleIsThatSample(t *testing.T) {
	l := summaryOf(durations(7), 0).Latency
	for i, p := range Percentiles {
		if got := l.percentile(i); got != 7 {
			t.Errorf("p%v of [7ms] = %v, want 7 ms", p, got)
		}
	}
}

func TestPercentileNearestRank(t *testing.T) {
	// 1..100 ms: the p-th percentile of a hundred samples is sample p.
	xs := make([]int, 100)
	for i := range xs {
		xs[i] = i + 1
	}
	l := summaryOf(durations(xs...), 0).Latency
	for _, p := range Percentiles {
		checkPercentile(t, p, l.at(p), time.Duration(math.Ceil(p))*time.Millisecond)
	}
	// 99.9% of 1000 samples is exactly the 999th; floating-point noise must
	// not round the rank up to the 1000th.
	thousand := make([]int, 1000)
	for i := range thousand {
		thousand[i] = i + 1
	}
	l = summaryOf(durations(thousand...), 0).Latency
	checkPercentile(t, 99.9, l.P999, 999*time.Millisecond)
	checkPercentile(t, 50, l.P50, 500*time.Millisecond)
}

func TestPercentileTies(t *testing.T) {
	l := summaryOf(durations(1, 2, 2, 2, 2, 2, 2, 2, 2, 9), 0).Latency
	for _, tc := range []struct {
		p    float64
		want int
	}{{10, 1}, {25, 2}, {50, 2}, {90, 2}, {95, 9}, {99.9, 9}} {
		checkPercentile(t, tc.p, l.at(tc.p), time.Duration(tc.want)*time.Millisecond)
	}
}

func TestPercentileProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		xs := rapid.SliceOfN(rapid.Int64Range(0, int64(time.Second)), 1, 300).Draw(t, "xs")
		s := make([]time.Duration, len(xs))
		for i, x := range xs {
			s[i] = time.Duration(x)
		}
		sum := summaryOf(s, 0)
		slices.Sort(s)
		l := sum.Latency
		if l.Fastest != ms(s[0]) || l.Slowest != ms(s[len(s)-1]) {
			t.Fatalf("fastest %v slowest %v, want %v and %v", l.Fastest, l.Slowest, ms(s[0]), ms(s[len(s)-1]))
		}
		prev := l.Fastest
		for _, p := range Percentiles {
			got := l.at(p)
			if got < prev || got > l.Slowest {
				t.Fatalf("p%v = %v out of order (previous %v, slowest %v)", p, got, prev, l.Slowest)
			}
			checkPercentile(t, p, got, nearestRank(s, p))
			prev = got
		}
	})
}

func TestHistogramEqualSamples(t *testing.T) {
	h := summaryOf(durations(3, 3, 3), 10).Histogram
	if len(h) != 1 || h[0].Count != 3 || h[0].UpToMs != 3 {
		t.Errorf("histogram of 3,3,3 = %v, want one bucket up to 3ms holding 3", h)
	}
}

func TestHistogramBuckets(t *testing.T) {
	// 0..10 ms into 5 buckets of 2 ms: (.., 2], (2, 4], ... (8, 10].
	h := summaryOf(durations(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 5).Histogram
	want := []Bucket{{2, 3}, {4, 2}, {6, 2}, {8, 2}, {10, 2}}
	if !slices.Equal(h, want) {
		t.Errorf("histogram = %v, want %v", h, want)
	}
	// One slow outlier: everything else lands in the first bucket, the
	// outlier alone in the last.
	h = summaryOf(durations(1, 1, 1, 1, 100), 4).Histogram
	if h[0].Count != 4 || h[3].Count != 1 || h[1].Count+h[2].Count != 0 {
		t.Errorf("histogram with an outlier = %v", h)
	}
}

func TestHistogramProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		xs := rapid.SliceOfN(rapid.Int64Range(0, int64(time.Second)), 1, 300).Draw(t, "xs")
		s := make([]time.Duration, len(xs))
		for i, x := range xs {
			s[i] = time.Duration(x)
		}
		n := rapid.IntRange(1, 50).Draw(t, "buckets")
		h := summaryOf(s, n).Histogram
		slices.Sort(s)
		if want := int(min(int64(n), int64(s[len(s)-1]-s[0]))); s[0] != s[len(s)-1] && len(h) != want {
			t.Fatalf("%d buckets, want %d", len(h), want)
		}
		total := 0
		for i, b := range h {
			total += b.Count
			if i > 0 && b.UpToMs <= h[i-1].UpToMs {
				t.Fatalf("bounds not increasing: %v", h)
			}
		}
		if total != len(s) {
			t.Fatalf("buckets hold %d samples, want %d", total, len(s))
		}
		if last := h[len(h)-1].UpToMs; last != ms(s[len(s)-1]) {
			t.Fatalf("last bound %v, want the slowest sample %v", last, ms(s[len(s)-1]))
		}
		// Each sample is in the first bucket whose bound is at or above
		// it, or in one before it by no more than the histogram's
		// resolution (a sample is placed by the bottom of its bar).
		i := 0
		for b, bucket := range h {
			for k := 0; k < bucket.Count; k++ {
				x := ms(s[i])
				if x-resolution(x) > bucket.UpToMs || (b > 0 && x <= h[b-1].UpToMs) {
					t.Fatalf("sample %vms in bucket %d of %v", x, b, h)
				}
				i++
			}
		}
	})
}

func TestSummarizeMergesRecorders(t *testing.T) {
	a, b := NewRecorder(), NewRecorder()
	for _, d := range durations(1, 2, 3) {
		a.Observe(d)
	}
	b.Observe(4 * time.Millisecond)
	b.Fail("boom")
	b.Fail("boom")
	a.Fail("bang")
	s := Summarize([]*Recorder{a, b}, 2*time.Second, 0)
	if s.Requests != 4 || s.Errors != 3 {
		t.Fatalf("requests %d errors %d, want 4 and 3", s.Requests, s.Errors)
	}
	if s.RequestsPerSec != 2 {
		t.Errorf("requests/s = %v, want 2", s.RequestsPerSec)
	}
	wantErrs := []ErrorCount{{"boom", 2}, {"bang", 1}}
	if !slices.Equal(s.ErrorSummary, wantErrs) {
		t.Errorf("error summary %v, want %v", s.ErrorSummary, wantErrs)
	}
	l := s.Latency
	if l.Fastest != 1 || l.Slowest != 4 || l.Average != 2.5 || l.P999 != 4 {
		t.Errorf("latency %+v", l)
	}
	checkPercentile(t, 50, l.P50, 2*time.Millisecond)
	if want := math.Sqrt(1.25); math.Abs(l.Stddev-want) > resolution(want) {
		t.Errorf("stddev %v, want %v (population)", l.Stddev, want)
	}
	if len(s.Histogram) != DefaultBuckets {
		t.Errorf("%d histogram buckets, want %d", len(s.Histogram), DefaultBuckets)
	}
	if a.Count() != 3 || b.Count() != 1 {
		t.Errorf("Summarize changed the recorders")
	}
}

func TestSummarizeNothing(t *testing.T) {
	s := Summarize(nil, 0, 10)
	if s.Requests != 0 || s.RequestsPerSec != 0 || s.Latency != (Latency{}) || s.Histogram != nil {
		t.Errorf("empty summary %+v", s)
	}
	var out strings.Builder
	if err := s.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Errors: none") {
		t.Errorf("empty summary text:\n%s", out.String())
	}
}

func TestRecorderBoundsErrorKinds(t *testing.T) {
	r := NewRecorder()
	for i := range maxErrorKinds + 10 {
		r.Fail(fmt.Sprintf("error %d", i))
	}
	r.Fail("error 0") // a kind already kept is still counted under its own name
	s := Summarize([]*Recorder{r}, time.Second, 0)
	if s.Errors != maxErrorKinds+11 {
		t.Errorf("errors = %d, want %d", s.Errors, maxErrorKinds+11)
	}
	if len(s.ErrorSummary) != maxErrorKinds+1 {
		t.Errorf("%d error kinds, want %d", len(s.ErrorSummary), maxErrorKinds+1)
	}
	if s.ErrorSummary[0] != (ErrorCount{OtherErrors, 10}) {
		t.Errorf("first error kind %v, want the 10 others", s.ErrorSummary[0])
	}
}

func TestJSONFields(t *testing.T) {
	r := NewRecorder()
	r.Observe(time.Millisecond)
	r.Fail("x")
	raw, err := json.Marshal(Summarize([]*Recorder{r}, time.Second, 3))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"requests", "errors", "error_summary", "total_seconds", "requests_per_sec", "latency_ms", "histogram"} {
		if _, ok := m[f]; !ok {
			t.Errorf("JSON lacks %q: %s", f, raw)
		}
	}
	lat, _ := m["latency_ms"].(map[string]any)
	for _, f := range []string{"fastest", "slowest", "average", "stddev", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p99_9"} {
		if _, ok := lat[f]; !ok {
			t.Errorf("latency_ms lacks %q: %s", f, raw)
		}
	}
	hist, _ := m["histogram"].([]any)
	if len(hist) != 1 {
		t.Fatalf("histogram %v, want one bucket", m["histogram"])
	}
	if b, _ := hist[0].(map[string]any); b["up_to_ms"] != 1.0 || b["count"] != 1.0 {
		t.Errorf("bucket %v", hist[0])
	}
	errs, _ := m["error_summary"].([]any)
	if e, _ := errs[0].(map[string]any); e["message"] != "x" || e["count"] != 1.0 {
		t.Errorf("error summary %v", m["error_summary"])
	}
}

func TestWriteText(t *testing.T) {
	r := NewRecorder()
	for range 80 {
		r.Observe(time.Millisecond)
	}
	r.Observe(100 * time.Millisecond)
	r.Fail("no leader")
	var out strings.Builder
	if err := Summarize([]*Recorder{r}, time.Second, 5).WriteText(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"Requests:     81 succeeded, 1 failed",
		"Slowest:      100.000 ms",
		"99.9% in 100.000 ms",
		"   50% in 1.000 ms",
		"|" + strings.Repeat("#", barWidth) + "\n",
		"[ 1] |#\n", // the lone outlier keeps a visible bar
		"Errors: 1 (1.22% of 82 operations):",
		"       1  no leader",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}
