package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// Automatic compaction bounds the history the store keeps (kvstore's
// MVCC), as etcd's --auto-compaction-mode and --auto-compaction-retention
// do. Only the leader compacts, by proposing a Compact command: every
// member compacts at the same revision, in log order.
//
//   - periodic: keep at least the retention's worth of history. The leader
//     samples the revision every tenth of the retention and compacts at
//     the newest sample at least the retention old.
//   - revision: keep the latest retention revisions; checked every
//     compactionCheck.
const (
	CompactionPeriodic = "periodic"
	CompactionRevision = "revision"
	// DefaultAutoCompactionRetention keeps an hour of history: enough for
	// a client to read at, or resume from, a recent revision, while the
	// history of a store written without pause stays bounded.
	DefaultAutoCompactionRetention = "1h"
	compactionCheck                = 5 * time.Second
)

// compactionPolicy is a parsed --auto-compaction-mode and -retention.
type compactionPolicy struct {
	period    time.Duration // periodic: the history to keep; 0: off
	revisions uint64        // revision: the revisions to keep; 0: off
}

// parseCompaction reads etcd's flags: retention "0" turns compaction off;
// a bare number is hours in periodic mode (as etcd reads it) and a count
// in revision mode.
func parseCompaction(mode, retention string) (compactionPolicy, error) {
	retention = strings.TrimSpace(retention)
	switch mode {
	case "", CompactionPeriodic:
		if n, err := strconv.ParseUint(retention, 10, 64); err == nil {
			return compactionPolicy{period: time.Duration(n) * time.Hour}, nil
		}
		d, err := time.ParseDuration(retention)
		if err != nil || d < 0 {
			return compactionPolicy{}, fmt.Errorf("--auto-compaction-retention %q: periodic mode takes a duration (5m, 1h) or a number of hours", retention)
		}
		return compactionPolicy{period: d}, nil
	case CompactionRevision:
		n, err := strconv.ParseUint(retention, 10, 64)
		if err != nil {
			return compactionPolicy{}, fmt.Errorf("--auto-compaction-retention %q: revision mode takes a number of revisions", retention)
		}
		return compactionPolicy{revisions: n}, nil
	}
	return compactionPolicy{}, fmt.Errorf("--auto-compaction-mode %q: must be %s or %s", mode, CompactionPeriodic, CompactionRevision)
}

// revisionSample is the store's revision at a moment.
type revisionSample struct {
	at  time.Time
	rev uint64
}

// compactor runs until the node stops, compacting while this node leads.
func (s *Server) compactor(p compactionPolicy) {
	every := compactionCheck
	if p.period > 0 {
		every = max(p.period/10, 10*time.Millisecond)
	} else if p.revisions == 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var samples []revisionSample
	for {
		select {
		case <-s.stopping:
			return
		case now := <-t.C:
			if s.leader.Load() != uint64(s.cfg.ID) {
				samples = samples[:0] // a new leader starts its own clock
				continue
			}
			var target uint64
			target, samples = compactionTarget(p, samples, revisionSample{now, s.store.Revision()})
			if target > s.store.CompactedRevision() {
				s.compactTo(target)
			}
		}
	}
}

// compactionTarget adds the sample taken now and returns the revision to
// compact at (0: none yet) and the samples still needed.
func compactionTarget(p compactionPolicy, samples []revisionSample, now revisionSample) (uint64, []revisionSample) {
	if p.revisions > 0 {
		if now.rev > p.revisions {
			return now.rev - p.revisions, samples
		}
		return 0, samples
	}
	samples = append(samples, now)
	var target uint64
	for len(samples) > 0 && now.at.Sub(samples[0].at) >= p.period {
		target = samples[0].rev
		samples = samples[1:]
	}
	return target, samples
}

func (s *Server) compactTo(rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	res, _, err := s.write(ctx, kvstore.EncodeCompact(rev, ""))
	if err != nil && res.Status != kvstore.StatusCompacted {
		s.log.Warn("automatic compaction failed; retrying later", "revision", rev, "err", err)
		return
	}
	s.log.Info("compacted the history", "revision", rev)
}
