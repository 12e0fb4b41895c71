package sim

import "container/heap"

// event is something that happens at a virtual time. seq breaks ties in the
// order events were scheduled, so the run never depends on heap internals.
type event struct {
	at  int64
	seq uint64
	fn  func()
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

// clock is the simulator's virtual time and its agenda.
type clock struct {
	now int64
	seq uint64
	q   eventQueue
}

// at schedules fn at virtual time t (never in the past).
func (c *clock) at(t int64, fn func()) {
	c.seq++
	heap.Push(&c.q, &event{at: max(t, c.now), seq: c.seq, fn: fn})
}

// after schedules fn d microseconds from now.
func (c *clock) after(d int64, fn func()) { c.at(c.now+d, fn) }

// step runs the next event; false when nothing is left or the next event is
// past until.
func (c *clock) step(until int64) bool {
	if len(c.q) == 0 || c.q[0].at > until {
		return false
	}
	e := heap.Pop(&c.q).(*event)
	c.now = e.at
	e.fn()
	return true
}
