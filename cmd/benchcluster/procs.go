package main

import (
	"os"
	"sync"
)

// Every child process the driver starts is tracked here until it exits,
// so that however the driver ends (an error, Ctrl-C, a panic on the main
// goroutine) it can kill whatever is still running.
var (
	trackedMu sync.Mutex
	tracked   = map[*os.Process]bool{}
)

func track(p *os.Process) {
	trackedMu.Lock()
	tracked[p] = true
	trackedMu.Unlock()
}

func untrack(p *os.Process) {
	trackedMu.Lock()
	delete(tracked, p)
	trackedMu.Unlock()
}

// killTracked SIGKILLs every child still running and returns how many
// there were. The members are normally stopped cleanly before this; it is
// the last resort.
func killTracked() int {
	trackedMu.Lock()
	defer trackedMu.Unlock()
	n := 0
	for p := range tracked {
		if p.Kill() == nil {
			n++
		}
	}
	return n
}
