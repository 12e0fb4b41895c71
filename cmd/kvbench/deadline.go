package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlines hands the workers contexts that expire between about
// timeout-period and timeout from when they are used. A context with its
// own timer per operation would cost several allocations per request (and
// the client makes one when given a context without a deadline); instead a
// new shared context is made once per period and every operation in that
// period uses it.
type deadlines struct {
	parent  context.Context
	timeout time.Duration
	period  time.Duration

	cur  atomic.Pointer[context.Context]
	mu   sync.Mutex
	live []deadlineCtx // made and not yet released, oldest first
	stop chan struct{}
	done chan struct{}
}

type deadlineCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// newDeadlines starts renewing contexts under parent; call close when done.
func newDeadlines(parent context.Context, timeout time.Duration) *deadlines {
	d := &deadlines{
		parent: parent, timeout: timeout, period: max(timeout/10, time.Millisecond),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	d.renew(time.Now())
	go d.loop()
	return d
}

// current returns the context for an operation starting now.
func (d *deadlines) current() context.Context { return *d.cur.Load() }

func (d *deadlines) loop() {
	defer close(d.done)
	t := time.NewTicker(d.period)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			d.renew(now)
		case <-d.stop:
			return
		case <-d.parent.Done():
			return
		}
	}
}

// renew publishes a fresh context and releases those already expired
// (cancelling an expired context only frees its bookkeeping). Only a
// context whose own deadline has fired counts as expired: cancelling one
// whose timer is still due would fail its operations with "context
// canceled" instead of the deadline they ran into.
func (d *deadlines) renew(now time.Time) {
	ctx, cancel := context.WithDeadline(d.parent, now.Add(d.timeout))
	d.cur.Store(&ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.live = append(d.live, deadlineCtx{ctx, cancel})
	expired := 0
	for expired < len(d.live) && d.live[expired].ctx.Err() != nil {
		d.live[expired].cancel()
		expired++
	}
	d.live = append(d.live[:0], d.live[expired:]...)
}

// close stops renewing and cancels every context made, so call it only
// once no operation uses them.
func (d *deadlines) close() {
	close(d.stop)
	<-d.done
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.live {
		l.cancel()
	}
	d.live = nil
}
