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

// event is something that happens at a virtual time. The n-specific kinds
// do nothing once the node's life (epoch) they were scheduled for is over.
type event struct {
	kind  eventKind
	stage stage
	// msg indexes clock.msgs (evDeliver). A message is three times the
	// size of the rest, and while the collector runs every copy of a
	// struct with pointers into the slab costs write barriers.
	msg     int32
	epoch   int
	n       *node
	fn      func()
	batches []*replica.Batch
}

// slot orders one event in the agenda: by virtual time, then by the order
// events were scheduled (seq), so the run never depends on heap internals.
// It holds no pointers, so moving slots costs no write barriers.
type slot struct {
	at  int64
	seq uint64
	idx int32 // into clock.events
}

// before compares (at, seq) as one 128-bit number: a subtraction with
// borrow instead of two data-dependent branches, which the heap's sift
// mispredicted about half the time.
func (a slot) before(b slot) bool {
	_, borrow := bits.Sub64(a.seq, b.seq, 0)
	_, borrow = bits.Sub64(uint64(a.at), uint64(b.at), borrow)
	return borrow != 0
}

// clock is the simulator's virtual time and its agenda over a reused slab
// of events: a 4-ary min-heap of slots for the future, and a FIFO for
// events due now. A third of all events are scheduled for the current
// instant (a stage with no wake-up delay, a stage's work that took no disk
// time); they need no sifting, because they run after everything already
// due now and in the order they were scheduled. Every event in the heap
// due now was scheduled before the clock reached now, so before anything
// in the FIFO: the order is exactly (time, seq).
type clock struct {
	now    int64
	seq    uint64
	heap   []slot
	nowQ   fifo[int32] // into events, all due at now
	events []event
	free   []int32
	// msgs holds the messages in flight; freeMsgs are the unused slots.
	msgs     []core.Message
	freeMsgs []int32
	w        *world
}

// push schedules e at virtual time t (never in the past).
func (c *clock) push(t int64, e event) {
	var idx int32
	if k := len(c.free); k > 0 {
		idx = c.free[k-1]
		c.free = c.free[:k-1]
		c.events[idx] = e
	} else {
		idx = int32(len(c.events))
		c.events = append(c.events, e)
	}
	c.seq++
	if t <= c.now {
		c.nowQ.push(idx)
		return
	}
	c.heap = append(c.heap, slot{at: t, seq: c.seq, idx: idx})
	c.up(len(c.heap) - 1)
}

// deliverAt schedules m's arrival at virtual time t.
func (c *clock) deliverAt(t int64, m core.Message) {
	var idx int32
	if k := len(c.freeMsgs); k > 0 {
		idx = c.freeMsgs[k-1]
		c.freeMsgs = c.freeMsgs[:k-1]
		c.msgs[idx] = m
	} else {
		idx = int32(len(c.msgs))
		c.msgs = append(c.msgs, m)
	}
	c.push(t, event{kind: evDeliver, msg: idx})
}

// takeMsg frees message idx's slot and returns the message. The slot is
// not cleared: it is reused soon, and clearing would cost barriers too.
func (c *clock) takeMsg(idx int32) core.Message {
	c.freeMsgs = append(c.freeMsgs, idx)
	return c.msgs[idx]
}

// at schedules fn at virtual time t (never in the past).
func (c *clock) at(t int64, fn func()) { c.push(t, event{kind: evFunc, fn: fn}) }

// after schedules fn d microseconds from now.
func (c *clock) after(d int64, fn func()) { c.at(c.now+d, fn) }

// step runs the next event; false when nothing is left or the next event is
// past until.
func (c *clock) step(until int64) bool {
	var idx int32
	switch {
	case len(c.heap) > 0 && c.heap[0].at == c.now:
		idx = c.pop()
	case c.nowQ.len() > 0:
		idx = c.nowQ.take(1)[0]
	case len(c.heap) > 0 && c.heap[0].at <= until:
		c.now = c.heap[0].at
		idx = c.pop()
	default:
		return false
	}
	// The slot is freed but not cleared (what it references lives until
	// the slot is reused, soon): clearing costs write barriers.
	e := c.events[idx]
	c.free = append(c.free, idx)
	c.w.fire(&e)
	return true
}

// pop removes the heap's first slot and returns its event.
func (c *clock) pop() int32 {
	top := c.heap[0]
	last := len(c.heap) - 1
	c.heap[0] = c.heap[last]
	c.heap = c.heap[:last]
	if last > 0 {
		c.down(0)
	}
	return top.idx
}

func (c *clock) up(i int) {
	h := c.heap
	s := h[i]
	for i > 0 {
		parent := (i - 1) / 4
		if !s.before(h[parent]) {
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
			if h[j].before(h[best]) {
				best = j
			}
		}
		if !h[best].before(s) {
			break
		}
		h[i] = h[best]
		i = best
	}
	h[i] = s
}

// fire runs one event.
func (w *world) fire(e *event) {
	switch e.kind {
	case evFunc:
		e.fn()
	case evDeliver:
		w.net.arrive(w.clock.takeMsg(e.msg))
	case evStage:
		e.n.runStage(e.epoch, e.stage)
	case evTick:
		e.n.tick(e.epoch)
	case evWALDone, evStoreDone:
		n := e.n
		if n.epoch != e.epoch || n.state != nodeUp {
			return
		}
		if e.kind == evWALDone {
			n.persisted(e.batches)
		} else {
			n.applied(e.batches)
		}
	}
}
