package sim

import "testing"

// The nodes' virtual clocks reach the state machine's session clock the way
// the servers' wall clocks do: through stamped Registers and the leader's
// clock entries while writes arrive, so it follows virtual time to within
// about a second, and every client holds a session.
func TestSessionClockFollowsVirtualTime(t *testing.T) {
	const duration = 10_000_000 // µs
	opts := Options{Seed: 7, Duration: duration, Faults: &Faults{}}
	w, res := newWorld(opts)
	w.run(opts)
	if w.err != nil {
		t.Fatal(w.err)
	}
	for _, n := range w.nodes {
		if n.state != nodeUp {
			continue
		}
		u := n.mem.Usage()
		if u.SessionClockMs < duration/1000-2000 || u.SessionClockMs > duration/1000+1000 {
			t.Errorf("node %d: session clock %d ms after %d ms of virtual time", n.id, u.SessionClockMs, duration/1000)
		}
		// A Register retried after a lost reply leaves one more.
		if u.Sessions < uint64(res.Clients) {
			t.Errorf("node %d: %d sessions, want one per client (%d) at least", n.id, u.Sessions, res.Clients)
		}
	}
}
