package main

import (
	"context"
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
	// Renewing far in the future publishes a new context and releases the
	// ones already past their deadline.
	d.renew(time.Now().Add(2 * time.Minute))
	if d.current() == ctx {
		t.Error("renew did not publish a new context")
	}
	if ctx.Err() == nil {
		t.Error("an expired context was not released")
	}
	d.mu.Lock()
	live := len(d.live)
	d.mu.Unlock()
	if live != 1 {
		t.Errorf("%d contexts kept, want only the current one", live)
	}
	cur := d.current()
	d.close()
	if cur.Err() == nil {
		t.Error("close left the current context alive")
	}
}

func TestDeadlinesFollowTheParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	d := newDeadlines(parent, time.Minute)
	defer d.close()
	cancel()
	<-d.current().Done() // would hang if the parent's end did not reach it
}
