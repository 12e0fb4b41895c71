package server

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// Defaults for PipelineOptions' bounds on what one stream holds.
const (
	DefaultMaxPipelineCalls      = 4096
	DefaultMaxPipelineReplyBytes = 64 << 20
)

// replyErrorReserve is what a running call reserves for a reply without
// a value: room for an error message.
const replyErrorReserve = 1 << 10

func (opt *PipelineOptions) setDefaults() {
	if opt.MaxInFlight <= 0 {
		opt.MaxInFlight = DefaultMaxPipelineCalls
	}
	if opt.MaxReplyBytes <= 0 {
		opt.MaxReplyBytes = DefaultMaxPipelineReplyBytes
	}
	if opt.MaxValueBytes <= 0 {
		opt.MaxValueBytes = DefaultMaxValueBytes
	}
}

// valueReserve is the most a reply carrying a value can be, as replySize
// counts it.
func valueReserve(maxValue int) int {
	return replySize(&apipb.Reply{}) + max(maxValue, replyErrorReserve)
}

// replyReserve is what call reserves when it starts. A Get reserves room
// for its value only once its read barrier has passed (reserveValue), so
// Gets waiting on the barrier do not crowd each other out. A
// CompareAndSwap's current value comes back from the apply path, past any
// point the pipeline could wait at, so it reserves it from the start.
func replyReserve(call *apipb.Call, maxValue int) int {
	if _, ok := call.Op.(*apipb.Call_CompareAndSwap); ok {
		return valueReserve(maxValue)
	}
	return replySize(&apipb.Reply{}) + replyErrorReserve
}

// replyBudget counts what one stream holds for its replies: calls running
// or answered and not yet sent, and their bytes (reserved while running,
// exact once answered). Values are read only under a reservation, so the
// bytes bound the memory the stream's replies take.
type replyBudget struct {
	mu                 sync.Mutex
	bytes, calls       int
	maxBytes, maxCalls int
	// room is kept free when admitting a call, so a running Get can
	// always reserve its value once queued replies are sent.
	room int
	// changed is closed (and replaced) when something is given back while
	// someone waits.
	changed chan struct{}
	waiting int
	// blocked counts the stream's loop and calls waiting for room; the
	// stream is held back while any is (onHeld hears of it).
	blocked int
	onHeld  func(held bool)
}

func newReplyBudget(maxBytes, maxCalls, maxValue int, onHeld func(bool)) *replyBudget {
	return &replyBudget{maxBytes: maxBytes, maxCalls: maxCalls, room: valueReserve(maxValue), changed: make(chan struct{}), onHeld: onHeld}
}

// block and unblock bracket a wait for room.
func (b *replyBudget) block() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.blocked++; b.blocked == 1 && b.onHeld != nil {
		b.onHeld(true)
	}
}

func (b *replyBudget) unblock() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.blocked--; b.blocked == 0 && b.onHeld != nil {
		b.onHeld(false)
	}
}

// take reserves n bytes for a new call if they fit. A call always fits when
// the stream holds nothing, so a bound below one reply slows a stream to
// one call at a time instead of stopping it. The second result is what to
// wait on when it does not fit.
func (b *replyBudget) take(n int) (bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.calls > 0 && (b.calls >= b.maxCalls || b.bytes+n+b.room > b.maxBytes) {
		b.waiting++
		return false, b.changed
	}
	b.bytes += n
	b.calls++
	return true, nil
}

// grow adds n bytes to a running call's reservation of own if they fit,
// or if the call is all the stream holds.
func (b *replyBudget) grow(n, own int) (bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bytes+n > b.maxBytes && b.bytes > own {
		b.waiting++
		return false, b.changed
	}
	b.bytes += n
	return true, nil
}

// charge counts a reply for a call that was never admitted (the loop's
// own refusals while stopping): it must be sent, so it is not refused.
func (b *replyBudget) charge(n int) {
	b.mu.Lock()
	b.bytes += n
	b.calls++
	b.mu.Unlock()
}

// settle replaces a running call's reservation by its reply's size.
func (b *replyBudget) settle(reserved, actual int) { b.giveBack(reserved-actual, 0) }

// releaseSent gives back what the replies just sent held.
func (b *replyBudget) releaseSent(sent []*apipb.Reply) {
	n := 0
	for _, r := range sent {
		n += replySize(r)
	}
	b.giveBack(n, len(sent))
}

func (b *replyBudget) giveBack(bytes, calls int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bytes -= bytes
	b.calls -= calls
	if b.waiting > 0 {
		close(b.changed)
		b.changed, b.waiting = make(chan struct{}), 0
	}
}

// held is what the stream holds now.
func (b *replyBudget) held() (bytes, calls int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bytes, b.calls
}

type admission int

const (
	callAdmitted admission = iota
	callDraining           // the server is stopping: refuse the call
	callCanceled           // the stream ended
)

// admitCall waits until the stream's budget has room for a call that
// reserves reserve bytes. While it waits nothing more is read from the
// stream, so the client is held back by flow control.
func admitCall(ctx context.Context, b *replyBudget, reserve int, draining <-chan struct{}) admission {
	if isClosed(draining) {
		return callDraining
	}
	blocked := false
	defer func() {
		if blocked {
			b.unblock()
		}
	}()
	for {
		ok, changed := b.take(reserve)
		if ok {
			return callAdmitted
		}
		if !blocked {
			b.block()
			blocked = true
		}
		select {
		case <-changed:
		case <-draining:
			return callDraining
		case <-ctx.Done():
			return callCanceled
		}
	}
}

// callShare is a running pipelined call's part of its stream's budget,
// carried in the call's context for reserveValue.
type callShare struct {
	b        *replyBudget
	reserved int
	maxValue int
	grown    bool
}

type callShareKey struct{}

// reserveValue is called by a read right before it reads a value: for a
// pipelined call it waits until the stream has room for the largest value
// the reply could carry, so that values read for a client that does not
// read its replies never exceed the stream's bound. Other calls go on at
// once.
func reserveValue(ctx context.Context) error {
	c, ok := ctx.Value(callShareKey{}).(*callShare)
	if !ok || c.grown {
		return nil
	}
	n := valueReserve(c.maxValue) - c.reserved
	blocked := false
	defer func() {
		if blocked {
			c.b.unblock()
		}
	}()
	for {
		ok, changed := c.b.grow(n, c.reserved)
		if ok {
			c.reserved, c.grown = c.reserved+n, true
			return nil
		}
		if !blocked {
			c.b.block()
			blocked = true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			bytes, calls := c.b.held()
			return status.Errorf(codes.ResourceExhausted,
				"this pipeline stream holds %d bytes in %d replies and calls, its bound (--max-pipeline-reply-bytes %d), and its client is not reading the replies: read them, or use fewer calls in flight",
				bytes, calls, c.b.maxBytes)
		}
	}
}
