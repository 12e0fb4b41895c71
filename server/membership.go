package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
	"github.com/therealutkarshpriyadarshi/keyval/replica"
)

// addressBook is every member's peer address as this node knows it: the
// initial cluster, the peers a joining node was told of, and the records
// that configuration changes leave in the state machine (which also mark
// removed ids, never to be used again).
type addressBook struct {
	mu      sync.Mutex
	addrs   map[core.NodeID]string
	removed map[core.NodeID]string // id → its last address ("" if unknown)
}

func (b *addressBook) address(id core.NodeID) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a, ok := b.addrs[id]
	return a, ok
}

func (b *addressBook) set(id core.NodeID, addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addrs[id] = addr
	delete(b.removed, id)
}

// remove records that id was removed; addr is its last address, kept to
// tell it so if it is still around (informRemoved).
func (b *addressBook) remove(id core.NodeID, addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if addr == "" {
		addr = b.addrs[id]
	}
	delete(b.addrs, id)
	b.removed[id] = addr
}

func (b *addressBook) isRemoved(id core.NodeID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.removed[id]
	return ok
}

// removedAddress is the last known address of removed node id.
func (b *addressBook) removedAddress(id core.NodeID) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a, ok := b.removed[id]
	return a, ok && a != ""
}

// snapshot returns a copy of the known addresses.
func (b *addressBook) snapshot() map[core.NodeID]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.addrs)
}

// loadAddressBook fills the book at start: configured addresses first, the
// state machine's records over them.
func (s *Server) loadAddressBook(known map[core.NodeID]string) error {
	s.book = addressBook{addrs: maps.Clone(known), removed: map[core.NodeID]string{}}
	if s.book.addrs == nil {
		s.book.addrs = map[core.NodeID]string{}
	}
	addrs, removed, err := replica.Addresses(s.store)
	if err != nil {
		return err
	}
	for id, a := range addrs {
		s.book.addrs[id] = a
	}
	for id, a := range removed {
		delete(s.book.addrs, id)
		s.book.removed[id] = a
	}
	if _, out := removed[s.cfg.ID]; out {
		s.markRemoved("")
		return fmt.Errorf("node %d was removed from the cluster: it cannot serve again; to add this machine back, start a node with a new --id and an empty --data-dir, after kvctl member add-learner", s.cfg.ID)
	}
	return nil
}

// RemovedMarker is the file a node writes into its data directory once it
// knows it was removed from the cluster. The state database is the record;
// the marker is for tools that cannot read it (make cluster-start skips
// such directories).
const RemovedMarker = "removed"

// markRemoved writes RemovedMarker, saying where the removal happened if
// known (at says "at log index N"). Only a hint for tools: a failure is
// logged, not fatal.
func (s *Server) markRemoved(at string) {
	text := fmt.Sprintf("node %d was removed from the cluster%s; this data directory cannot serve again\n", s.cfg.ID, at)
	if err := os.WriteFile(filepath.Join(s.cfg.DataDir, RemovedMarker), []byte(text), 0o644); err != nil {
		s.log.Warn("could not mark the data directory as removed", "file", RemovedMarker, "err", err)
	}
}

// ErrRemoved is why a node stops after a configuration change removed it.
var ErrRemoved = errors.New("this node was removed from the cluster")

// removedStatus answers requests at a node that was removed.
var removedStatus = status.Error(codes.Unavailable,
	"this node was removed from the cluster: use another member (a write sent here may or may not have been applied; retrying it with the same session and seq is safe)")

// confChanged follows a committed membership change (event loop): new
// members become reachable, removed ones are dropped after a grace period
// in which the leader tells them, and a node that was itself removed stops.
func (s *Server) confChanged(index uint64, cc core.ConfChange, conf core.ConfState) {
	s.log.Info("membership changed", "change", cc.Type.String(), "member", uint64(cc.Node),
		"index", index, "voters", conf.Voters, "learners", conf.Learners)
	grace := 4 * s.cfg.ElectionTimeout
	switch cc.Type {
	case core.ConfAddLearner:
		addr := string(cc.Context)
		s.book.set(cc.Node, addr)
		if cc.Node != s.cfg.ID {
			if err := s.tr.AddPeer(cc.Node, addr); err != nil {
				_ = s.tr.UpdatePeer(cc.Node, addr)
			}
		}
	case core.ConfRemove:
		s.book.remove(cc.Node, string(cc.Context))
		if cc.Node == s.cfg.ID {
			s.stopRemoved(fmt.Sprintf("configuration change at log index %d", index))
			return
		}
		id := cc.Node
		time.AfterFunc(grace, func() { _ = s.tr.RemovePeer(id) })
	}
}

// stopRemoved follows this node's own removal (where says where it was
// learnt): it takes no new requests, stays up a little — as leader, to hand
// over; as follower, to acknowledge — then answers whatever still waits and
// stops for good.
func (s *Server) stopRemoved(where string) {
	grace := 4 * s.cfg.ElectionTimeout
	s.removed.Store(true)
	s.log.Warn("this node was removed from the cluster; it stops serving", "where", where, "after", grace)
	s.markRemoved(" (" + where + ")")
	time.AfterFunc(grace, func() {
		(*peerHandler)(s).post(func() {
			for id, ch := range s.waiters {
				ch <- replica.Outcome{Err: removedStatus}
				delete(s.waiters, id)
			}
		})
		s.fatalOnce.Do(func() {
			s.fatalErr = fmt.Errorf("%w (%s); its data directory cannot be used to rejoin", ErrRemoved, where)
			go s.Stop(context.Background())
		})
	})
}

// snapshotApplied follows a snapshot from the leader (event loop): the
// member records it brought may differ from what this node knew, and no
// configuration change entry tells of the difference (the node was behind,
// or rebuilt its state from an older snapshot, and the entries were
// compacted away). Without this a node would not send to a member added
// meanwhile — and once leader, it could never bring that member up to date.
//
// It also hands back the memory the restore took (handBackMemory), on a
// goroutine of its own: each collection blocks its caller until a cycle
// over the whole heap is done, and the loop must go on answering
// heartbeats meanwhile.
func (s *Server) snapshotApplied(index uint64) {
	go handBackMemory()
	addrs, removed, err := replica.Addresses(s.store)
	if err != nil {
		s.log.Error("could not read the members recorded in the snapshot; peers added or moved meanwhile stay unknown until their next change",
			"index", index, "err", err)
		return
	}
	s.followMembers(addrs, removed, fmt.Sprintf("snapshot at log index %d", index))
}

// followMembers brings the address book and the peer transport in line with
// member records read from the state machine (where says whence, for the
// log). Loop side.
func (s *Server) followMembers(addrs, removed map[core.NodeID]string, where string) {
	for _, id := range slices.Sorted(maps.Keys(addrs)) {
		addr := addrs[id]
		if old, known := s.book.address(id); known && old == addr {
			continue
		}
		s.book.set(id, addr)
		if id == s.cfg.ID {
			continue
		}
		s.log.Info("learnt a member's peer address", "member", uint64(id), "addr", addr, "from", where)
		if err := s.tr.AddPeer(id, addr); err != nil {
			_ = s.tr.UpdatePeer(id, addr)
		}
	}
	grace := 4 * s.cfg.ElectionTimeout
	for _, id := range slices.Sorted(maps.Keys(removed)) {
		if s.book.isRemoved(id) {
			continue
		}
		s.book.remove(id, removed[id])
		if id == s.cfg.ID {
			s.stopRemoved(where)
			continue
		}
		time.AfterFunc(grace, func() { _ = s.tr.RemovePeer(id) })
	}
}

// Reasons admit refuses a peer message for (keyval_peer_refused_total).
const (
	refusedNotMember = "not_member"
	refusedRemoved   = "removed"
)

// admit decides, before the core sees it, whether m comes from a node that
// may speak to this one: a member of the configuration this node uses (the
// latest in its log, so a learner the leader just added is one). Outside
// it, only two kinds of message get through: a node still joining (no
// configuration yet) takes a leader's messages from the members it was told
// of when it joined, and a leader takes the acknowledgements of a removed
// node it is bringing up to its own removal (informRemoved), at no higher
// term than its own. A sender that was never removed may be a member added
// while this node was behind: its members are asked (vouch.go) — by a node
// with no configuration (still joining, or started over from its bootstrap
// state after damage), only for a leader's messages. Anything
// else is counted and dropped, and a removed sender is told of its
// removal. Loop side.
func (s *Server) admit(m core.Message) bool {
	n := s.rep.Node()
	conf := n.Conf()
	if slices.Contains(conf.Voters, m.From) || slices.Contains(conf.Learners, m.From) {
		return true
	}
	// A member the latest configuration in the log leaves out is still one
	// until that change commits (a leader removing itself leads until
	// then): the address book, kept from applied changes, still has it.
	if _, known := s.book.address(m.From); known && !s.book.isRemoved(m.From) && len(conf.Voters) > 0 {
		return true
	}
	joining := len(conf.Voters)+len(conf.Learners) == 0
	if joining {
		if _, told := s.book.address(m.From); told && leaderMessage(m.Type) {
			return true
		}
	} else if s.informing(m) {
		return true
	}
	reason := refusedNotMember
	if s.book.isRemoved(m.From) {
		reason = refusedRemoved
		s.informRemoved(m.From)
	} else if (!joining || leaderMessage(m.Type)) && s.vouched(m, conf) {
		return true // a member added while this node was behind (vouch.go)
	}
	s.obs.peerRefused(reason, m.From)
	s.obs.peerMessageRefused(m, fmt.Errorf("node %d is not in this node's configuration (voters %v, learners %v): %s",
		m.From, conf.Voters, conf.Learners, reason))
	return false
}

// leaderMessage reports whether t is what a leader sends a follower.
func leaderMessage(t core.MessageType) bool {
	return t == core.MsgApp || t == core.MsgHeartbeat || t == core.MsgSnap
}

// informing reports whether m acknowledges the replication by which this
// leader tells a removed node of its removal: without those answers the
// leader cannot find where the node's log ends.
func (s *Server) informing(m core.Message) bool {
	n := s.rep.Node()
	if (m.Type != core.MsgAppResp && m.Type != core.MsgHeartbeatResp) || m.Term > n.HardState().Term {
		return false
	}
	st := n.Status() // Progress only on a leader; it lists removed nodes being informed
	return slices.ContainsFunc(st.Progress, func(p core.PeerProgress) bool { return p.ID == m.From })
}

// informRemoved reacts to a message from a node that was removed: it has
// not heard (it was cut off, or its leader lost office before telling it),
// so the leader replicates to it until it applies its own removal and stops.
// Loop side.
func (s *Server) informRemoved(id core.NodeID) {
	if s.rep.Node().SoftState().Role != core.Leader {
		return
	}
	if addr, ok := s.book.removedAddress(id); ok {
		_ = s.tr.AddPeer(id, addr) // fails harmlessly if it is still known
	}
	s.rep.Node().InformRemoved(id)
}

// members describes the committed membership in st with addresses and,
// on the leader, replication progress. A change still pending is left out,
// as etcd lists only applied members: a leader change may undo it.
func (s *Server) members(st core.Status) []*apipb.Member {
	progress := map[core.NodeID]core.PeerProgress{}
	for _, p := range st.Progress {
		progress[p.ID] = p
	}
	var out []*apipb.Member
	add := func(id core.NodeID, learner bool) {
		addr, _ := s.book.address(id)
		m := &apipb.Member{Id: uint64(id), PeerAddress: addr, Learner: learner}
		if id == s.cfg.ID {
			m.ClientAddress = s.ClientAddr()
		}
		if p, ok := progress[id]; ok {
			m.Match, m.State = p.Match, p.State.String()
		}
		out = append(out, m)
	}
	for _, id := range st.CommittedConf.Voters {
		add(id, false)
	}
	for _, id := range st.CommittedConf.Learners {
		add(id, true)
	}
	return out
}

// clusterService is the membership API (api/apipb/cluster.proto).
type clusterService struct {
	apipb.UnimplementedClusterServer
	s *Server
}

func (c *clusterService) MemberList(ctx context.Context, req *apipb.MemberListRequest) (*apipb.MemberListResponse, error) {
	var st core.Status
	if err := c.s.do(ctx, func() { st = c.s.rep.Node().Status() }); err != nil {
		return nil, toStatus(err)
	}
	if st.Role != core.Leader && st.Lead != core.None && !forwarded(ctx) {
		// Only the leader knows how far each member has got; ask it, and
		// answer from here if it cannot be reached.
		if conn, err := c.s.peerConn(st.Lead); err == nil {
			if resp, err := apipb.NewClusterClient(conn).MemberList(ctx, req); err == nil {
				return resp, nil
			}
		}
	}
	resp := &apipb.MemberListResponse{ClusterId: fmt.Sprintf("%016x", c.s.clusterID), Members: c.s.members(st), LeaderId: uint64(st.Lead)}
	if st.Role == core.Leader {
		resp.LastIndex = st.LastIndex
	}
	return resp, nil
}

func (c *clusterService) MemberAddLearner(ctx context.Context, req *apipb.MemberAddLearnerRequest) (*apipb.MemberChangeResponse, error) {
	if req.Id == 0 {
		return nil, status.Error(codes.InvalidArgument, "the member id must be a positive integer")
	}
	if _, _, err := net.SplitHostPort(req.PeerAddr); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "peer address %q: %v (want host:port)", req.PeerAddr, err)
	}
	if c.s.book.isRemoved(core.NodeID(req.Id)) {
		return nil, status.Errorf(codes.FailedPrecondition, "id %d belonged to a member that was removed; ids are never reused: pick a new one", req.Id)
	}
	return c.change(ctx, core.ConfChange{Type: core.ConfAddLearner, Node: core.NodeID(req.Id), Context: []byte(req.PeerAddr)},
		func(cl apipb.ClusterClient) (*apipb.MemberChangeResponse, error) {
			return cl.MemberAddLearner(ctx, req)
		})
}

func (c *clusterService) MemberPromote(ctx context.Context, req *apipb.MemberPromoteRequest) (*apipb.MemberChangeResponse, error) {
	return c.change(ctx, core.ConfChange{Type: core.ConfPromote, Node: core.NodeID(req.Id)},
		func(cl apipb.ClusterClient) (*apipb.MemberChangeResponse, error) { return cl.MemberPromote(ctx, req) })
}

func (c *clusterService) MemberRemove(ctx context.Context, req *apipb.MemberRemoveRequest) (*apipb.MemberChangeResponse, error) {
	// The address goes into the tombstone: whoever leads later can still
	// reach the node to tell it, should it not have heard.
	addr, _ := c.s.book.address(core.NodeID(req.Id))
	return c.change(ctx, core.ConfChange{Type: core.ConfRemove, Node: core.NodeID(req.Id), Context: []byte(addr)},
		func(cl apipb.ClusterClient) (*apipb.MemberChangeResponse, error) { return cl.MemberRemove(ctx, req) })
}

// change proposes cc on the leader and waits until it is applied here. A
// follower forwards the call (once) to the leader.
func (c *clusterService) change(ctx context.Context, cc core.ConfChange, forward func(apipb.ClusterClient) (*apipb.MemberChangeResponse, error)) (*apipb.MemberChangeResponse, error) {
	s := c.s
	if s.removed.Load() {
		return nil, removedStatus
	}
	if err := s.requireFresh(ctx, needRoot); err != nil {
		return nil, err
	}
	if cc.Node == core.None {
		return nil, status.Error(codes.InvalidArgument, "the member id must be a positive integer")
	}
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	ch := make(chan replica.Outcome, 1)
	id := s.nextID.Add(1)
	var perr error
	var index uint64
	if err := s.do(ctx, func() {
		if perr = s.rep.ProposeConfChange(id, cc); perr == nil {
			index = s.rep.Node().LastIndex()
			s.waiters[id] = ch
		}
	}); err != nil {
		return nil, toStatus(err)
	}
	if perr != nil {
		var nl *core.ErrNotLeader
		if errors.As(perr, &nl) && nl.Leader != core.None && !forwarded(ctx) {
			conn, err := s.peerConn(nl.Leader)
			if err != nil {
				return nil, status.Errorf(codes.Unavailable, "forward to leader %d: %v", nl.Leader, err)
			}
			return forward(apipb.NewClusterClient(conn))
		}
		return nil, confChangeStatus(perr)
	}
	select {
	case out := <-ch:
		if out.Err != nil {
			return nil, toStatus(out.Err)
		}
	case <-s.loopDone:
		return nil, toStatus(errStopping)
	case <-ctx.Done():
		s.forget(id)
		return nil, status.Errorf(codes.DeadlineExceeded, "the change at log index %d was not applied before the deadline; check kvctl member list", index)
	}
	var st core.Status
	if err := s.do(ctx, func() { st = s.rep.Node().Status() }); err != nil {
		return nil, toStatus(err)
	}
	return &apipb.MemberChangeResponse{Index: index, Members: s.members(st)}, nil
}

// confChangeStatus explains a refused membership change.
func confChangeStatus(err error) error {
	switch {
	case errors.Is(err, core.ErrLearnerBehind), errors.Is(err, core.ErrInvalidConfChange):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, core.ErrConfChangePending), errors.Is(err, core.ErrNoTermCommit), errors.Is(err, core.ErrTransferring):
		return status.Errorf(codes.Unavailable, "%v; retry shortly", err)
	}
	return toStatus(err)
}

// joinInfo is what a new node learns from the cluster it joins.
type joinInfo struct {
	clusterID uint64
	peers     map[core.NodeID]string
}

// askToJoin asks the members at endpoints (client addresses) for the
// cluster id and the members' peer addresses, and checks that this node
// was added (as a learner) first.
func (s *Server) askToJoin(ctx context.Context) (joinInfo, error) {
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	if s.cfg.JoinTLS != nil {
		creds = grpc.WithTransportCredentials(credentials.NewTLS(s.cfg.JoinTLS))
	}
	var errs []error
	for _, ep := range s.cfg.Join {
		info, err := func() (joinInfo, error) {
			conn, err := grpc.NewClient(ep, creds)
			if err != nil {
				return joinInfo{}, err
			}
			defer conn.Close()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			resp, err := apipb.NewClusterClient(conn).MemberList(cctx, &apipb.MemberListRequest{})
			if err != nil {
				return joinInfo{}, err
			}
			cid, err := strconv.ParseUint(resp.ClusterId, 16, 64)
			if err != nil {
				return joinInfo{}, fmt.Errorf("bad cluster id %q", resp.ClusterId)
			}
			info := joinInfo{clusterID: cid, peers: map[core.NodeID]string{}}
			added := false
			for _, m := range resp.Members {
				if core.NodeID(m.Id) == s.cfg.ID {
					added = true
					continue
				}
				if m.PeerAddress != "" {
					info.peers[core.NodeID(m.Id)] = m.PeerAddress
				}
			}
			if !added {
				return joinInfo{}, fmt.Errorf("node %d is not a member of that cluster: add it first with kvctl member add-learner --id %d --peer-addr %s",
					s.cfg.ID, s.cfg.ID, s.cfg.PeerAddr)
			}
			return info, nil
		}()
		if err == nil {
			return info, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	return joinInfo{}, fmt.Errorf("join: no member answered: %w", errors.Join(errs...))
}

// sortedPeerIDs lists the ids of a peer map in order.
func sortedPeerIDs(m map[core.NodeID]string) []core.NodeID {
	return slices.Sorted(maps.Keys(m))
}
