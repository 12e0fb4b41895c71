// Package fakekv is an in-process fake of KeyVal's client API for tests of
// the client and of tools built on it. It serves apipb.KV over real gRPC on
// 127.0.0.1, keeps keys in memory, implements exactly-once sessions strictly
// (and records any client that breaks their rules), and can be told to
// misbehave: fail calls with a status, apply a write and then lose the
// reply, forget sessions, hang until released, or go down and come back.
//
// Several Nodes can share one Store, standing in for the members of one
// cluster: a write applied through one node is seen, and deduplicated,
// through every other.
package fakekv

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/server"
)

// Limits the fake enforces, like the real server's defaults in spirit.
const (
	MaxKeySize        = 1536
	MaxValueSize      = 1536 * 1024
	DefaultRangeLimit = 100
)

type entry struct {
	value   []byte
	version uint64
}

type sessionRecord struct {
	lastSeq    uint64
	lastResult proto.Message
}

// Store is the state a fake cluster shares.
type Store struct {
	mu         sync.Mutex
	data       map[string]entry
	rev        uint64
	term       uint64
	leader     uint64
	nextClient uint64
	sessions   map[uint64]*sessionRecord
	nodes      []*Node
	applied    int
	duplicates int
	skipped    int
	lost       int
	violations []string
}

// NewStore returns an empty store whose term is 1 and whose leader is the
// first node started.
func NewStore() *Store {
	return &Store{data: map[string]entry{}, sessions: map[uint64]*sessionRecord{}, term: 1}
}

// SetLeader sets the leader id every node reports (0: no leader).
func (s *Store) SetLeader(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leader = id
}

// ExpireSessions forgets every session, as a server does when it expires
// them; later writes on them are refused with "session expired".
func (s *Store) ExpireSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.sessions)
}

// Applied counts the writes applied (duplicates answered from a session's
// memory are not counted).
func (s *Store) Applied() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

// Duplicates counts writes answered from a session's memory: retries of a
// write already applied.
func (s *Store) Duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.duplicates
}

// Skipped counts the writes applied with a seq more than one past their
// session's last: the client had given up on the seqs between.
func (s *Store) Skipped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skipped
}

// Lost counts the replies lost on purpose (see Node.LoseReplies).
func (s *Store) Lost() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// Registered counts the sessions ever opened.
func (s *Store) Registered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.nextClient)
}

// Violations lists every way a client broke the session rules (a write
// without a session, a seq that skipped or went back).
func (s *Store) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Value returns a key's value and version (0 if absent).
func (s *Store) Value(key string) ([]byte, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.data[key]
	return e.value, e.version
}

// Close stops every node for good, releasing their ports.
func (s *Store) Close() {
	s.mu.Lock()
	nodes := append([]*Node(nil), s.nodes...)
	s.mu.Unlock()
	for _, n := range nodes {
		n.Stop()
		n.mu.Lock()
		if n.reserved != nil {
			_ = n.reserved.Close()
			n.reserved = nil
		}
		n.mu.Unlock()
	}
}

func (s *Store) headerLocked(n *Node) *apipb.Header {
	return &apipb.Header{Revision: s.rev, NodeId: n.id, LeaderId: s.leader}
}

// write applies one write under its session's rules, the server's: an
// unknown session is refused before applying; the last seq is answered
// from memory; a higher seq is applied (a client skips the seq of a write
// that failed); an older one is a client bug, recorded and refused.
func (s *Store) write(n *Node, sess *apipb.Session, apply func() proto.Message) (proto.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess.GetClientId() == 0 {
		s.violations = append(s.violations, "write without a session")
		s.applied++
		return apply(), nil
	}
	rec, ok := s.sessions[sess.ClientId]
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition,
			"session expired: client id %d is unknown to the store; register a new session", sess.ClientId)
	}
	switch {
	case sess.Seq == rec.lastSeq && rec.lastResult != nil:
		s.duplicates++
		return rec.lastResult, nil
	case sess.Seq > rec.lastSeq:
		if sess.Seq > rec.lastSeq+1 {
			s.skipped++
		}
		res := apply()
		s.applied++
		rec.lastSeq, rec.lastResult = sess.Seq, res
		return res, nil
	default:
		v := fmt.Sprintf("client %d sent seq %d after seq %d", sess.ClientId, sess.Seq, rec.lastSeq)
		s.violations = append(s.violations, v)
		return nil, status.Error(codes.FailedPrecondition, "stale duplicate: "+v)
	}
}

// Node is one fake member serving gRPC on 127.0.0.1.
type Node struct {
	apipb.UnimplementedKVServer
	id    uint64
	store *Store

	mu       sync.Mutex
	addr     string
	srv      *grpc.Server
	served   chan struct{} // closed when srv.Serve returns
	reserved io.Closer     // holds the port while stopped (see reservePort)
	faults   []fault
	lose     map[string]int
	hold     *Hold
	calls    map[string]int
	// unaryOnly makes Pipeline unimplemented, as on an older server.
	unaryOnly bool
	streams   int // Pipeline streams served
}

type fault struct {
	method string // "" matches every method
	code   codes.Code
	msg    string
	times  int
}

// StartNode starts a node with the given id on a free loopback port. The
// first node started becomes the leader.
func (s *Store) StartNode(id uint64) (*Node, error) {
	n := &Node{id: id, store: s, lose: map[string]int{}, calls: map[string]int{}}
	if err := n.listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.nodes = append(s.nodes, n)
	if s.leader == 0 {
		s.leader = id
	}
	s.mu.Unlock()
	return n, nil
}

func (n *Node) listen(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("fakekv: listen %s: %w", addr, err)
	}
	srv := grpc.NewServer()
	apipb.RegisterKVServer(srv, n)
	served := make(chan struct{})
	n.mu.Lock()
	n.addr, n.srv, n.served = lis.Addr().String(), srv, served
	n.mu.Unlock()
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	return nil
}

// ID returns the node's id.
func (n *Node) ID() uint64 { return n.id }

// Addr returns the node's client address.
func (n *Node) Addr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addr
}

// Stop takes the node down: its listener closes (connections are refused)
// and calls in flight fail. Stopping a stopped node does nothing.
func (n *Node) Stop() {
	n.mu.Lock()
	srv, served := n.srv, n.served
	n.srv = nil
	n.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Stop()
	// The listening socket is closed for good only once Serve has
	// returned (its pending Accept holds the socket open until then).
	<-served
	// Best effort: if the port cannot be held, Restart may find it taken.
	reserved, _ := reservePort(n.Addr())
	n.mu.Lock()
	n.reserved = reserved
	n.mu.Unlock()
}

// Restart brings a stopped node back on the same address.
func (n *Node) Restart() error {
	n.mu.Lock()
	running, reserved := n.srv != nil, n.reserved
	n.reserved = nil
	n.mu.Unlock()
	if running {
		return nil
	}
	err := n.listen(n.Addr())
	if reserved != nil {
		_ = reserved.Close()
	}
	return err
}

// Fail makes the next `times` calls of method ("Put", "Get", ...; "" for
// any) fail with code and msg before doing anything.
func (n *Node) Fail(method string, code codes.Code, msg string, times int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults = append(n.faults, fault{method: method, code: code, msg: msg, times: times})
}

// LoseReplies makes the next `times` writes of method ("" for any write)
// apply and then answer Unavailable, as when a leader applies a write and
// dies before replying.
func (n *Node) LoseReplies(method string, times int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lose[method] += times
}

// Calls counts the calls of method ("" for all) the node received.
func (n *Node) Calls(method string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if method == "" {
		total := 0
		for _, c := range n.calls {
			total += c
		}
		return total
	}
	return n.calls[method]
}

// Hold makes every call to the node block, after announcing itself on
// Arrived, until Release or until the caller's deadline.
type Hold struct {
	arrived chan string
	release chan struct{}
	once    sync.Once
	node    *Node
}

// Hold starts holding calls.
func (n *Node) Hold() *Hold {
	h := &Hold{arrived: make(chan string, 1024), release: make(chan struct{}), node: n}
	n.mu.Lock()
	n.hold = h
	n.mu.Unlock()
	return h
}

// Arrived receives the method name of each call as it starts waiting.
func (h *Hold) Arrived() <-chan string { return h.arrived }

// Release lets held calls continue and stops holding new ones.
func (h *Hold) Release() {
	h.once.Do(func() {
		h.node.mu.Lock()
		if h.node.hold == h {
			h.node.hold = nil
		}
		h.node.mu.Unlock()
		close(h.release)
	})
}

// Pipeline serves calls over one stream, each through its unary method, so
// faults injected for a method apply to its pipelined calls too.
func (n *Node) Pipeline(stream apipb.KV_PipelineServer) error {
	n.mu.Lock()
	unaryOnly := n.unaryOnly
	if !unaryOnly {
		n.streams++
	}
	n.mu.Unlock()
	if unaryOnly {
		return status.Error(codes.Unimplemented, "fakekv: this node serves unary calls only")
	}
	return server.ServePipeline(stream, n, server.PipelineOptions{})
}

// Streams counts the Pipeline streams the node has served.
func (n *Node) Streams() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.streams
}

// UnaryOnly makes the node refuse Pipeline streams as unimplemented, as a
// server from before pipelines would.
func (n *Node) UnaryOnly() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unaryOnly = true
}

// enter runs a call's injected behaviour: counting, holding, failing.
func (n *Node) enter(ctx context.Context, method string) error {
	n.mu.Lock()
	n.calls[method]++
	h := n.hold
	var injected error
	for i := range n.faults {
		f := &n.faults[i]
		if f.times > 0 && (f.method == "" || f.method == method) {
			f.times--
			injected = status.Error(f.code, f.msg)
			break
		}
	}
	n.mu.Unlock()
	if h != nil {
		select {
		case h.arrived <- method:
		default:
		}
		select {
		case <-h.release:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return injected
}

// loseReply says whether this write's reply is to be lost.
func (n *Node) loseReply(method string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range []string{method, ""} {
		if n.lose[m] > 0 {
			n.lose[m]--
			n.store.mu.Lock()
			n.store.lost++
			n.store.mu.Unlock()
			return true
		}
	}
	return false
}

var errLost = status.Error(codes.Unavailable, "fakekv: leader changed before answering; the write may have been applied")

func checkKey(key []byte) error {
	switch {
	case len(key) == 0:
		return status.Error(codes.InvalidArgument, "key is empty")
	case len(key) > MaxKeySize:
		return status.Errorf(codes.InvalidArgument, "key is %d bytes, over the limit of %d", len(key), MaxKeySize)
	}
	return nil
}

func checkValue(v []byte) error {
	if len(v) > MaxValueSize {
		return status.Errorf(codes.InvalidArgument, "value is %d bytes, over the limit of %d", len(v), MaxValueSize)
	}
	return nil
}

// Register opens a session.
func (n *Node) Register(ctx context.Context, _ *apipb.RegisterRequest) (*apipb.RegisterResponse, error) {
	if err := n.enter(ctx, "Register"); err != nil {
		return nil, err
	}
	s := n.store
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextClient++
	s.sessions[s.nextClient] = &sessionRecord{}
	return &apipb.RegisterResponse{Header: s.headerLocked(n), ClientId: s.nextClient}, nil
}

// Put sets a key.
func (n *Node) Put(ctx context.Context, req *apipb.PutRequest) (*apipb.PutResponse, error) {
	if err := n.enter(ctx, "Put"); err != nil {
		return nil, err
	}
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	if err := checkValue(req.Value); err != nil {
		return nil, err
	}
	s := n.store
	res, err := s.write(n, req.Session, func() proto.Message {
		_, existed := s.data[string(req.Key)]
		s.rev++
		s.data[string(req.Key)] = entry{value: append([]byte(nil), req.Value...), version: s.rev}
		return &apipb.PutResponse{Header: s.headerLocked(n), Version: s.rev, Existed: existed}
	})
	if err != nil {
		return nil, err
	}
	if n.loseReply("Put") {
		return nil, errLost
	}
	return res.(*apipb.PutResponse), nil
}

// Get reads a key.
func (n *Node) Get(ctx context.Context, req *apipb.GetRequest) (*apipb.GetResponse, error) {
	if err := n.enter(ctx, "Get"); err != nil {
		return nil, err
	}
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	s := n.store
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[string(req.Key)]
	return &apipb.GetResponse{Header: s.headerLocked(n), Found: ok, Value: e.value, Version: e.version}, nil
}

// Delete removes a key.
func (n *Node) Delete(ctx context.Context, req *apipb.DeleteRequest) (*apipb.DeleteResponse, error) {
	if err := n.enter(ctx, "Delete"); err != nil {
		return nil, err
	}
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	s := n.store
	res, err := s.write(n, req.Session, func() proto.Message {
		_, existed := s.data[string(req.Key)]
		s.rev++
		delete(s.data, string(req.Key))
		return &apipb.DeleteResponse{Header: s.headerLocked(n), Existed: existed}
	})
	if err != nil {
		return nil, err
	}
	if n.loseReply("Delete") {
		return nil, errLost
	}
	return res.(*apipb.DeleteResponse), nil
}

// CompareAndSwap writes if the key's version matches.
func (n *Node) CompareAndSwap(ctx context.Context, req *apipb.CompareAndSwapRequest) (*apipb.CompareAndSwapResponse, error) {
	if err := n.enter(ctx, "CompareAndSwap"); err != nil {
		return nil, err
	}
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	if err := checkValue(req.Value); err != nil {
		return nil, err
	}
	s := n.store
	res, err := s.write(n, req.Session, func() proto.Message {
		e, ok := s.data[string(req.Key)]
		if e.version != req.ExpectedVersion {
			return &apipb.CompareAndSwapResponse{Header: s.headerLocked(n), Version: e.version, Exists: ok, CurrentValue: e.value}
		}
		s.rev++
		s.data[string(req.Key)] = entry{value: append([]byte(nil), req.Value...), version: s.rev}
		return &apipb.CompareAndSwapResponse{Header: s.headerLocked(n), Succeeded: true, Version: s.rev}
	})
	if err != nil {
		return nil, err
	}
	if n.loseReply("CompareAndSwap") {
		return nil, errLost
	}
	return res.(*apipb.CompareAndSwapResponse), nil
}

// Range lists keys by prefix.
func (n *Node) Range(ctx context.Context, req *apipb.RangeRequest) (*apipb.RangeResponse, error) {
	if err := n.enter(ctx, "Range"); err != nil {
		return nil, err
	}
	limit := int(req.Limit)
	if limit == 0 {
		limit = DefaultRangeLimit
	}
	s := n.store
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.data {
		if strings.HasPrefix(k, string(req.Prefix)) && k > string(req.StartAfter) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	resp := &apipb.RangeResponse{Header: s.headerLocked(n)}
	if len(keys) > limit {
		keys, resp.More = keys[:limit], true
	}
	for _, k := range keys {
		e := s.data[k]
		resp.Kvs = append(resp.Kvs, &apipb.KeyValue{Key: []byte(k), Value: e.value, Version: e.version})
	}
	return resp, nil
}

// Status describes the node and the fake cluster.
func (n *Node) Status(ctx context.Context, _ *apipb.StatusRequest) (*apipb.StatusResponse, error) {
	if err := n.enter(ctx, "Status"); err != nil {
		return nil, err
	}
	s := n.store
	s.mu.Lock()
	nodes := append([]*Node(nil), s.nodes...)
	resp := &apipb.StatusResponse{
		Header: s.headerLocked(n), Id: n.id, Role: "follower", Term: s.term,
		Commit: s.rev, Applied: s.rev, LeaderId: s.leader, FirstIndex: 1, LastIndex: s.rev,
		ClusterId: "fake",
	}
	if s.leader == n.id {
		resp.Role = "leader"
	}
	s.mu.Unlock()
	for _, m := range nodes {
		resp.Members = append(resp.Members, &apipb.Member{Id: m.id, ClientAddress: m.Addr(), State: "replicate"})
	}
	return resp, nil
}
