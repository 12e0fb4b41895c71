package server

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
	"github.com/therealutkarshpriyadarshi/keyval/core"
)

// A node that was down while the membership changed does not know the
// members added meanwhile: the configuration in its log is older than its
// cluster's. Dropping their messages (a new leader's appends, its vote
// requests) would keep it from ever catching up — or keep a cluster that
// needs its vote from electing anyone. So a message from an id outside the
// node's configuration that was never removed is not simply dropped: the
// node asks the members it knows whether that id is a member now, and
// admits it if one says so. If none of them can be reached, it cannot tell
// and admits it too (the peer transport has already checked the sender's
// certificate, when peer TLS is on); if they answer and none lists it, it
// stays out. A node with no configuration of its own (joining, or started
// over from its bootstrap state) asks the members it was told of when it
// joined, and only about a leader's messages. Answers are kept for vouchFor.

// vouchFor is how long the answer about an id is kept before asking again.
const vouchFor = 5 * time.Second

// maxAsking bounds the questions in flight, so a flood of unknown ids
// cannot start unbounded work.
const maxAsking = 4

type vouchState uint8

const (
	vouchAsking vouchState = iota + 1
	vouchMember
	vouchUnreachable // no member could be asked
	vouchNotMember
)

// vouched says whether m's sender, outside this node's configuration, may
// be admitted: yes when its members said it is one of theirs (or none could
// be asked); otherwise it asks them, and m is dropped meanwhile. Loop side.
func (s *Server) vouched(m core.Message, conf core.ConfState) bool {
	switch s.vouches[m.From] {
	case vouchMember, vouchUnreachable:
		return true
	case vouchAsking, vouchNotMember:
		return false
	}
	if s.asking >= maxAsking {
		return false
	}
	members := append(slices.Clone(conf.Voters), conf.Learners...)
	if len(members) == 0 {
		// No configuration yet (joining, or started over from the bootstrap
		// state of a joined node): the members it was told of when it joined.
		members = slices.Sorted(maps.Keys(s.book.snapshot()))
	}
	var ask []core.NodeID
	for _, id := range members {
		if id != s.cfg.ID && id != m.From {
			ask = append(ask, id)
		}
	}
	s.vouches[m.From] = vouchAsking
	s.asking++
	go s.askMembersAbout(m.From, ask)
	return false
}

// askMembersAbout asks each member in ask for its member list and posts to
// the loop what they said of id.
func (s *Server) askMembersAbout(id core.NodeID, ask []core.NodeID) {
	verdict, addr := vouchUnreachable, ""
	for _, member := range ask {
		conn, err := s.peerConn(member)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := apipb.NewClusterClient(conn).MemberList(ctx, &apipb.MemberListRequest{})
		cancel()
		if err != nil {
			continue
		}
		verdict = vouchNotMember
		if i := slices.IndexFunc(resp.Members, func(m *apipb.Member) bool { return core.NodeID(m.Id) == id }); i >= 0 {
			verdict, addr = vouchMember, resp.Members[i].PeerAddress
			break
		}
	}
	(*peerHandler)(s).post(func() {
		s.asking--
		s.vouches[id] = verdict
		if verdict == vouchMember && addr != "" {
			_ = s.tr.AddPeer(id, addr) // so that the answers reach it; fails harmlessly if known
		}
		s.log.Info("asked the members about a peer outside this node's configuration", "peer", uint64(id), "verdict", verdict.String())
		time.AfterFunc(vouchFor, func() { (*peerHandler)(s).post(func() { delete(s.vouches, id) }) })
	})
}

func (v vouchState) String() string {
	return [...]string{"", "asking", "member", "no member reachable", "not a member"}[v]
}
