package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/therealutkarshpriyadarshi/keyval/disk"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
)

// openStateDB opens the state machine's bbolt file. bbolt is written
// without fsync (the WAL is the record), so a power loss can leave the
// file damaged; a damaged file is moved aside, never deleted (an operator
// may want to look at it), and an empty one takes its place. The replica
// then rebuilds it as it does any store behind the log: from the newest
// snapshot file and the WAL after it (replica.Open).
func (s *Server) openStateDB() (*kvstore.Bolt, error) {
	rebuilds := prometheus.NewCounter(prometheus.CounterOpts{Name: "keyval_state_db_rebuilds_total",
		Help: "Times this node found state.db damaged at start, moved it aside and rebuilt it from the snapshot and the WAL."})
	if err := s.obs.m.Register(rebuilds); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	path := filepath.Join(s.cfg.DataDir, "state.db")
	opts := kvstore.Options{NoSync: true, OnFailure: func(err error) { s.fatal(fmt.Errorf("state machine: %w", err)) }}
	store, err := kvstore.OpenBolt(path, opts)
	if !errors.Is(err, kvstore.ErrDamaged) {
		return store, err
	}
	aside, mvErr := moveAside(path)
	if mvErr != nil {
		return nil, fmt.Errorf("%w; moving it aside failed: %w", err, mvErr)
	}
	s.log.Warn("state.db is damaged: moved aside, rebuilding it from the newest snapshot and the WAL", "err", err, "moved_to", aside)
	rebuilds.Inc()
	return kvstore.OpenBolt(path, opts)
}

// moveAside renames path to path.damaged-<unix time> (or a free name
// after it), durably, and returns the new name.
func moveAside(path string) (string, error) {
	base := path + ".damaged-" + strconv.FormatInt(time.Now().Unix(), 10)
	aside := base
	for n := 1; ; n++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break
		}
		aside = base + "." + strconv.Itoa(n)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	if err := (disk.OSFS{}).SyncDir(filepath.Dir(path)); err != nil {
		return "", err
	}
	return aside, nil
}
