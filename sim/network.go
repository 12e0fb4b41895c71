package sim

import (
	"math/rand/v2"

	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// network carries messages between simulated nodes with delay, loss,
// duplication and partitions. Reordering falls out of random delays.
type network struct {
	w   *world
	rng *rand.Rand
	// cut[from][to] blocks messages from → to (index by id-1).
	cut [][]bool
}

func newNetwork(w *world, rng *rand.Rand, size int) *network {
	nw := &network{w: w, rng: rng}
	nw.grow(size)
	return nw
}

// grow makes room for nodes up to id size (a node joining the cluster),
// connected to everyone.
func (nw *network) grow(size int) {
	for i := range nw.cut {
		for len(nw.cut[i]) < size {
			nw.cut[i] = append(nw.cut[i], false)
		}
	}
	for len(nw.cut) < size {
		nw.cut = append(nw.cut, make([]bool, size))
	}
}

func (nw *network) heal() {
	for _, row := range nw.cut {
		clear(row)
	}
}

func (nw *network) connected(from, to core.NodeID) bool {
	if int(from) > len(nw.cut) || int(to) > len(nw.cut) {
		return false
	}
	return !nw.cut[from-1][to-1]
}

// cutLink blocks (or unblocks) messages from → to.
func (nw *network) cutLink(from, to core.NodeID, cut bool) {
	nw.cut[from-1][to-1] = cut
}

// delay draws one message's transit time.
func (nw *network) delay() int64 {
	f := &nw.w.faults // not a copy: Faults is large and this runs per message
	d := f.MinDelay + nw.rng.Int64N(f.MaxDelay-f.MinDelay+1)
	if f.SpikeProb > 0 && nw.rng.Float64() < f.SpikeProb {
		d += nw.rng.Int64N(f.SpikeDelay)
	}
	return d
}

// lose reports whether a message is dropped.
func (nw *network) lose() bool {
	if p := nw.w.faults.DropProb; p > 0 && nw.rng.Float64() < p {
		nw.w.counts.Dropped++
		return true
	}
	return false
}

// send schedules m's delivery; it departs at departAt.
func (nw *network) send(departAt int64, m core.Message) {
	if nw.lose() {
		return
	}
	copies := 1
	if p := nw.w.faults.DupProb; p > 0 && nw.rng.Float64() < p {
		copies = 2
		nw.w.counts.Duplicated++
	}
	for range copies {
		nw.w.clock.deliverAt(departAt+nw.delay(), m)
	}
}

// arrive delivers m unless a partition appeared while it was in flight.
func (nw *network) arrive(m core.Message) {
	if !nw.connected(m.From, m.To) {
		return
	}
	to := nw.w.node(m.To)
	if to == nil {
		return // an id the simulator never started
	}
	nw.w.hashMsg(m)
	to.deliver(m)
}
