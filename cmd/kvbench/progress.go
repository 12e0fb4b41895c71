package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progressEvery is how often the progress line is refreshed.
const progressEvery = time.Second

// startProgress prints a progress line to w about once a second until the
// returned function is called (which prints a last one). On a terminal the
// line is rewritten in place; elsewhere (a log file, a pipe) each refresh
// is a line of its own. It reads the workers' own counters, so the workers
// share nothing with it but those atomics.
func (b *bench) startProgress(w io.Writer, start time.Time) (stop func()) {
	if w == nil {
		return func() {}
	}
	inPlace := isTerminal(w)
	quit, done := make(chan struct{}), make(chan struct{})
	var lastOps int64
	lastAt := start
	report := func(now time.Time, final bool) {
		var ops, errs int64
		for _, wk := range b.workers {
			ops += wk.ops.Load()
			errs += wk.errs.Load()
		}
		recent := float64(ops-lastOps) / max(now.Sub(lastAt).Seconds(), 1e-9)
		lastOps, lastAt = ops, now
		line := fmt.Sprintf("%6.1fs %10d done", now.Sub(start).Seconds(), ops)
		if b.cfg.total > 0 {
			line += fmt.Sprintf(" (%3.0f%%)", 100*float64(ops)/float64(b.cfg.total))
		}
		line += fmt.Sprintf("  %8.0f/s now  %d errors", recent, errs)
		switch {
		case inPlace && final:
			fmt.Fprintf(w, "\r%s\n", line)
		case inPlace:
			fmt.Fprintf(w, "\r%s", line)
		case !final:
			fmt.Fprintln(w, line)
		}
	}
	go func() {
		defer close(done)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				report(now, false)
			case <-quit:
				report(time.Now(), true)
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// isTerminal says whether w is a character device (a terminal), where a
// line can be rewritten with a carriage return.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
