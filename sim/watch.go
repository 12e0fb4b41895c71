package sim

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// Watchers and compaction under the etcd workload. A watch stream is
// served from a member's applied history (server/watch.go reads it with
// kvstore's Events), so a simulated watcher reads a live member's store
// the same way, from the revision after the last event it got up to the
// member's revision; when its member is down or paused it resumes on
// another from where it was, as etcd's client does; now and then it
// watches again from a little earlier, as a program that saved its place
// does. The leader compacts
// now and then, as keyvald's automatic compaction does, keeping only a
// few revisions, so that watchers and reads of the past meet compaction.
//
// What the watchers got is checked at the end of the run against a
// reference: a store fed every committed entry once, the first time any
// node applies it, with compactions left out, so that it holds the whole
// history. Each watcher's events, over each stretch of revisions it
// covered without a compaction in the way, must be exactly the
// reference's events of its keys over those revisions: none missing,
// none extra or uncommitted, in revision order, each revision whole (a
// read stops only at a revision boundary), with the same previous
// versions — but at a revision a read started at while it was the
// compacted one, where the previous versions are gone (as in etcd) and an
// event must come without one.

// watcher is one simulated watch.
type watcher struct {
	id        int
	key, end  []byte // end empty: the key alone; "\x00": every key from key on
	member    core.NodeID
	next      uint64 // the first revision not yet read
	got       []*kvstore.Event
	stretches []watchStretch
	compacted int // how often compaction moved the watcher on
	resumed   int // how often it moved to another member
	// compactedPrev marks, beside got, the events at a revision a read
	// started at while it was the member's compacted revision: their
	// previous versions were compacted away.
	compactedPrev []bool
	pollFn        func()
	rng           *rand.Rand
}

// watchStretch is a run of revisions a watcher read without a gap: from
// from to to, whose events are got[first:last].
type watchStretch struct {
	from, to    uint64
	first, last int
}

// EtcdCounts is what the etcd workload's watchers, compactions and
// leases did in a run: the watchers, the events they got, how often
// compaction moved one on and how often one moved to another member; the
// compactions proposed, and the reads of a past revision refused as
// compacted; the leases granted, the keep-alives acknowledged, and the
// revokes applied.
type EtcdCounts struct {
	Watchers, Events, WatchCompacted, Resumed int
	Compactions, CompactedReads               int
	Leases, KeepAlives, Revokes               int
	// Fenced counts the guarded writes that took effect.
	Fenced int
}

func (c *EtcdCounts) add(o EtcdCounts) {
	c.Watchers += o.Watchers
	c.Events += o.Events
	c.WatchCompacted += o.WatchCompacted
	c.Resumed += o.Resumed
	c.Compactions += o.Compactions
	c.CompactedReads += o.CompactedReads
	c.Leases += o.Leases
	c.KeepAlives += o.KeepAlives
	c.Revokes += o.Revokes
	c.Fenced += o.Fenced
}

// compactionKeep is how many revisions the simulated compaction keeps.
const compactionKeep = 20

// startWatchers starts the etcd workload's watchers and compactor.
func (w *world) startWatchers(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x7761746368))
	w.reference = kvstore.NewMemory(kvstore.Options{})
	for i := range 2 + rng.IntN(3) {
		wt := &watcher{id: i + 1, rng: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())), next: 1}
		switch rng.IntN(3) {
		case 0: // every key
			wt.key, wt.end = []byte{0}, []byte{0}
		case 1: // one key
			wt.key = []byte(w.keyName(rng.IntN(w.keys)))
		default: // a range of keys
			a, b := rng.IntN(w.keys), rng.IntN(w.keys)
			wt.key, wt.end = []byte(w.keyName(min(a, b))), []byte(w.keyName(max(a, b))+"\xff")
		}
		wt.pollFn = func() { w.poll(wt) }
		w.watchers = append(w.watchers, wt)
		w.clock.after(wt.rng.Int64N(100_000), wt.pollFn)
	}
	w.compactRng = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
	w.compactFn = w.compact
	w.clock.after(200_000+w.compactRng.Int64N(800_000), w.compactFn)
	w.startLeases(rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())))
}

// poll reads what the watcher's member applied since its last read.
func (w *world) poll(wt *watcher) {
	defer w.clock.after(1_000+wt.rng.Int64N(20_000), wt.pollFn)
	n := w.node(wt.member)
	if n == nil || !n.alive() {
		if n = w.aliveMember(wt.rng); n == nil {
			return
		}
		if wt.member != core.None {
			wt.resumed++
		}
		wt.member = n.id
	}
	if wt.rng.IntN(20) == 0 {
		// Watch again from a little earlier, as a program that saved
		// its place does: near the compacted revision, often.
		wt.next -= min(wt.next-1, uint64(wt.rng.IntN(2*compactionKeep)))
	}
	st := n.rep.Store()
	to := st.Revision()
	if to < wt.next {
		return
	}
	atCompacted := st.CompactedRevision() == wt.next
	evs, more, err := st.Events(wt.key, wt.end, wt.next, to, true, 0)
	var re *kvstore.RangeError
	if errors.As(err, &re) && re.Status == kvstore.StatusCompacted {
		// The revisions before the compaction are gone here: the watch
		// (as etcd's client would) starts again at it.
		wt.compacted++
		wt.next = st.CompactedRevision()
		return
	}
	if err != nil || more {
		w.fail(fmt.Errorf("watcher %d on node %d: events from revision %d to %d: more %v, %v", wt.id, n.id, wt.next, to, more, err))
		return
	}
	last := len(wt.stretches) - 1
	if last < 0 || wt.stretches[last].to+1 != wt.next {
		wt.stretches = append(wt.stretches, watchStretch{from: wt.next, first: len(wt.got)})
		last++
	}
	for _, ev := range evs {
		wt.compactedPrev = append(wt.compactedPrev, atCompacted && uint64(ev.Kv.ModRevision) == wt.next)
	}
	wt.got = append(wt.got, evs...)
	wt.stretches[last].to, wt.stretches[last].last = to, len(wt.got)
	wt.next = to + 1
}

// aliveMember picks a member that is up and not paused, or nil.
func (w *world) aliveMember(rng *rand.Rand) *node {
	var alive []*node
	for _, id := range w.members() {
		if n := w.node(id); n != nil && n.alive() {
			alive = append(alive, n)
		}
	}
	if len(alive) == 0 {
		return nil
	}
	return alive[rng.IntN(len(alive))]
}

// compact has the leader propose a compaction keeping the last few
// revisions, as automatic compaction does; nobody waits for it.
func (w *world) compact() {
	w.clock.after(200_000+w.compactRng.Int64N(800_000), w.compactFn)
	n := w.leader()
	if n == nil || !n.alive() {
		return
	}
	st := n.rep.Store()
	if st.Revision() <= st.CompactedRevision()+compactionKeep {
		return
	}
	w.nextRequest++
	if n.rep.Propose(w.nextRequest, kvstore.EncodeCompact(st.Revision()-compactionKeep, "")) == nil {
		w.watchCounts.Compactions++
	}
}

// feedReference applies to the reference the entries of a batch it has not
// seen, compactions turned into no-ops.
func (w *world) feedReference(entries []kvstore.Entry) {
	next := w.reference.AppliedIndex() + 1
	if len(entries) == 0 || entries[len(entries)-1].Index < next {
		return
	}
	if entries[0].Index > next {
		w.fail(fmt.Errorf("entries from %d applied before any node applied %d", entries[0].Index, next))
		return
	}
	fresh := make([]kvstore.Entry, 0, len(entries))
	cmds := make([]*kvpb.Command, 0, len(entries))
	for _, e := range entries[next-entries[0].Index:] {
		cmd := &kvpb.Command{}
		if proto.Unmarshal(e.Data, cmd) == nil {
			if cmd.GetCompact() != nil {
				e.Data = nil
			}
			if r := cmd.GetLeaseRevoke(); r != nil {
				w.checkRevoke(r.GetId())
			}
		}
		fresh = append(fresh, e)
		cmds = append(cmds, cmd)
	}
	results, err := w.reference.Apply(fresh)
	if err != nil {
		w.fail(fmt.Errorf("reference store: %w", err))
		return
	}
	for i, cmd := range cmds {
		if cmd.GetEtcdTxn() != nil {
			w.checkFenced(cmd, results[i])
		}
	}
}

// checkWatchers holds every watcher's events to the reference's, and
// the reference's to the clients' history.
func (w *world) checkWatchers() {
	w.checkReferenceEvents()
	for _, wt := range w.watchers {
		w.watchCounts.Watchers++
		w.watchCounts.Events += len(wt.got)
		w.watchCounts.WatchCompacted += wt.compacted
		w.watchCounts.Resumed += wt.resumed
		for _, s := range wt.stretches {
			want, _, err := w.reference.Events(wt.key, wt.end, s.from, s.to, true, 0)
			if err != nil {
				w.fail(fmt.Errorf("watcher %d: reference events %d..%d: %w", wt.id, s.from, s.to, err))
				return
			}
			if err := sameEvents(wt.got[s.first:s.last], withoutCompactedPrev(want, wt.compactedPrev[s.first:s.last])); err != nil {
				w.fail(fmt.Errorf("watcher %d on %q..%q, revisions %d..%d: %w", wt.id, wt.key, wt.end, s.from, s.to, err))
				return
			}
		}
	}
}

// checkReferenceEvents holds the reference's events to the clients'
// history: at each writing transaction's revision, a put event for each of
// its chosen branch's puts, with its value, and otherwise only deletions
// of the keys it deleted. So a history (and watch) that every member
// agrees on is also the one the clients' transactions wrote.
func (w *world) checkReferenceEvents() {
	for i := range w.revOps {
		op := &w.revOps[i]
		writes := op.Then
		if !op.Succeeded {
			writes = op.Else
		}
		if op.Unknown || op.Kind != lin.RevTxn || len(writes) == 0 {
			continue
		}
		evs, _, err := w.reference.Events([]byte{0}, []byte{0}, uint64(op.Revision), uint64(op.Revision), false, 0)
		if err != nil {
			w.fail(fmt.Errorf("reference events at %d: %w", op.Revision, err))
			return
		}
		if err := eventsOf(evs, writes); err != nil {
			w.fail(fmt.Errorf("revision %d, client %d's transaction: %w", op.Revision, op.Client, err))
			return
		}
	}
}

// eventsOf checks evs are the events writes make.
func eventsOf(evs []*kvstore.Event, writes []lin.RevWrite) error {
	byKey := map[string]*kvstore.Event{}
	for _, ev := range evs {
		byKey[string(ev.Kv.Key)] = ev
	}
	written := map[string]bool{}
	for _, wr := range writes {
		written[wr.Key] = true
		ev, ok := byKey[wr.Key]
		switch {
		case wr.Delete && ok && ev.Type != mvccpb.DELETE:
			return fmt.Errorf("%q was deleted, the event is %v", wr.Key, ev)
		case !wr.Delete && (!ok || ev.Type != mvccpb.PUT || string(ev.Kv.Value) != wr.Value):
			return fmt.Errorf("%q was put to %q, the event is %v", wr.Key, wr.Value, ev)
		}
	}
	for _, ev := range evs {
		if !written[string(ev.Kv.Key)] {
			return fmt.Errorf("an event the transaction did not write: %v", ev)
		}
	}
	return nil
}

// withoutCompactedPrev is want with the previous versions taken off the
// events marked in compacted (the watcher's marks beside the events it
// got): those it read at the compacted revision, whose earlier versions
// compaction had dropped.
func withoutCompactedPrev(want []*kvstore.Event, compacted []bool) []*kvstore.Event {
	out := make([]*kvstore.Event, len(want))
	for i, ev := range want {
		out[i] = ev
		if i < len(compacted) && compacted[i] && ev.PrevKv != nil {
			bare := *ev
			bare.PrevKv = nil
			out[i] = &bare
		}
	}
	return out
}

// sameEvents says where got first differs from want.
func sameEvents(got, want []*kvstore.Event) error {
	for i := range min(len(got), len(want)) {
		g, err1 := got[i].Marshal()
		wb, err2 := want[i].Marshal()
		if err1 != nil || err2 != nil || !bytes.Equal(g, wb) {
			return fmt.Errorf("event %d is %v, the committed history has %v", i, got[i], want[i])
		}
	}
	switch {
	case len(got) < len(want):
		return fmt.Errorf("%d events, the committed history has %d: first missing %v", len(got), len(want), want[len(got)])
	case len(got) > len(want):
		return fmt.Errorf("%d events, the committed history has %d: first extra %v", len(got), len(want), got[len(want)])
	}
	for i := 1; i < len(got); i++ {
		if got[i].Kv.ModRevision < got[i-1].Kv.ModRevision ||
			(got[i].Kv.ModRevision == got[i-1].Kv.ModRevision && bytes.Compare(got[i].Kv.Key, got[i-1].Kv.Key) <= 0) {
			return fmt.Errorf("event %d (%q at %d) out of order", i, got[i].Kv.Key, got[i].Kv.ModRevision)
		}
	}
	return nil
}
