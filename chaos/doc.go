// Package chaos is a Jepsen-style test of real keyvald processes: it starts a
// cluster (each member in its own network namespace when it can), runs
// concurrent clients against it through the Go client while a seeded
// schedule of faults — kill -9, SIGSTOP pauses, network partitions, rolling
// restarts, members replaced by new ones — hits the members, then judges
// what the clients saw: the whole history with Porcupine (via the
// linearizability package), and every acknowledged write against the
// cluster's final state.
//
// The parts, one job each:
//
//   - nemesis.go: the kinds of fault and the schedule a seed draws (pure);
//   - hosts.go, netns.go: where members run and how the network between
//     them is cut (network namespaces on a bridge, or plain loopback);
//   - leftovers.go: the run lock, and removing what a crashed run left;
//   - cluster.go: the keyvald processes (start, kill, pause, readiness) and
//     membership (replacing a member through the client's member calls);
//   - events.go: the timeline on the run clock;
//   - workers.go: the clients and what they record;
//   - judge.go: the verdicts (pure);
//   - report.go: the summary a person reads;
//   - run.go: the whole run, and its cleanup on every path out.
//
// cmd/kvchaos is the driver; docs/chaos.md says how to run and read it.
package chaos
