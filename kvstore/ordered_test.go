package kvstore

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"pgregory.net/rapid"
)

// TestOrderedMapAgainstSortedModel drives the chunked map through enough
// inserts and deletes to split chunks many times and empty some, checking
// lookups and ordered iteration from random points against a plain map.
func TestOrderedMapAgainstSortedModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2)) // seeded: the test is reproducible
	var m orderedMap
	model := map[string]uint64{}
	check := func(step int) {
		keys := make([]string, 0, len(model))
		for k := range model {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		from := fmt.Sprintf("k%05d", rng.IntN(6000))
		i := sort.SearchStrings(keys, from)
		m.ascend(from, func(it *item) bool {
			if i >= len(keys) || it.key != keys[i] || it.meta.modRev != model[it.key] {
				t.Fatalf("step %d: ascend from %q gave %q, want %q", step, from, it.key, keys[i:min(i+1, len(keys))])
			}
			i++
			return true
		})
		if i != len(keys) {
			t.Fatalf("step %d: ascend stopped %d keys short", step, len(keys)-i)
		}
		for _, c := range m.chunks {
			if len(c) == 0 || len(c) > maxChunk {
				t.Fatalf("step %d: chunk of %d items", step, len(c))
			}
		}
	}
	// Half the keys first, built at once in shuffled order (as a restore
	// builds the history), then inserts and deletes around them.
	var built []item
	for _, k := range rng.Perm(5000)[:2500] {
		key := fmt.Sprintf("k%05d", k)
		built = append(built, item{key: key, meta: kvMeta{modRev: uint64(k)}})
		model[key] = uint64(k)
	}
	m.build(built)
	check(-1)
	for step := 0; step < 30000; step++ {
		key := fmt.Sprintf("k%05d", rng.IntN(5000))
		if rng.IntN(3) == 0 {
			_, want := model[key]
			if got := m.delete(key); got != want {
				t.Fatalf("step %d: delete %q = %v, want %v", step, key, got, want)
			}
			delete(model, key)
		} else {
			m.set(key, nil, kvMeta{modRev: uint64(step)})
			model[key] = uint64(step)
		}
		it, ok := m.get(key)
		if v, want := model[key]; ok != want || (ok && it.meta.modRev != v) {
			t.Fatalf("step %d: get %q = %v, want %v", step, key, ok, want)
		}
		if step%1000 == 0 {
			check(step)
		}
	}
	check(-1)
	// Delete everything: chunks vanish as they empty.
	for k := range model {
		m.delete(k)
	}
	if len(m.chunks) != 0 {
		t.Fatalf("%d chunks left after deleting every key", len(m.chunks))
	}
}

func TestOrderedMapRapid(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var m orderedMap
		model := map[string]bool{}
		keys := rapid.SliceOfN(rapid.StringN(0, 3, 3), 1, 2000).Draw(t, "keys")
		for _, k := range keys {
			if model[k] && rapid.Bool().Draw(t, "delete") {
				m.delete(k)
				delete(model, k)
				continue
			}
			m.set(k, nil, kvMeta{modRev: 1})
			model[k] = true
		}
		var want []string
		for k := range model {
			want = append(want, k)
		}
		sort.Strings(want)
		var got []string
		m.ascend("", func(it *item) bool { got = append(got, it.key); return true })
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("iteration %q, want %q", got, want)
		}
	})
}
