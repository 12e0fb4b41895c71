package sim

import (
	"errors"
	"fmt"
	"slices"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/disk"
)

// errPowerCut is what an intercepted disk operation returns when the
// nemesis cuts the power in the middle of a node's disk work.
var errPowerCut = errors.New("power cut")

// The nemesis injects the process and network faults the seed switched on,
// each on its own random schedule, until the faulty period ends.

func (w *world) startNemesis(until int64) {
	f := w.faults
	rng := w.nemesisRng
	every := func(mean int64, fn func()) {
		var loop func()
		loop = func() {
			if w.clock.now >= until || w.err != nil {
				return
			}
			fn()
			w.clock.after(mean/2+rng.Int64N(mean), loop)
		}
		w.clock.after(mean/2+rng.Int64N(mean), loop)
	}
	if f.Partitions {
		every(f.PartitionEvery, w.partition)
	}
	if f.Crashes {
		every(f.CrashEvery, func() {
			active := w.active()
			n := active[rng.IntN(len(active))]
			if n.state != nodeUp {
				return
			}
			if rng.IntN(2) == 0 {
				n.crash()
				w.noticeGone(n)
				w.clock.after(rng.Int64N(f.DownFor)+1, n.restart)
				return
			}
			// Crash in the middle of the node's next disk work, before
			// the k-th write or sync from now: what it wrote but did not
			// sync may be lost or torn.
			k := 1 + rng.IntN(4)
			n.fs.Intercept = func(op disk.Op, _ string) error {
				if op != disk.OpWriteAt && op != disk.OpSync {
					return nil
				}
				if k--; k > 0 {
					return nil
				}
				n.fs.Intercept = nil
				return errPowerCut
			}
		})
	}
	if f.DamageAll {
		every(f.DamageAllEvery, w.damageAll)
	}
	if f.Pauses {
		every(f.PauseEvery, func() {
			n := w.pickPauseTarget()
			if n == nil || !n.alive() {
				return
			}
			n.paused, n.pausedAt = true, w.clock.now
			w.counts.Pauses++
			w.logf("node %d paused", n.id)
			epoch := n.epoch
			pauseFor := rng.Int64N(f.PauseFor) + 1
			w.clock.after(pauseFor, func() {
				if n.epoch == epoch && n.paused {
					n.resume()
				}
			})
			if f.PauseIsolate > 0 && n == w.leader() && w.extraRng.Float64() < f.PauseIsolate {
				// The stalled leader's peer links break too and come back
				// only after it resumes: it wakes up with its ticks
				// frozen, believing it still leads, and hears of no newer
				// term until the links heal.
				w.isolateFor(n, pauseFor+w.extraRng.Int64N(200_000), "while paused")
			}
		})
	}
}

// noticeGone tells every live node that n could reach both ways, each
// after a link's delay, that n's process is gone: the server's transport
// learns it when n's stream breaks and nothing listens at n's address. A
// power cut (a crash in the middle of disk work) refuses nothing, so it
// gives no notice. Only with Faults.GoneNotices.
func (w *world) noticeGone(n *node) {
	if !w.faults.GoneNotices {
		return
	}
	epoch := n.epoch
	for _, o := range w.nodes {
		if o == n || !o.alive() || !w.net.connected(n.id, o.id) || !w.net.connected(o.id, n.id) {
			continue
		}
		oEpoch := o.epoch
		delay := w.faults.MinDelay + w.goneRng.Int64N(w.faults.MaxDelay-w.faults.MinDelay+1)
		w.clock.after(2*delay, func() {
			if n.epoch != epoch || n.state == nodeUp || o.epoch != oEpoch || !o.alive() {
				return
			}
			if o.rep.Node().ForgetLeader(n.id) {
				w.counts.LeadersForgotten++
				w.logf("node %d forgot leader %d: its process is gone", o.id, n.id)
			}
			w.check(w.checker.Observe(o.rep.Node()))
			o.schedule()
		})
	}
}

// pickPauseTarget prefers the leader: a paused leader that wakes up still
// believing it leads is the stale-read trap.
func (w *world) pickPauseTarget() *node {
	if w.nemesisRng.IntN(2) == 0 {
		if lead := w.leader(); lead != nil {
			return lead
		}
	}
	active := w.active()
	return active[w.nemesisRng.IntN(len(active))]
}

func (n *node) resume() {
	n.paused = false
	n.w.logf("node %d resumes", n.id)
	for _, f := range n.frozen {
		n.working(f.left, f.fn)
	}
	n.frozen = n.frozen[:0]
	n.kickAll()
}

func (w *world) leader() *node {
	var best *node
	var term uint64
	for _, n := range w.nodes {
		if n.state != nodeUp {
			continue
		}
		nd := n.rep.Node()
		if t := nd.HardState().Term; nd.SoftState().Role == core.Leader && t >= term {
			best, term = n, t
		}
	}
	return best
}

// partition installs one randomly chosen kind of partition among the
// members (nodes outside the membership stay connected) and heals it later.
func (w *world) partition() {
	rng := w.nemesisRng
	ids := w.members()
	size := len(ids)
	w.net.heal()
	cut := func(a, b int) { w.net.cutLink(ids[a], ids[b], true) }
	cutBoth := func(a, b int) { cut(a, b); cut(b, a) }
	var kind string
	switch rng.IntN(5) {
	case 0: // a random split into two sides
		kind = "split"
		side := make([]bool, size)
		for i := range side {
			side[i] = rng.IntN(2) == 0
		}
		for a := range size {
			for b := range size {
				if side[a] != side[b] {
					cut(a, b)
				}
			}
		}
	case 1: // one-way: a node can send but not receive (or the reverse)
		kind = "one-way"
		a, b := rng.IntN(size), rng.IntN(size)
		if a != b {
			cut(a, b)
		}
	case 2: // a minority cut off from the majority
		kind = "minority"
		perm := rng.Perm(size)
		minority := perm[:(size-1)/2]
		for _, a := range minority {
			for _, b := range perm[(size-1)/2:] {
				cutBoth(a, b)
			}
		}
	case 3: // the leader alone
		kind = "leader-isolated"
		if lead := w.leader(); lead != nil {
			for _, b := range ids {
				if b != lead.id {
					w.net.cutLink(lead.id, b, true)
					w.net.cutLink(b, lead.id, true)
				}
			}
		}
	default: // swizzle-clog: cut nodes one by one, heal in another order
		kind = "swizzle"
		perm := rng.Perm(size)
		step := int64(20_000)
		for k, a := range perm {
			w.clock.after(int64(k)*step, func() {
				for b := range size {
					if b != a {
						cutBoth(a, b)
					}
				}
			})
		}
		heal := rng.Perm(size)
		for k, a := range heal {
			w.clock.after(int64(size+k)*step+w.faults.PartitionFor/2, func() {
				for b := range size {
					if b != a {
						w.net.cutLink(ids[a], ids[b], false)
						w.net.cutLink(ids[b], ids[a], false)
					}
				}
			})
		}
	}
	w.counts.Partitions++
	w.logf("partition: %s", kind)
	w.clock.after(1+rng.Int64N(w.faults.PartitionFor), w.net.heal)
}

// isolate cuts n off from every peer (clients still reach it) and heals
// its links after up to half a second.
func (w *world) isolate(n *node, why string) {
	w.isolateFor(n, 20_000+w.extraRng.Int64N(500_000), why)
}

// isolateFor cuts n off from every peer for d µs.
func (w *world) isolateFor(n *node, d int64, why string) {
	set := func(cut bool) {
		for _, b := range w.nodes {
			if b != n {
				w.net.cutLink(n.id, b.id, cut)
				w.net.cutLink(b.id, n.id, cut)
			}
		}
	}
	set(true)
	w.counts.Isolations++
	w.logf("node %d isolated %s", n.id, why)
	w.clock.after(d, func() { set(false) })
}

// damageAll crashes every member at once and damages one entry record in
// each one's WAL, then restarts them after a while each (Faults.DamageAll).
// Only when every member is up, so that the damage is on every member. No
// index is damaged twice in a run, on any member: a member that lost an
// entry has it on disk again only once it fetched it and wrote the fill,
// so damage at an index another member lost before could take the same
// entry from a majority.
func (w *world) damageAll() {
	rng := w.repairRng
	active := w.active()
	for _, n := range active {
		if n.state != nodeUp {
			return
		}
	}
	if w.damaged == nil {
		w.damaged = map[uint64]bool{}
	}
	taken := w.damaged
	for _, n := range active {
		n.crash()
		recs, err := disk.EntryRecords(n.fs, "/node/wal")
		if err != nil {
			w.fail(fmt.Errorf("node %d: list WAL records: %w", n.id, err))
			return
		}
		recs = slices.DeleteFunc(recs, func(r disk.EntryRecord) bool { return taken[r.Index] })
		if len(recs) > 0 {
			r := recs[rng.IntN(len(recs))]
			off := r.Offset + disk.HeaderSize + rng.Int64N(int64(r.PayloadSize))
			if n.fs.FlipBit(r.File, off, rng.UintN(8)) == nil {
				taken[r.Index] = true
				w.counts.Rotted++
				w.logf("node %d: entry %d (term %d) damaged in %s at %d", n.id, r.Index, r.Term, r.File, off)
			}
		}
		w.clock.after(1+rng.Int64N(300_000), n.restart)
	}
}
