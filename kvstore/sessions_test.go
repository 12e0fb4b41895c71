package kvstore

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

const (
	t0  = uint64(1_700_000_000_000) // a Unix time in ms
	ttl = uint64(60_000)
)

func usageOf(t *testing.T, s Store) Usage {
	t.Helper()
	u, ok := s.(interface{ Usage() Usage })
	require.True(t, ok, "%T has no Usage", s)
	return u.Usage()
}

// register stamps a Register at nowMs under a cap of max sessions.
func (a *applier) register(nowMs, max uint64) Result {
	a.t.Helper()
	return a.one(registerAt(nowMs, max, ttl))
}

func TestSessionCapRefusesWithoutTouchingLiveSessions(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		c1 := a.register(t0, 2).ClientID
		c2 := a.register(t0+10, 2).ClientID
		require.Equal(t, StatusOK, a.one(putCmd(c1, 1, "k", "v1")).Status)

		// The cap is reached and nobody has been idle for a TTL: refused,
		// and however many times.
		for i := range uint64(5) {
			r := a.register(t0+ttl-1+i, 2)
			require.Equal(t, StatusSessionLimit, r.Status)
			require.Zero(t, r.ClientID)
			require.Contains(t, r.Err, "session cap reached: 2 sessions are open (the cap is 2)")
		}
		// Both sessions are intact: a retry is still a duplicate.
		r := a.one(putCmd(c1, 1, "k", "v1"))
		require.True(t, r.Duplicate, "%+v", r)
		require.Equal(t, StatusOK, a.one(putCmd(c2, 1, "k", "v2")).Status)
		require.EqualValues(t, 2, usageOf(t, s).Sessions)
	})
}

func TestSessionIdlePastTTLIsReclaimed(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		idle := a.register(t0, 2).ClientID
		busy := a.register(t0, 2).ClientID
		require.Equal(t, StatusOK, a.one(putCmd(idle, 1, "k", "idle")).Status)
		// busy writes while the leader's clock entries carry time along.
		for i := range uint64(70) {
			require.Equal(t, StatusOK, a.one(clockCmd(t0+1000*(i+1))).Status)
			require.Equal(t, StatusOK, a.one(putCmd(busy, i+1, "k", "busy")).Status)
		}
		// Past the TTL since idle's last write, not since busy's.
		r := a.register(t0+70_000, 2)
		require.Equal(t, StatusOK, r.Status, r.Err)
		require.Equal(t, StatusSessionExpired, a.one(putCmd(idle, 2, "k", "x")).Status)
		require.Equal(t, StatusOK, a.one(putCmd(busy, 71, "k", "busy")).Status)
		require.EqualValues(t, 2, usageOf(t, s).Sessions)
		require.Equal(t, t0+70_000, usageOf(t, s).SessionClockMs)
	})
}

func TestActiveSessionIsNeverReclaimed(t *testing.T) {
	implementations(t, Options{}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		busy := a.register(t0, 1).ClientID
		// No Register for a long time, but writes and clock entries.
		now := t0
		for seq := uint64(1); seq <= 200; seq++ {
			now += 1000
			a.one(clockCmd(now))
			require.Equal(t, StatusOK, a.one(putCmd(busy, seq, "k", "v")).Status)
		}
		// A flood at the current time: every Register refused.
		for range 20 {
			require.Equal(t, StatusSessionLimit, a.register(now+500, 1).Status)
		}
		require.True(t, a.one(putCmd(busy, 200, "k", "v")).Duplicate)
		// A clock that lags (another member's) changes nothing.
		require.Equal(t, StatusSessionLimit, a.register(t0, 1).Status)
		require.Equal(t, now+500, usageOf(t, s).SessionClockMs)
	})
}

// Old Registers, with no policy, keep evicting by least recent use past
// Options.MaxClients, as the build that wrote them did.
func TestUnstampedRegisterEvictsAsBefore(t *testing.T) {
	implementations(t, Options{MaxClients: 1}, func(t *testing.T, s Store) {
		a := newApplier(t, s)
		c1 := a.one(registerCmd()).ClientID
		c2 := a.one(registerCmd()).ClientID
		require.Equal(t, StatusSessionExpired, a.one(putCmd(c1, 1, "k", "v")).Status)
		require.Equal(t, StatusOK, a.one(putCmd(c2, 1, "k", "v")).Status)
	})
}

// The same entries give the same results and byte-identical snapshots on
// both implementations, and a snapshot carries what the next decision
// needs: restored into the other implementation, the next Registers are
// decided the same.
func TestSessionDecisionsSameAcrossImplementationsAndSnapshots(t *testing.T) {
	script := [][]byte{
		registerAt(t0, 3, ttl), registerAt(t0+5, 3, ttl), registerAt(t0+9, 3, ttl),
		putCmd(1, 1, "a", "1"), clockCmd(t0 + 30_000), putCmd(2, 1, "b", "2"),
		registerAt(t0+40_000, 3, ttl), // refused
		clockCmd(t0 + 65_000), putCmd(1, 2, "a", "3"),
		alarmCmd(false), putCmd(2, 2, "b", "x"), delCmd(2, 3, "b"),
	}
	// After the snapshot: session 3 (idle since t0+9) goes first, then
	// session 2 (last named at t0+65,000 by its refused and delete writes).
	after := [][]byte{
		registerAt(t0+70_000, 3, ttl), registerAt(t0+70_001, 3, ttl),
		registerAt(t0+130_000, 3, ttl), registerAt(t0+200_000, 3, ttl),
	}
	run := func(s Store, entries [][]byte, from uint64) []Result {
		var out []Result
		for i, d := range entries {
			r, err := s.Apply([]Entry{{Index: from + uint64(i), Data: d}})
			require.NoError(t, err)
			out = append(out, r...)
		}
		return out
	}
	mem := NewMemory(Options{})
	bolt, err := OpenBolt(filepath.Join(t.TempDir(), "kv.db"), Options{})
	require.NoError(t, err)
	defer bolt.Close()
	rm, rb := run(mem, script, 1), run(bolt, script, 1)
	require.Equal(t, rm, rb)
	require.Equal(t, StatusSessionLimit, rm[6].Status)
	require.Equal(t, StatusNoSpace, rm[10].Status)
	require.Equal(t, StatusOK, rm[11].Status, "deletes go on under NOSPACE")
	require.Equal(t, usageOf(t, mem), usageOf(t, bolt))

	var sm, sb bytes.Buffer
	_, err = mem.Snapshot(&sm)
	require.NoError(t, err)
	_, err = bolt.Snapshot(&sb)
	require.NoError(t, err)
	require.Equal(t, sm.Bytes(), sb.Bytes())

	// Cross-restore into fresh stores; then both sides decide alike.
	mem2 := NewMemory(Options{})
	require.NoError(t, mem2.Restore(bytes.NewReader(sb.Bytes())))
	bolt2, err := OpenBolt(filepath.Join(t.TempDir(), "kv2.db"), Options{})
	require.NoError(t, err)
	defer bolt2.Close()
	require.NoError(t, bolt2.Restore(bytes.NewReader(sm.Bytes())))
	for _, s := range []Store{mem2, bolt2} {
		require.Equal(t, usageOf(t, mem), usageOf(t, s))
	}
	from := uint64(len(script) + 1)
	want := run(mem, after, from)
	require.Equal(t, []Status{StatusOK, StatusSessionLimit, StatusOK, StatusOK},
		[]Status{want[0].Status, want[1].Status, want[2].Status, want[3].Status}, "%+v", want)
	require.Equal(t, want, run(mem2, after, from))
	require.Equal(t, want, run(bolt2, after, from))
	require.Equal(t, want, run(bolt, after, from))
}

// A bbolt file from a build before usage was kept opens, and its usage is
// counted from what it holds.
func TestBoltFileWithoutUsageCountsItAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	b, err := OpenBolt(path, Options{})
	require.NoError(t, err)
	a := newApplier(t, b)
	a.one(registerCmd())
	a.one(putCmd(1, 1, "key", "value"))
	want := b.Usage()
	require.NoError(t, b.Close())

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Delete(keyUsedBytes)
	}))
	require.NoError(t, db.Close())

	b, err = OpenBolt(path, Options{})
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, want, b.Usage())
	require.Equal(t, KeyBytes(3, 5)+sessionOverhead, want.Bytes)
}
