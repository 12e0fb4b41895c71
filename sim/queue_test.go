package sim

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The calendar hands out slots in exactly (at, seq) order, whatever the mix
// of near events (one bucket, neighbouring buckets), events past its span
// (the heap) and jumps of the clock over empty stretches, compared with a
// plain sorted list.
func TestCalendarOrder(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		var q calendar
		var want []slot
		var now int64
		var seq uint64
		for round := 0; round < 5000; round++ {
			for k := rng.IntN(4); k > 0; k-- {
				var d int64
				switch rng.IntN(5) {
				case 0:
					d = 1 + rng.Int64N(calWidthForTest) // the same or the next bucket
				case 1:
					d = 1 + rng.Int64N(3*calWidthForTest)
				case 2:
					d = 1 + rng.Int64N(calBuckets*calWidthForTest) // up to the span's end
				case 3:
					d = calBuckets*calWidthForTest - 2 + rng.Int64N(4) // either side of it
				default:
					d = 1 + rng.Int64N(40*calBuckets*calWidthForTest) // far
				}
				seq++
				s := slot{at: now + d, seq: seq, ev: event{ref: int32(seq)}}
				q.push(s)
				want = append(want, s)
			}
			// Several slots often share a time.
			if rng.IntN(3) == 0 && len(want) > 0 {
				seq++
				s := slot{at: want[rng.IntN(len(want))].at, seq: seq, ev: event{ref: int32(seq)}}
				q.push(s)
				want = append(want, s)
			}
			for k := rng.IntN(4); k > 0 && len(want) > 0; k-- {
				slices.SortFunc(want, bySlotOrder)
				at, ok := q.next()
				if !ok || at != want[0].at {
					t.Fatalf("seed %d round %d: next is %d (%v), want %d", seed, round, at, ok, want[0].at)
				}
				if at > now {
					now = at
					q.advance(at)
				}
				if e := q.pop(at); e.ref != want[0].ev.ref {
					t.Fatalf("seed %d round %d: popped seq %d at %d, want seq %d", seed, round, e.ref, at, want[0].ev.ref)
				}
				want = want[1:]
			}
		}
		for len(want) > 0 {
			slices.SortFunc(want, bySlotOrder)
			at, ok := q.next()
			if !ok || at != want[0].at {
				t.Fatalf("seed %d draining: next is %d (%v), want %d", seed, at, ok, want[0].at)
			}
			q.advance(at)
			if e := q.pop(at); e.ref != want[0].ev.ref {
				t.Fatalf("seed %d draining: popped seq %d, want %d", seed, e.ref, want[0].ev.ref)
			}
			want = want[1:]
		}
		if _, ok := q.next(); ok {
			t.Fatalf("seed %d: calendar not empty after every slot was taken", seed)
		}
	}
}

const calWidthForTest = 1 << calShift

func bySlotOrder(a, b slot) int {
	if a.before(&b) {
		return -1
	}
	return 1
}
