package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDeadlinesHandOutBoundedContexts(t *testing.T) {
	start := time.Now()
	d := newDeadlines(context.Background(), time.Minute)
	ctx := d.current()
	dl, ok := ctx.Deadline()
	if !ok || dl.Before(start.Add(time.Minute)) || dl.After(time.Now().Add(time.Minute)) {
		t.Fatalf("deadline %v (set: %v), want a minute from now", dl, ok)
	}
	// Renewing publishes a new context; one whose deadline has not fired
	// is left alone, even if the renewal's clock says it is past.
	d.renew(time.Now().Add(2 * time.Minute))
	if d.current() == ctx {
		t.Error("renew did not publish a new context")
	}
	if ctx.Err() != nil {
		t.Errorf("renew cancelled a context before its deadline fired: %v", ctx.Err())
	}
	cur := d.current()
	d.close()
	if cur.Err() == nil || ctx.Err() == nil {
		t.Error("close left a context alive")
	}
}

// A context is released once its deadline has fired, and what an
// operation under it sees is that deadline, not a cancellation.
func TestDeadlinesReleaseExpiredContexts(t *testing.T) {
	d := newDeadlines(context.Background(), 20*time.Millisecond)
	defer d.close()
	ctx := d.current()
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("an operation's context ended with %v, want its deadline", ctx.Err())
	}
	d.renew(time.Now())
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.live {
		if l.ctx == ctx {
			t.Error("an expired context was not released")
		}
	}
}

func TestDeadlinesFollowTheParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	d := newDeadlines(parent, time.Minute)
	defer d.close()
	cancel()
	<-d.current().Done() // would hang if the parent's end did not reach it
}
