package core

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/stretchr/testify/require"
)

// Transcript tests. Each file in testdata/*.txt scripts a small cluster one
// verb at a time (the verbs are in interaction_handlers_test.go) and shows
// what came of it as text: Readys, deliveries, per-node state. The test
// compares that text with what the file holds below each verb's "----", so
// a change of behaviour shows up as a readable diff. After a deliberate
// change, regenerate the expected text and review the diff:
//
//	go test ./core/ -run TestInteraction -rewrite
//
// The cluster under the transcripts is cluster_test.go's: perfect storage,
// a message queue the script controls, and the Checker after every step.
// An invariant violation or a malformed script fails the test outright; it
// never becomes expected output that -rewrite would bless.

func TestInteraction(t *testing.T) {
	// Only *.txt: rapid keeps its failure files under testdata/ too.
	files, err := filepath.Glob("testdata/*.txt")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			env := &interactionEnv{}
			datadriven.RunTest(t, path, env.handle)
		})
	}
}

// interactionEnv is one transcript's world: the cluster, and the output of
// the verb being run.
type interactionEnv struct {
	c   *cluster
	out strings.Builder
}

type verbHandler func(env *interactionEnv, td *datadriven.TestData) error

func (env *interactionEnv) handle(t *testing.T, td *datadriven.TestData) string {
	h, ok := interactionVerbs[td.Cmd]
	if !ok {
		td.Fatalf(t, "unknown verb %q", td.Cmd)
	}
	if env.c == nil && td.Cmd != "add-nodes" {
		td.Fatalf(t, "%s before add-nodes", td.Cmd)
	}
	env.out.Reset()
	if err := h(env, td); err != nil {
		td.Fatalf(t, "%s: %v", td.Cmd, err)
	}
	if env.out.Len() == 0 {
		return "ok\n"
	}
	return env.out.String()
}

func (env *interactionEnv) printf(format string, args ...any) {
	fmt.Fprintf(&env.out, format, args...)
}

// positional returns the arguments written without "=", in order.
func positional(td *datadriven.TestData) []string {
	var out []string
	for _, a := range td.CmdArgs {
		if len(a.Vals) == 0 {
			out = append(out, a.Key)
		}
	}
	return out
}

func parseID(s string) (NodeID, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return None, fmt.Errorf("%q is not a node id", s)
	}
	return NodeID(id), nil
}

// nodes returns the node ids given as positional arguments, or every node
// when none is given.
func (env *interactionEnv) nodes(td *datadriven.TestData) ([]NodeID, error) {
	args := positional(td)
	if len(args) == 0 {
		return env.c.ids, nil
	}
	return env.parseNodes(args)
}

func (env *interactionEnv) parseNodes(args []string) ([]NodeID, error) {
	var ids []NodeID
	for _, a := range args {
		id, err := env.idArg(a)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// node returns the single node a verb acts on and its remaining positional
// arguments. Only restart and status act on a node that is down.
func (env *interactionEnv) node(td *datadriven.TestData) (*testNode, NodeID, []string, error) {
	args := positional(td)
	if len(args) == 0 {
		return nil, None, nil, fmt.Errorf("which node?")
	}
	id, err := env.idArg(args[0])
	if err != nil {
		return nil, None, nil, err
	}
	tn := env.c.nodes[id]
	if tn.down && td.Cmd != "restart" && td.Cmd != "status" {
		return nil, None, nil, fmt.Errorf("node %d is down", id)
	}
	return tn, id, args[1:], nil
}

func (env *interactionEnv) idArg(s string) (NodeID, error) {
	id, err := parseID(s)
	if err != nil {
		return None, err
	}
	return id, env.exists(id)
}

func (env *interactionEnv) exists(id NodeID) error {
	if env.c.nodes[id] == nil {
		return fmt.Errorf("no node %d", id)
	}
	return nil
}

// intArg reads key=value into dest if the key is present.
func intArg[T ~int | ~uint64](td *datadriven.TestData, key string, dest *T) error {
	arg, ok := td.Arg(key)
	if !ok {
		return nil
	}
	if len(arg.Vals) != 1 {
		return fmt.Errorf("%s wants one value", key)
	}
	v, err := strconv.ParseUint(arg.Vals[0], 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	*dest = T(v)
	return nil
}

func boolArg(td *datadriven.TestData, key string, dest *bool) error {
	arg, ok := td.Arg(key)
	if !ok {
		return nil
	}
	if len(arg.Vals) != 1 {
		return fmt.Errorf("%s wants one value", key)
	}
	v, err := strconv.ParseBool(arg.Vals[0])
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	*dest = v
	return nil
}

// msgFilter selects queued messages by from=, to= and type= (all optional).
type msgFilter struct {
	from, to NodeID
	typ      string
}

func parseFilter(td *datadriven.TestData) (msgFilter, error) {
	var f msgFilter
	if err := intArg(td, "from", &f.from); err != nil {
		return f, err
	}
	if err := intArg(td, "to", &f.to); err != nil {
		return f, err
	}
	if arg, ok := td.Arg("type"); ok && len(arg.Vals) == 1 {
		f.typ = arg.Vals[0]
	}
	return f, nil
}

func (f msgFilter) match(m Message) bool {
	return (f.from == None || m.From == f.from) && (f.to == None || m.To == f.to) &&
		(f.typ == "" || m.Type.String() == f.typ)
}

// takeQueued removes the messages f selects from the queue, in order.
func (env *interactionEnv) takeQueued(f msgFilter) []Message {
	var taken, kept []Message
	for _, m := range env.c.queue {
		if f.match(m) {
			taken = append(taken, m)
		} else {
			kept = append(kept, m)
		}
	}
	env.c.queue = kept
	return taken
}

// The text forms below are what transcripts compare. Positions in the log
// read index@tterm ("3@t2"); an entry adds its data after a colon.

func fmtPos(index, term uint64) string { return fmt.Sprintf("%d@t%d", index, term) }

func fmtEntry(e Entry) string {
	s := fmtPos(e.Index, e.Term)
	switch {
	case e.Type == EntryConfChange:
		if cc, _, err := DecodeConfChange(e.Data); err == nil {
			return fmt.Sprintf("%s:%s(%d)", s, cc.Type, cc.Node)
		}
		return s + ":conf?"
	case len(e.Data) > 0:
		return s + ":" + string(e.Data)
	}
	return s
}

func fmtEntries(es []Entry) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = fmtEntry(e)
	}
	return strings.Join(parts, " ")
}

func fmtIDs(ids []NodeID) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(uint64(id), 10)
	}
	return "(" + strings.Join(parts, " ") + ")"
}

func fmtSnap(s SnapshotMeta) string {
	out := fmtPos(s.Index, s.Term) + " voters=" + fmtIDs(s.Conf.Voters)
	if len(s.Conf.Learners) > 0 {
		out += " learners=" + fmtIDs(s.Conf.Learners)
	}
	return out
}

// fmtMsg shows the fields a message's type uses.
func fmtMsg(m Message) string {
	s := fmt.Sprintf("%d->%d %s term=%d", m.From, m.To, m.Type, m.Term)
	switch m.Type {
	case MsgApp:
		s += fmt.Sprintf(" prev=%s commit=%d", fmtPos(m.Index, m.LogTerm), m.Commit)
		if len(m.Entries) > 0 {
			s += " [" + fmtEntries(m.Entries) + "]"
		}
	case MsgAppResp:
		if m.Reject {
			s += fmt.Sprintf(" rejected index=%d hint=%s", m.Index, fmtPos(m.RejectHint, m.LogTerm))
		} else {
			s += fmt.Sprintf(" index=%d", m.Index)
		}
	case MsgHeartbeat:
		s += fmt.Sprintf(" commit=%d", m.Commit)
	case MsgVote, MsgPreVote:
		s += " last=" + fmtPos(m.Index, m.LogTerm)
	case MsgVoteResp, MsgPreVoteResp:
		if m.Reject {
			s += " rejected"
		} else {
			s += " granted"
		}
	case MsgSnap:
		s += " snapshot=" + fmtSnap(*m.Snapshot)
	case MsgReadIndexResp:
		s += fmt.Sprintf(" index=%d", m.Index)
	}
	switch {
	case (m.Type == MsgHeartbeat || m.Type == MsgHeartbeatResp) && len(m.Context) == 8:
		// The leader numbers its read rounds (raft.ackRead).
		s += fmt.Sprintf(" round=%d", binary.BigEndian.Uint64(m.Context))
	case len(m.Context) > 0:
		s += " ctx=" + string(m.Context)
	}
	return s
}

// printReady shows one Ready in the order the runtime handles it.
func (env *interactionEnv) printReady(id NodeID, rd Ready) {
	env.printf("%d ready:\n", id)
	if ss := rd.SoftState; ss != nil {
		env.printf("  role %s lead=%d\n", ss.Role, ss.Lead)
	}
	for _, m := range rd.Messages {
		env.printf("  send %s\n", fmtMsg(m))
	}
	if rd.Snapshot != nil {
		env.printf("  persist snapshot %s\n", fmtSnap(*rd.Snapshot))
	}
	if len(rd.Entries) > 0 {
		env.printf("  persist %s\n", fmtEntries(rd.Entries))
	}
	if hs := rd.HardState; !hs.IsEmpty() {
		env.printf("  persist term=%d vote=%d commit=%d\n", hs.Term, hs.Vote, hs.Commit)
	}
	for _, m := range rd.MessagesAfterPersist {
		env.printf("  send after persist %s\n", fmtMsg(m))
	}
	if rd.Snapshot != nil && rd.Snapshot.Index > 0 {
		env.printf("  restore state machine from snapshot %s\n", fmtPos(rd.Snapshot.Index, rd.Snapshot.Term))
	}
	if len(rd.CommittedEntries) > 0 {
		env.printf("  apply %s\n", fmtEntries(rd.CommittedEntries))
	}
	for _, rs := range rd.ReadStates {
		env.printf("  read ctx=%s index=%d\n", rs.Context, rs.Index)
	}
}

// printState shows one node's role, term, vote and log positions.
func (env *interactionEnv) printState(id NodeID) {
	tn := env.c.nodes[id]
	if tn.down {
		hs := tn.store.hs
		env.printf("%d: down (durable term=%d vote=%d commit=%d)\n", id, hs.Term, hs.Vote, hs.Commit)
		return
	}
	s := tn.node.Status()
	env.printf("%d: %s term=%d vote=%d lead=%d commit=%d applied=%d last=%d\n", id, s.Role,
		s.HardState.Term, s.HardState.Vote, s.Lead, s.HardState.Commit, s.Applied, s.LastIndex)
}
