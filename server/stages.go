package server

import (
	"slices"
	"sync"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// stages schedules the replica's pipeline (see the replica package
// comment) on goroutines: the event loop takes batches and finishes them,
// and the WAL, state machine and snapshot stages each run on a goroutine
// of their own, so batches overlap. The stage functions and their ordering
// rules are the replica's; this file only moves work between queues.
type stages struct {
	s       *Server
	walQ    chan replica.WALJob
	finishQ chan *replica.Batch
	// One snapshot is written at a time (the replica captures the next
	// only once this one is written), so snapQ never fills.
	snapQ chan *replica.PendingSnapshot
	quit  chan struct{}
	errc  chan error
	wg    sync.WaitGroup
}

// maxGroup bounds the jobs a stage takes at once: one fsync or one state
// machine transaction covers them all.
const maxGroup = replica.DefaultMaxInflight

func (s *Server) startStages() *stages {
	p := &stages{
		s:       s,
		walQ:    make(chan replica.WALJob, 2*replica.DefaultMaxInflight+1),
		finishQ: make(chan *replica.Batch, replica.DefaultMaxInflight),
		snapQ:   make(chan *replica.PendingSnapshot, 1),
		quit:    make(chan struct{}),
		errc:    make(chan error, 3),
	}
	p.wg.Add(3)
	go p.runWAL()
	go p.runStore()
	go p.runSnapshots()
	return p
}

// stop ends the stage goroutines once the work queued for the WAL is done
// (loop side, as the loop exits).
func (p *stages) stop() {
	close(p.quit)
	close(p.snapQ)
	close(p.walQ)
	p.wg.Wait()
	// A snapshot captured but not written holds a bbolt read transaction,
	// which would keep the store from closing.
	p.s.rep.AbandonSnapshot()
}

// gather returns first and every job already waiting on q, up to maxGroup:
// what one stage run covers.
func gather[T any](buf []T, first T, q <-chan T) []T {
	buf = append(buf[:0], first)
	for len(buf) < maxGroup {
		select {
		case j, ok := <-q:
			if !ok {
				return buf
			}
			buf = append(buf, j)
		default:
			return buf
		}
	}
	return buf
}

// runWAL is the WAL stage's goroutine.
func (p *stages) runWAL() {
	defer p.wg.Done()
	// The state machine stage stops behind every batch persisted.
	defer func() { p.s.storeQ <- replica.StoreJob{} }()
	var jobs []replica.WALJob
	var persisted []*replica.Batch
	for j := range p.walQ {
		jobs = gather(jobs, j, p.walQ)
		var err error
		persisted, err = p.s.rep.RunWAL(persisted[:0], jobs)
		// Batches left in spare capacity would pin their slices of old log
		// arrays, and every entry compacted away since.
		clear(jobs)
		if err != nil {
			p.errc <- err
			return
		}
		for _, b := range persisted {
			p.s.storeQ <- replica.StoreJob{Batch: b}
		}
		clear(persisted)
	}
}

// isStop tells the empty job that stops the state machine stage.
func isStop(j replica.StoreJob) bool { return j.Batch == nil && j.Do == nil }

// runStore is the state machine stage's goroutine.
func (p *stages) runStore() {
	defer p.wg.Done()
	var jobs []replica.StoreJob
	var applied []*replica.Batch
	for j := range p.s.storeQ {
		jobs = gather(jobs, j, p.s.storeQ)
		stop := false
		if i := slices.IndexFunc(jobs, isStop); i >= 0 {
			jobs, stop = jobs[:i], true
		}
		var err error
		applied, err = p.s.rep.RunStore(applied[:0], jobs)
		p.s.behindRepair.Store(p.s.rep.BehindRepair())
		clear(jobs)
		if err != nil {
			p.errc <- err
			if !stop {
				p.drainStore()
			}
			return
		}
		p.s.watches.notify()
		for _, b := range applied {
			p.finishQ <- b
		}
		clear(applied)
		if stop {
			return
		}
	}
}

// drainStore discards state machine work after a failure until the WAL
// stage says stop, so that nothing blocks on a full queue.
func (p *stages) drainStore() {
	for j := range p.s.storeQ {
		if isStop(j) {
			return
		}
	}
}

// runSnapshots is the snapshot stage's goroutine: it writes each captured
// snapshot, then lets the state machine capture the next, compacts the
// in-memory log (loop) and then the WAL behind every batch already queued
// for it.
func (p *stages) runSnapshots() {
	defer p.wg.Done()
	rep := p.s.rep
	for snap := range p.snapQ {
		select {
		case <-p.quit: // stopping: not worth writing now
			continue
		default:
		}
		start := time.Now()
		size, err := rep.WriteSnapshot(snap)
		if err != nil {
			p.errc <- err
			return
		}
		p.s.obs.snapshotTaken(snap.Index(), size, time.Since(start))
		select {
		case p.s.storeQ <- replica.StoreJob{Do: rep.SnapshotDone}:
		case <-p.quit:
			return
		}
		select {
		case p.s.inbox <- func() {
			job, err := rep.SnapshotWritten(snap)
			if err != nil {
				p.s.fatal(err)
				return
			}
			p.walQ <- job
		}:
		case <-p.quit:
			return
		}
	}
}

// take hands every batch the replica has ready to the WAL stage (loop).
func (p *stages) take() {
	for {
		b, ok := p.s.rep.Ready()
		if !ok {
			return
		}
		p.s.obs.batchReady(b)
		p.walQ <- replica.WALJob{Batch: b}
	}
}

// finish answers a batch's requests and advances the node (loop); false
// means the node must stop.
func (p *stages) finish(b *replica.Batch) bool {
	p.s.obs.finishing(b)
	snap, err := p.s.rep.Finish(b)
	if err != nil {
		p.s.fatal(err)
		return false
	}
	if snap != nil {
		p.snapQ <- snap
	}
	return true
}
