package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// leafPagesOf lists the leaf pages of a closed bbolt file, in page order.
func leafPagesOf(t *testing.T, path string) []int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	var leaves []int
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		for id := 2; ; id++ {
			p, err := tx.Page(id)
			if err != nil || p == nil {
				return err
			}
			if p.Type == "leaf" {
				leaves = append(leaves, id)
			}
		}
	}))
	return leaves
}

func zeroPages(t *testing.T, path string, pages ...int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range pages {
		_, err := f.WriteAt(make([]byte, os.Getpagesize()), int64(p*os.Getpagesize()))
		require.NoError(t, err)
	}
}

// TestDamagedStateDBRebuiltOnStart writes through a real node, stops it,
// damages state.db as a power loss might (a page in the middle zeroed, or
// both meta pages), and starts it again: the file is moved aside, the
// store rebuilt from the snapshot and the WAL, every key is there, and the
// rebuild is counted.
func TestDamagedStateDBRebuiltOnStart(t *testing.T) {
	const keys = 400
	cases := map[string]func(t *testing.T, path string){
		"a page in the middle": func(t *testing.T, path string) {
			leaves := leafPagesOf(t, path)
			require.Greater(t, len(leaves), 10, "the key bucket spans many pages")
			zeroPages(t, path, leaves[len(leaves)/2])
		},
		"both meta pages": func(t *testing.T, path string) { zeroPages(t, path, 0, 1) },
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			c := newTestCluster(t, 1, 150) // snapshots at 150 and 300: restored from one, then the log replayed
			value := strings.Repeat("v", 200)
			for i := range keys {
				_, err := c.conns[c.leader()].Put(ctx(t), &apipb.PutRequest{Key: []byte(fmt.Sprintf("k%04d", i)), Value: []byte(value)})
				require.NoError(t, err)
			}
			c.stop(1)
			dir := filepath.Join(c.dir, "1")
			damage(t, filepath.Join(dir, "state.db"))

			c.startWith(1, Config{InitialCluster: c.members, Observability: Observability{MetricsAddr: "127.0.0.1:0"}})
			lead := c.leader()
			for i := range keys {
				g, err := c.conns[lead].Get(ctx(t), &apipb.GetRequest{Key: []byte(fmt.Sprintf("k%04d", i))})
				require.NoError(t, err)
				require.True(t, g.Found, "k%04d lost", i)
				require.Equal(t, value, string(g.Value))
			}
			require.Equal(t, 1.0, scrapeMetrics(t, c.servers[1]).value("keyval_state_db_rebuilds_total"))
			aside, err := filepath.Glob(filepath.Join(dir, "state.db.damaged-*"))
			require.NoError(t, err)
			require.Len(t, aside, 1, "the damaged file is kept beside the new one")
		})
	}
}

// TestDamagedSnapshotsRepairedFromPeers: a follower whose state.db and
// every snapshot file were damaged while it was down cannot rebuild its
// state machine from its own files, though its WAL is whole. It starts its
// log over from the state it was bootstrapped with, votes by its old log's
// end meanwhile, gets a snapshot and the rest from the leader, and serves
// every write, old and new, again.
func TestDamagedSnapshotsRepairedFromPeers(t *testing.T) {
	c := newTestCluster(t, 3, 50)
	lead := putThroughLeader(t, c, 200)
	f := lead%3 + 1
	c.stop(f)
	dir := filepath.Join(c.dir, fmt.Sprint(f))
	damageStateAndSnapshots(t, dir)

	c.startWith(f, Config{InitialCluster: c.members, Observability: Observability{MetricsAddr: "127.0.0.1:0"}})
	require.Equal(t, 1.0, scrapeMetrics(t, c.servers[f]).value("keyval_wal_repairs_total"))
	_, err := os.Stat(filepath.Join(dir, "votefloor"))
	require.NoError(t, err, "the repair left its vote floor")
	requireRepairedServes(t, c, f)
}

// TestRepairedMemberRefusesStaleSerializableReads: a member whose repair
// took its state machine back to an older state (here the empty bootstrap
// state) refuses serializable reads until it has applied past its vote
// floor, rather than answer with data older than it served before: with
// the other members down it cannot catch up, and says so. Once they are
// back it serves every key again.
func TestRepairedMemberRefusesStaleSerializableReads(t *testing.T) {
	c := newTestCluster(t, 3, 50)
	lead := putThroughLeader(t, c, 200)
	f := lead%3 + 1
	// Every member has applied the last write before any stops.
	for id := range c.servers {
		c.awaitKey(t, id, "k199")
	}
	for id := range c.members {
		c.stop(id)
	}
	dir := filepath.Join(c.dir, fmt.Sprint(f))
	damageStateAndSnapshots(t, dir)

	c.start(f)
	_, err := c.conns[f].Get(ctx(t), &apipb.GetRequest{Key: []byte("k0"), Serializable: true})
	require.Equal(t, codes.Unavailable, status.Code(err), "a serializable read of the repaired member's older state: %v", err)
	require.ErrorContains(t, err, "catching up after repairing its disk")

	for id := range c.members {
		if id != f {
			c.start(id)
		}
	}
	requireRepairedServes(t, c, f)
}

// damageStateAndSnapshots zeroes the meta pages of the state.db in a
// stopped member's data directory and flips a bit in each snapshot file.
func damageStateAndSnapshots(t *testing.T, dir string) {
	t.Helper()
	zeroPages(t, filepath.Join(dir, "state.db"), 0, 1)
	snaps, err := filepath.Glob(filepath.Join(dir, "snap", "*.snap"))
	require.NoError(t, err)
	require.NotEmpty(t, snaps)
	for _, p := range snaps {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		b[len(b)/2] ^= 0x10
		require.NoError(t, os.WriteFile(p, b, 0o600))
	}
}
