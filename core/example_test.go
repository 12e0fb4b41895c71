package core_test

import (
	"fmt"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// A runtime's loop around a Node, for a cluster of one: feed it ticks and
// proposals, and after each input do the work each Ready asks for, in the
// order of the persistence contract, then Advance. The log and the state
// machine here are slices in memory; a real runtime writes the first to its
// WAL (one fsync per Ready when MustSync) and applies to its store.
func ExampleNode() {
	n, err := core.NewNode(core.Config{ID: 1, Peers: []core.NodeID{1}, Seed: 1}, core.PersistentState{})
	if err != nil {
		fmt.Println(err)
		return
	}
	var wal []core.Entry
	var applied []string
	handleReady := func() {
		for n.HasReady() {
			rd := n.Ready()
			if rd.SoftState != nil {
				fmt.Printf("role %s\n", rd.SoftState.Role)
			}
			// 1. rd.Messages could leave now; a cluster of one has none.
			// 2. Persist.
			if rd.Snapshot != nil {
				fmt.Printf("persist membership %v\n", rd.Snapshot.Conf.Voters)
			}
			for _, e := range rd.Entries {
				// An entry replaces the one at its index and all after it.
				wal = append(wal[:e.Index-1], e)
				fmt.Printf("persist entry %d (term %d) %q\n", e.Index, e.Term, e.Data)
			}
			if !rd.HardState.IsEmpty() {
				fmt.Printf("persist term %d, vote %d, commit %d\n", rd.HardState.Term, rd.HardState.Vote, rd.HardState.Commit)
			}
			// 3. rd.MessagesAfterPersist could leave now.
			// 4. Apply.
			for _, e := range rd.CommittedEntries {
				// The empty entry a new leader appends carries no command.
				if len(e.Data) > 0 {
					applied = append(applied, string(e.Data))
					fmt.Printf("apply entry %d %q\n", e.Index, e.Data)
				}
			}
			// 5. Done.
			n.Advance(rd)
		}
	}

	handleReady()
	for n.SoftState().Role != core.Leader {
		n.Tick()
		handleReady()
	}
	index, term, err := n.Propose([]byte("x=1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("proposed at index %d, term %d\n", index, term)
	handleReady()
	fmt.Printf("log of %d entries, applied %q\n", len(wal), applied)

	// Output:
	// persist membership [1]
	// role Candidate
	// persist term 1, vote 1, commit 0
	// role Leader
	// persist entry 1 (term 1) ""
	// persist term 1, vote 1, commit 1
	// proposed at index 2, term 1
	// persist entry 2 (term 1) "x=1"
	// persist term 1, vote 1, commit 2
	// apply entry 2 "x=1"
	// log of 2 entries, applied ["x=1"]
}
