package sim

import (
	"math/bits"

	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// eventKind says what an event does. The frequent events (messages, stage
// turns, ticks, batches moving between stages) are plain data rather than
// closures: a run schedules millions of them, and a closure per event was
// the simulator's largest source of garbage.
type eventKind uint8

const (
	evFunc      eventKind = iota // call fn
	evDeliver                    // msg arrives at msg.To
	evStage                      // node n takes its turn at stage
	evTick                       // node n's Raft clock ticks
	evWALDone                    // batches persisted by n's WAL stage reach its state machine stage
	evStoreDone                  // batches applied by n's state machine stage reach its loop
)

// event is something that happens at a virtual time. The node-specific
// kinds do nothing once the node's life (epoch) they were scheduled for is
// over. It holds no pointers (what it refers to lives in the clock's
// slabs), so the agenda moves it without write barriers and the collector
// never scans the agenda.
type event struct {
	kind  eventKind
	stage stage
	node  int32 // index into world.nodes
	epoch int32
	// ref indexes the slab of the kind: clock.msgs (evDeliver), clock.fns
	// (evFunc), clock.lists (evWALDone, evStoreDone).
	ref int32
}

// slot orders one event in the agenda: by virtual time, then by the order
// events were scheduled (seq), so the run never depends on heap internals.
type slot struct {
	at  int64
	seq uint64
	ev  event
}

// before compares (at, seq) as one 128-bit number: a subtraction with
// borrow instead of two data-dependent branches, which the heap's sift
// mispredicted about half the time.
func (a *slot) before(b *slot) bool {
	_, borrow := bits.Sub64(a.seq, b.seq, 0)
	_, borrow = bits.Sub64(uint64(a.at), uint64(b.at), borrow)
	return borrow != 0
}

// slab holds what events refer to, by index, reusing freed slots. A slot
// is not cleared when freed: it is reused soon, and clearing would cost
// write barriers too.
type slab[T any] struct {
	items []T
	free  []int32
}

func (s *slab[T]) put(v T) int32 {
	if k := len(s.free); k > 0 {
		i := s.free[k-1]
		s.free = s.free[:k-1]
		s.items[i] = v
		return i
	}
	s.items = append(s.items, v)
	return int32(len(s.items) - 1)
}

func (s *slab[T]) take(i int32) T {
	s.free = append(s.free, i)
	return s.items[i]
}

// clock is the simulator's virtual time and its agenda: a 4-ary min-heap
// of slots for the future, and a FIFO for events due now. A third of all
// events are scheduled for the current instant (a stage with no wake-up
// delay, a stage's work that took no disk time); they need no sifting,
// because they run after everything already due now and in the order they
// were scheduled. Every event in the heap due now was scheduled before the
// clock reached now, so before anything in the FIFO: the order is exactly
// (time, seq).
type clock struct {
	now  int64
	seq  uint64
	heap []slot
	nowQ fifo[event]
	// The slabs events refer to. A message is large and full of pointers,
	// so it is copied once into its slot rather than moved with the event.
	msgs  slab[core.Message]
	fns   slab[func()]
	lists slab[[]*replica.Batch]
	w     *world
}

// push schedules e at virtual time t (never in the past).
func (c *clock) push(t int64, e event) {
	c.seq++
	if t <= c.now {
		c.nowQ.push(e)
		return
	}
	c.heap = append(c.heap, slot{at: t, seq: c.seq, ev: e})
	c.up(len(c.heap) - 1)
}

// deliverAt schedules m's arrival at virtual time t.
func (c *clock) deliverAt(t int64, m core.Message) {
	c.push(t, event{kind: evDeliver, ref: c.msgs.put(m)})
}

// at schedules fn at virtual time t (never in the past).
func (c *clock) at(t int64, fn func()) { c.push(t, event{kind: evFunc, ref: c.fns.put(fn)}) }

// after schedules fn d microseconds from now.
func (c *clock) after(d int64, fn func()) { c.at(c.now+d, fn) }

// nodeEvent schedules an event of kind for node n's current life.
func (c *clock) nodeEvent(t int64, kind eventKind, n *node, s stage) {
	c.push(t, event{kind: kind, stage: s, node: int32(n.id - 1), epoch: int32(n.epoch)})
}

// batchesEvent schedules batches to move on from one of n's stages.
func (c *clock) batchesEvent(t int64, kind eventKind, n *node, batches []*replica.Batch) {
	c.push(t, event{kind: kind, node: int32(n.id - 1), epoch: int32(n.epoch), ref: c.lists.put(batches)})
}

// step runs the next event; false when nothing is left or the next event is
// past until.
func (c *clock) step(until int64) bool {
	var e event
	switch {
	case len(c.heap) > 0 && c.heap[0].at == c.now:
		e = c.pop()
	case c.nowQ.len() > 0:
		e = c.nowQ.take(1)[0]
	case len(c.heap) > 0 && c.heap[0].at <= until:
		c.now = c.heap[0].at
		e = c.pop()
	default:
		return false
	}
	c.w.fire(e)
	return true
}

// pop removes the heap's first slot and returns its event.
func (c *clock) pop() event {
	top := c.heap[0].ev
	last := len(c.heap) - 1
	c.heap[0] = c.heap[last]
	c.heap = c.heap[:last]
	if last > 0 {
		c.down(0)
	}
	return top
}

func (c *clock) up(i int) {
	h := c.heap
	s := h[i]
	for i > 0 {
		parent := (i - 1) / 4
		if !s.before(&h[parent]) {
			break
		}
		h[i] = h[parent]
		i = parent
	}
	h[i] = s
}

func (c *clock) down(i int) {
	h := c.heap
	n := len(h)
	s := h[i]
	for {
		first := 4*i + 1
		if first >= n {
			break
		}
		best := first
		for j := first + 1; j < min(first+4, n); j++ {
			if h[j].before(&h[best]) {
				best = j
			}
		}
		if !h[best].before(&s) {
			break
		}
		h[i] = h[best]
		i = best
	}
	h[i] = s
}

// fire runs one event.
func (w *world) fire(e event) {
	switch e.kind {
	case evFunc:
		w.clock.fns.take(e.ref)()
	case evDeliver:
		w.net.arrive(w.clock.msgs.take(e.ref))
	case evStage:
		w.nodes[e.node].runStage(int(e.epoch), e.stage)
	case evTick:
		w.nodes[e.node].tick(int(e.epoch))
	case evWALDone, evStoreDone:
		batches := w.clock.lists.take(e.ref)
		n := w.nodes[e.node]
		if n.epoch != int(e.epoch) || n.state != nodeUp {
			return
		}
		if e.kind == evWALDone {
			n.persisted(batches)
		} else {
			n.applied(batches)
		}
	}
}
