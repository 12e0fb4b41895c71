package stats

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// barWidth is the length of the histogram's longest bar.
const barWidth = 40

// WriteText writes the summary for people: totals, latency figures, an
// ASCII histogram, the percentiles, and the errors (or that there were
// none).
func (s Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Summary:\n")
	fmt.Fprintf(&b, "  Total:        %.4f s\n", s.TotalSeconds)
	fmt.Fprintf(&b, "  Requests:     %d succeeded, %d failed\n", s.Requests, s.Errors)
	fmt.Fprintf(&b, "  Requests/s:   %.1f\n", s.RequestsPerSec)
	if s.Requests > 0 {
		l := s.Latency
		fmt.Fprintf(&b, "  Slowest:      %.3f ms\n", l.Slowest)
		fmt.Fprintf(&b, "  Fastest:      %.3f ms\n", l.Fastest)
		fmt.Fprintf(&b, "  Average:      %.3f ms\n", l.Average)
		fmt.Fprintf(&b, "  Stddev:       %.3f ms\n", l.Stddev)

		fmt.Fprintf(&b, "\nLatency histogram (bucket upper bound, count):\n")
		writeHistogram(&b, s.Histogram)

		fmt.Fprintf(&b, "\nLatency distribution:\n")
		for i, p := range Percentiles {
			fmt.Fprintf(&b, "  %5s%% in %.3f ms\n", strconv.FormatFloat(p, 'f', -1, 64), s.Latency.percentile(i))
		}
	}
	if s.Errors == 0 {
		fmt.Fprintf(&b, "\nErrors: none\n")
	} else {
		fmt.Fprintf(&b, "\nErrors: %d (%.2f%% of %d operations):\n", s.Errors,
			100*float64(s.Errors)/float64(s.Errors+s.Requests), s.Errors+s.Requests)
		for _, e := range s.ErrorSummary {
			fmt.Fprintf(&b, "  %8d  %s\n", e.Count, e.Message)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// percentile returns the i-th of Percentiles.
func (l Latency) percentile(i int) float64 {
	return [...]float64{l.P10, l.P25, l.P50, l.P75, l.P90, l.P95, l.P99, l.P999}[i]
}

// writeHistogram draws one line per bucket with a bar of '#' scaled so the
// fullest bucket is barWidth long; a bucket with any samples gets at least
// one mark, so rare slow requests stay visible.
func writeHistogram(b *strings.Builder, hist []Bucket) {
	most := 0
	for _, h := range hist {
		most = max(most, h.Count)
	}
	if most == 0 {
		return
	}
	countWidth := len(strconv.Itoa(most))
	for _, h := range hist {
		bar := h.Count * barWidth / most
		if h.Count > 0 && bar == 0 {
			bar = 1
		}
		fmt.Fprintf(b, "  %10.3f ms [%*d] |%s\n", h.UpToMs, countWidth, h.Count, strings.Repeat("#", bar))
	}
}
