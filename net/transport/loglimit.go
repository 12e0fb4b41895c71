package transport

import (
	"sync"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// logEvery is how often the same complaint about the same peer is logged
// again; the occurrences in between are counted and reported with it.
const logEvery = 10 * time.Second

// logLimiter keeps a complaint that can repeat with every message (Raft
// retries what the transport dropped) to one log line per peer per
// logEvery.
type logLimiter struct {
	mu   sync.Mutex
	seen map[limitKey]*limitState
}

type limitKey struct {
	what string
	peer core.NodeID
}

type limitState struct {
	last    time.Time
	skipped int
}

// allow reports whether to log what about peer now, and how many were
// left out since the last line.
func (l *logLimiter) allow(what string, peer core.NodeID) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[limitKey]*limitState{}
	}
	k := limitKey{what, peer}
	st := l.seen[k]
	if st == nil {
		if len(l.seen) >= maxStatsIDs {
			return false, 0
		}
		st = &limitState{}
		l.seen[k] = st
	}
	now := time.Now()
	if !st.last.IsZero() && now.Sub(st.last) < logEvery {
		st.skipped++
		return false, 0
	}
	skipped := st.skipped
	st.last, st.skipped = now, 0
	return true, skipped
}
