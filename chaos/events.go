package chaos

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// eventLog is the run's timeline: faults, restarts, leader changes. Each
// line carries the time since the run started, the same clock as the
// history's call and return times (in nanoseconds there), so an event can
// be matched with operations in the visualization.
type eventLog struct {
	start time.Time
	out   io.Writer // also printed here as it happens; nil: not printed

	mu    sync.Mutex
	lines []string
}

func newEventLog(start time.Time, out io.Writer) *eventLog {
	return &eventLog{start: start, out: out}
}

// since is the run clock: nanoseconds since the start.
func (e *eventLog) since() int64 { return int64(time.Since(e.start)) }

func (e *eventLog) note(format string, args ...any) {
	line := fmt.Sprintf("t=%9.3fs  %s", time.Duration(e.since()).Seconds(), fmt.Sprintf(format, args...))
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lines = append(e.lines, line)
	if e.out != nil {
		fmt.Fprintln(e.out, line)
	}
}

func (e *eventLog) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.lines...)
}
