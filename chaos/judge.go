package chaos

import (
	"fmt"
	"slices"
	"sort"
	"time"

	lin "github.com/therealutkarshpriyadarshi/keyval/linearizability"
)

// Write is one write a client sent, with what the cluster answered. Writes
// whose outcome is unknown have Acked false and only the request.
type Write struct {
	Op    lin.OpID   `json:"op"`
	Kind  lin.OpKind `json:"kind"`
	Key   string     `json:"key"`
	Value string     `json:"value,omitempty"`
	Acked bool       `json:"acked"`
	// Version: a put's or successful CAS's new version (the store revision
	// of that write); a failed CAS's current version; a delete's store
	// revision after it.
	Version   uint64 `json:"version,omitempty"`
	Succeeded bool   `json:"succeeded,omitempty"` // CAS
	Existed   bool   `json:"existed,omitempty"`   // delete
}

// changed says whether an acknowledged write certainly changed the store,
// at revision Version.
func (w Write) changed() bool {
	if !w.Acked {
		return false
	}
	switch w.Kind {
	case lin.OpPut:
		return true
	case lin.OpCAS:
		return w.Succeeded
	case lin.OpDelete:
		return w.Existed
	}
	return false
}

func (w Write) String() string {
	status := "acknowledged"
	if !w.Acked {
		status = "of unknown outcome"
	}
	switch w.Kind {
	case lin.OpPut:
		return fmt.Sprintf("op %d put(%s, %q) %s at v%d", w.Op, w.Key, w.Value, status, w.Version)
	case lin.OpCAS:
		return fmt.Sprintf("op %d cas(%s, →%q) %s at v%d", w.Op, w.Key, w.Value, status, w.Version)
	case lin.OpDelete:
		return fmt.Sprintf("op %d delete(%s) %s at revision %d", w.Op, w.Key, status, w.Version)
	}
	return fmt.Sprintf("op %d %v(%s)", w.Op, w.Kind, w.Key)
}

// KeyState is one key as the cluster holds it at the end.
type KeyState struct {
	Found   bool   `json:"found"`
	Value   string `json:"value,omitempty"`
	Version uint64 `json:"version,omitempty"`
}

// FinalState is the store after the run, read once every member had
// applied the whole log: every key of the key space, and the store
// revision.
type FinalState struct {
	Keys     map[string]KeyState `json:"keys"`
	Revision uint64              `json:"revision"`
}

// Loss is an acknowledged write the final state contradicts.
type Loss struct {
	Write Write  `json:"write"`
	Why   string `json:"why"`
}

// CheckDurability finds acknowledged writes that the final state shows were
// lost: neither present nor legitimately overwritten. Versions make this
// exact: a key's version is the store revision of its last write, so it
// only grows, and every change of the store has its own revision.
//
//   - a put or successful CAS acknowledged at version v: the key must now
//     be at a version above v, or at v with the written value, or absent
//     with a delete that may have come after it (one acknowledged at a
//     revision above v, or one of unknown outcome);
//   - a delete of an existing key acknowledged at revision r: the key must
//     be absent, or at a version above r;
//   - every acknowledged change has a revision no other acknowledged change
//     has (a revision given out twice means the first write was lost and
//     its revision reused), and none above the final store revision.
func CheckDurability(writes []Write, final FinalState) []Loss {
	var losses []Loss
	lose := func(w Write, format string, args ...any) {
		losses = append(losses, Loss{Write: w, Why: fmt.Sprintf(format, args...)})
	}
	// Deletes by key: acknowledged ones' revisions, and whether any has an
	// unknown outcome.
	deleteRevs := map[string][]uint64{}
	unknownDelete := map[string]bool{}
	for _, w := range writes {
		if w.Kind != lin.OpDelete {
			continue
		}
		if w.changed() {
			deleteRevs[w.Key] = append(deleteRevs[w.Key], w.Version)
		} else if !w.Acked {
			unknownDelete[w.Key] = true
		}
	}
	byRevision := map[uint64][]Write{}
	for _, w := range writes {
		if !w.changed() {
			continue
		}
		byRevision[w.Version] = append(byRevision[w.Version], w)
		if w.Version > final.Revision {
			lose(w, "the final store revision is %d, below this acknowledged write's", final.Revision)
			continue
		}
		k, ok := final.Keys[w.Key]
		if !ok {
			lose(w, "key %s missing from the final read", w.Key)
			continue
		}
		if w.Kind == lin.OpDelete {
			if k.Found && k.Version < w.Version {
				lose(w, "key %s is back at v%d (%q), older than this delete", w.Key, k.Version, k.Value)
			}
			continue
		}
		switch {
		case k.Found && k.Version > w.Version:
			// Overwritten by a later write.
		case k.Found && k.Version == w.Version:
			if k.Value != w.Value {
				lose(w, "key %s is at v%d with %q instead", w.Key, k.Version, k.Value)
			}
		case k.Found:
			lose(w, "key %s went back to v%d (%q)", w.Key, k.Version, k.Value)
		default:
			laterDelete := slices.ContainsFunc(deleteRevs[w.Key], func(r uint64) bool { return r > w.Version })
			if !laterDelete && !unknownDelete[w.Key] {
				lose(w, "key %s is absent, and no delete of it came after this write", w.Key)
			}
		}
	}
	revs := make([]uint64, 0, len(byRevision))
	for r := range byRevision {
		revs = append(revs, r)
	}
	slices.Sort(revs)
	for _, r := range revs {
		if ws := byRevision[r]; len(ws) > 1 {
			for _, w := range ws {
				lose(w, "%d acknowledged writes were all given revision %d", len(ws), r)
			}
		}
	}
	sort.SliceStable(losses, func(i, j int) bool { return losses[i].Write.Op < losses[j].Write.Op })
	return losses
}

// Divergence is a key on which a member's own state differs from what the
// cluster answered linearizably at the end.
type Divergence struct {
	Node   int      `json:"node"`
	Key    string   `json:"key"`
	Local  KeyState `json:"local"`
	Agreed KeyState `json:"agreed"`
}

func (d Divergence) String() string {
	return fmt.Sprintf("%s holds %s as %s, the cluster answers %s", nodeName(d.Node), d.Key, describeKey(d.Local), describeKey(d.Agreed))
}

func describeKey(k KeyState) string {
	if !k.Found {
		return "absent"
	}
	return fmt.Sprintf("%q @v%d", k.Value, k.Version)
}

// CheckReplicas compares each member's local (serializable) reads, taken
// after every member applied the whole log, with the final linearizable
// reads.
func CheckReplicas(final FinalState, perNode []map[string]KeyState) []Divergence {
	var out []Divergence
	keys := make([]string, 0, len(final.Keys))
	for k := range final.Keys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, local := range perNode {
		for _, k := range keys {
			if got := local[k]; got != final.Keys[k] {
				out = append(out, Divergence{Node: i, Key: k, Local: got, Agreed: final.Keys[k]})
			}
		}
	}
	return out
}

// Verdicts is what the judge found in one run.
type Verdicts struct {
	// Lin is Porcupine's verdict on the whole history, final reads included
	// (so a lost write shows there too, as a final read no order explains).
	Lin lin.Result
	// AckedChanges counts acknowledged writes that changed the store.
	AckedChanges int
	Lost         []Loss
	Divergent    []Divergence
}

// Judge checks a run: the history for linearizability (timeout bounds
// Porcupine), the acknowledged writes against the final state, and each
// member's local state against the final reads.
func Judge(h lin.History, writes []Write, final FinalState, perNode []map[string]KeyState, timeout time.Duration) Verdicts {
	v := Verdicts{Lin: lin.Check(h, timeout)}
	for _, w := range writes {
		if w.changed() {
			v.AckedChanges++
		}
	}
	v.Lost = CheckDurability(writes, final)
	v.Divergent = CheckReplicas(final, perNode)
	return v
}
