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
	evRequest                    // a client's request reaches its node
	evTimeout                    // a client's attempt times out
	evReply                      // a node's reply reaches its client
)

// event is something that happens at a virtual time. The node-specific
// kinds do nothing once the node's life (epoch) they were scheduled for is
// over. It holds no pointers (what it refers to lives in the clock's
// slabs), so the agenda moves it without write barriers and the collector
// never scans the agenda. It has four fields, no more: the compiler keeps
// a struct of up to four in registers, while a larger one went through the
// stack with a stall on every push.
type event struct {
	kind  eventKind
	node  int32 // index into world.nodes
	epoch int32
	// ref indexes the slab of the kind: clock.msgs (evDeliver), clock.fns
	// (evFunc), clock.lists (evWALDone, evStoreDone), clock.requests
	// (evRequest, evTimeout), clock.replies (evReply); for evStage it is
	// the stage.
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

// clock is the simulator's virtual time and its agenda: a calendar of
// buckets for the near future, a 4-ary min-heap for the rest, and a FIFO
// for events due now. A third of all events are scheduled for the current
// instant (a stage with no wake-up delay, a stage's work that took no disk
// time); they need no ordering, because they run after everything already
// due now and in the order they were scheduled. Every event in the
// calendar due now was scheduled before the clock reached now, so before
// anything in the FIFO: the order is exactly (time, seq).
type clock struct {
	now  int64
	seq  uint64
	cal  calendar
	nowQ fifo[event]
	// The slabs events refer to. A message is large and full of pointers,
	// so it is copied once into its slot rather than moved with the event.
	msgs  slab[core.Message]
	fns   slab[func()]
	lists slab[[]*replica.Batch]
	// A client's attempt is three events (its arrival, its time-out, the
	// reply); as closures they were a third of the run's allocations.
	requests slab[*request]
	replies  slab[sentReply]
	w        *world
}

// sentReply is a reply on its way to the client of rq.
type sentReply struct {
	rq *request
	rp reply
}

// push schedules e at virtual time t (never in the past).
func (c *clock) push(t int64, e event) {
	c.seq++
	if t <= c.now {
		c.nowQ.push(e)
		return
	}
	c.cal.push(slot{at: t, seq: c.seq, ev: e})
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
	c.push(t, event{kind: kind, node: int32(n.id - 1), epoch: int32(n.epoch), ref: int32(s)})
}

// batchesEvent schedules batches to move on from one of n's stages.
func (c *clock) batchesEvent(t int64, kind eventKind, n *node, batches []*replica.Batch) {
	c.push(t, event{kind: kind, node: int32(n.id - 1), epoch: int32(n.epoch), ref: c.lists.put(batches)})
}

// step runs the next event; false when nothing is left or the next event is
// past until.
func (c *clock) step(until int64) bool {
	var e event
	at, ok := c.cal.next()
	switch {
	case ok && at == c.now:
		e = c.cal.pop(at)
	case c.nowQ.len() > 0:
		e = c.nowQ.take(1)[0]
	case ok && at <= until:
		c.now = at
		c.cal.advance(at)
		e = c.cal.pop(at)
	default:
		return false
	}
	c.w.fire(e)
	return true
}

// The calendar's buckets: calWidth µs each (1 << calShift), calBuckets of
// them, so it spans about 33 ms ahead of now. Nearly every event falls in
// that span (stage turns, disk times, network delays, ticks); client
// time-outs and the nemesis's schedule go to the heap.
const (
	calShift   = 6
	calBuckets = 512
	calMask    = calBuckets - 1
)

// calendar holds future slots in (at, seq) order. Bucket number b = at >>
// calShift; the buckets hold the numbers [base, base+calBuckets) at index
// b & calMask, each sorted, and far holds every slot past that span, as a
// heap. base is the bucket number of now, so a bucket's index is reused
// only once its number has passed, and the buckets in index order from
// base's form one ascending sequence. A push sorts its slot into a bucket
// of a few slots instead of sifting a heap of a hundred.
type calendar struct {
	buckets [calBuckets]bucket
	// full has bit i set while buckets[i] holds slots, so finding the next
	// one skips empty buckets 64 at a time.
	full [calBuckets / 64]uint64
	base int64
	n    int // slots in the buckets
	far  []slot
}

// bucket is one span of the calendar, sorted, consumed from head.
type bucket struct {
	s    []slot
	head int
}

func (q *calendar) push(s slot) {
	if q.buckets[0].s == nil {
		q.carve()
	}
	b := s.at >> calShift
	if b >= q.base+calBuckets {
		q.far = append(q.far, s)
		heapUp(q.far, len(q.far)-1)
		return
	}
	q.insert(s)
}

// carve gives every bucket room for a few slots out of one array, instead
// of each bucket growing its own on first use (two thousand allocations a
// run).
func (q *calendar) carve() {
	const room = 4
	all := make([]slot, calBuckets*room)
	for i := range q.buckets {
		q.buckets[i].s = all[i*room : i*room : (i+1)*room]
	}
}

// insert sorts s into its bucket. A new slot's seq is the largest yet, so
// it usually goes last, or past the few slots due later in the same span.
func (q *calendar) insert(s slot) {
	i := int(s.at>>calShift) & calMask
	bk := &q.buckets[i]
	bk.s = append(bk.s, s)
	j := len(bk.s) - 1
	for j > bk.head && s.before(&bk.s[j-1]) {
		bk.s[j] = bk.s[j-1]
		j--
	}
	bk.s[j] = s
	q.full[i/64] |= 1 << (i % 64)
	q.n++
}

// next is the time of the earliest slot; false if there is none.
func (q *calendar) next() (int64, bool) {
	if q.n == 0 {
		if len(q.far) == 0 {
			return 0, false
		}
		return q.far[0].at, true
	}
	start := int(q.base) & calMask
	w := start / 64
	if m := q.full[w] &^ (1<<(start%64) - 1); m != 0 {
		return q.headAt(w*64 + bits.TrailingZeros64(m)), true
	}
	for k := 1; k <= len(q.full); k++ {
		// Wrapping round to start's own word again finds the buckets
		// before start, the last of the span.
		wk := (w + k) % len(q.full)
		if m := q.full[wk]; m != 0 {
			return q.headAt(wk*64 + bits.TrailingZeros64(m)), true
		}
	}
	panic("sim: calendar count says non-empty, but every bucket is empty")
}

func (q *calendar) headAt(i int) int64 {
	bk := &q.buckets[i]
	return bk.s[bk.head].at
}

// advance moves the span to start at now's bucket (now is the time next
// returned, which nothing in the calendar precedes) and brings the heap's
// slots that now fall inside it into the buckets, in order.
func (q *calendar) advance(now int64) {
	q.base = now >> calShift
	for len(q.far) > 0 && q.far[0].at>>calShift < q.base+calBuckets {
		q.insert(heapPop(&q.far))
	}
}

// pop removes the earliest slot, due at at (as next said), and returns its
// event.
func (q *calendar) pop(at int64) event {
	i := int(at>>calShift) & calMask
	bk := &q.buckets[i]
	e := bk.s[bk.head].ev
	bk.head++
	if bk.head == len(bk.s) {
		bk.s, bk.head = bk.s[:0], 0
		q.full[i/64] &^= 1 << (i % 64)
	}
	q.n--
	return e
}

// heapPop removes a heap's first slot.
func heapPop(h *[]slot) slot {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	*h = s[:last]
	if last > 0 {
		heapDown(*h, 0)
	}
	return top
}

func heapUp(h []slot, i int) {
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

func heapDown(h []slot, i int) {
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
		w.nodes[e.node].runStage(int(e.epoch), stage(e.ref))
	case evTick:
		w.nodes[e.node].tick(int(e.epoch))
	case evRequest:
		rq := w.clock.requests.take(e.ref)
		rq.to.handle(rq)
	case evTimeout:
		rq := w.clock.requests.take(e.ref)
		rq.client.timeOut(rq)
	case evReply:
		r := w.clock.replies.take(e.ref)
		w.hashReply(r.rq.id, r.rp)
		r.rq.client.receive(r.rq.id, r.rp)
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
