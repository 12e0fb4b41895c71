package pipemsg

import (
	"slices"
	"testing"
)

func TestTakeFillsAMessageUpToTheBound(t *testing.T) {
	third := func(*int) int { return MaxBytes / 3 }
	items := make([]*int, 7)
	for i := range items {
		items[i] = new(int)
	}
	queue := slices.Clone(items)
	batch := Take(&queue, nil, third)
	if len(batch) != 3 || len(queue) != 4 {
		t.Fatalf("took %d, left %d; want 3 and 4", len(batch), len(queue))
	}
	if batch[0] != items[0] || queue[0] != items[3] {
		t.Fatal("not taken from the front in order")
	}
	if tail := queue[:cap(queue)][len(queue):]; slices.ContainsFunc(tail, func(p *int) bool { return p != nil }) {
		t.Fatal("the queue's array still references taken items")
	}
}

func TestTakeSendsAnOversizedItemAlone(t *testing.T) {
	huge := func(string) int { return 2 * MaxBytes }
	queue := []string{"a", "b"}
	if batch := Take(&queue, nil, huge); len(batch) != 1 || batch[0] != "a" {
		t.Fatalf("took %q, want just the first", batch)
	}
	if batch := Take(&queue, nil, huge); len(batch) != 1 || len(queue) != 0 {
		t.Fatalf("took %q, left %q", batch, queue)
	}
	if batch := Take(&queue, nil, huge); len(batch) != 0 {
		t.Fatalf("took %q from an empty queue", batch)
	}
}
