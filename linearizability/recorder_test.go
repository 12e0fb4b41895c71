package linearizability

import (
	"strings"
	"sync"
	"testing"
)

func TestRecorderRecordsEveryOutcome(t *testing.T) {
	r := NewRecorder()
	put := r.Call(0, Put("x", "a"), 10)
	get := r.Call(1, Get("x"), 12)
	lostPut := r.Call(2, Put("x", "b"), 14)
	lostGet := r.Call(3, Get("x"), 15)
	refused := r.Call(4, Put("x", "c"), 16)
	resolved := r.Call(5, CAS("x", 1, "d"), 17)
	_ = r.Call(6, Delete("y"), 18) // never completed

	for _, err := range []error{
		r.Return(put, PutOK(1), 20),
		r.Return(get, GetFound("a", 1), 25),
		r.Unknown(lostPut),
		r.Return(lostGet, UnknownOutcome(), 30),
		r.Drop(refused),
		r.Unknown(resolved),
		r.Resolve(resolved, CASSucceeded(3), 40),
	} {
		if err != nil {
			t.Fatalf("valid step refused: %v", err)
		}
	}

	h := r.History()
	want := []Status{Returned, Returned, Unknown, Unknown, Dropped, Resolved, Pending}
	if len(h.Ops) != len(want) {
		t.Fatalf("got %d operations, want %d", len(h.Ops), len(want))
	}
	for i, op := range h.Ops {
		if op.Status != want[i] {
			t.Errorf("operation %d (%v): status %v, want %v", i, op.Input, op.Status, want[i])
		}
	}
	if got := h.Ops[5]; got.Output != CASSucceeded(3) || got.Return != 40 {
		t.Errorf("resolved operation recorded as %+v", got)
	}

	res := mustCheck(t, h, 0)
	if res.Verdict != Linearizable {
		t.Fatalf("%s", res.Summary())
	}
	c := res.Counts
	if c.OK != 2 || c.Unknown != 2 || c.Resolved != 1 || c.UnknownReads != 1 || c.Dropped != 1 || c.Keys != 2 {
		t.Errorf("counts %+v do not match the recorded outcomes", c)
	}
}

func TestRecorderRefusesInvalidSteps(t *testing.T) {
	r := NewRecorder()
	id := r.Call(0, Put("x", "a"), 100)
	cases := []struct {
		name string
		err  error
	}{
		{"return before call", r.Return(id, PutOK(1), 99)},
		{"unknown handle", r.Return(OpID(7), PutOK(1), 200)},
		{"negative handle", r.Unknown(OpID(-1))},
		{"resolve with unknown outcome", r.Resolve(id, UnknownOutcome(), 200)},
		{"resolve before call", r.Resolve(id, PutOK(1), 50)},
	}
	for _, c := range cases {
		if c.err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}

	if err := r.Return(id, PutOK(1), 150); err != nil {
		t.Fatalf("valid return refused: %v", err)
	}
	for name, err := range map[string]error{
		"second return":        r.Return(id, PutOK(2), 160),
		"unknown after return": r.Unknown(id),
		"drop after return":    r.Drop(id),
		"resolve after return": r.Resolve(id, PutOK(1), 160),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.Contains(err.Error(), "already returned") {
			t.Errorf("%s: error %q does not say the operation already returned", name, err)
		}
	}
	if op := r.History().Ops[0]; op.Output != PutOK(1) || op.Return != 150 {
		t.Errorf("refused steps changed the operation: %+v", op)
	}
}

// History hands out a copy: recording more does not change it.
func TestRecorderHistoryIsASnapshot(t *testing.T) {
	r := NewRecorder()
	id := r.Call(0, Put("x", "a"), 0)
	h := r.History()
	if err := r.Return(id, PutOK(1), 5); err != nil {
		t.Fatal(err)
	}
	r.Call(0, Get("x"), 10)
	if len(h.Ops) != 1 || h.Ops[0].Status != Pending {
		t.Errorf("snapshot changed after later recording: %+v", h.Ops)
	}
}

// Real-cluster tests record from many goroutines at once. Run with -race
// to make this test meaningful.
func TestRecorderIsSafeForConcurrentUse(t *testing.T) {
	r := NewRecorder()
	const clients, opsPerClient = 8, 200
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "k" + string(rune('a'+c))
			for i := range opsPerClient {
				at := int64(i * 10)
				id := r.Call(c, Put(key, "v"), at)
				if err := r.Return(id, PutOK(uint64(i+1)), at+5); err != nil {
					t.Errorf("client %d: %v", c, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	h := r.History()
	if len(h.Ops) != clients*opsPerClient {
		t.Fatalf("recorded %d operations, want %d", len(h.Ops), clients*opsPerClient)
	}
	if res := mustCheck(t, h, 0); res.Verdict != Linearizable {
		t.Errorf("%s", res.Summary())
	}
}
