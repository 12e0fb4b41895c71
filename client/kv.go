package client

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// Header comes with every answer.
type Header struct {
	// Revision is the store revision the answer reflects.
	Revision uint64
	// NodeID answered; LeaderID is the leader it knew of (0: none).
	NodeID   uint64
	LeaderID uint64
}

func headerOf(h *apipb.Header) Header {
	return Header{Revision: h.GetRevision(), NodeID: h.GetNodeId(), LeaderID: h.GetLeaderId()}
}

// ReadOption changes how a read is served.
type ReadOption uint8

const (
	// Serializable reads the answering member's local state without a
	// ReadIndex round: faster, but possibly stale (it may miss writes
	// acknowledged elsewhere). Reads are linearizable without it.
	Serializable ReadOption = 1 << iota
)

func serializable(opts []ReadOption) bool {
	for _, o := range opts {
		if o&Serializable != 0 {
			return true
		}
	}
	return false
}

// PutResult is the answer to Put.
type PutResult struct {
	Header
	// Version is the key's new version (the revision of this write).
	Version uint64
	// Existed says whether the key was present before.
	Existed bool
}

var putRPC = rpc[*apipb.PutRequest, *apipb.PutResponse]{
	op:         "put",
	call:       apipb.KVClient.Put,
	setSession: func(r *apipb.PutRequest, s *apipb.Session) { r.Session = s },
	toCall: func(r *apipb.PutRequest) *apipb.Call {
		return &apipb.Call{Op: &apipb.Call_Put{Put: &apipb.PutRequest{
			Key: bytes.Clone(r.Key), Value: bytes.Clone(r.Value), Session: cloneSession(r.Session)}}}
	},
	fromReply: func(r *apipb.Reply) (*apipb.PutResponse, bool) {
		resp := r.GetPut()
		return resp, resp != nil
	},
}

// cloneSession copies a request's session for a pipelined call: the
// pipeline may still be encoding a call after its attempt has returned
// (it timed out, or the stream broke), while the retry loop changes the
// session (a new one after expiry) and the caller reuses its buffers.
func cloneSession(s *apipb.Session) *apipb.Session {
	if s == nil {
		return nil
	}
	return &apipb.Session{ClientId: s.ClientId, Seq: s.Seq}
}

// Put sets key to value, exactly once however often it is retried. The
// client does not keep key or value after Put returns.
func (c *Client) Put(ctx context.Context, key, value []byte) (PutResult, error) {
	resp, err := do(ctx, c, &putRPC, &apipb.PutRequest{Key: key, Value: value})
	if err != nil {
		return PutResult{}, err
	}
	return PutResult{Header: headerOf(resp.Header), Version: resp.Version, Existed: resp.Existed}, nil
}

// GetResult is the answer to Get. A missing key is Found=false, not an error.
type GetResult struct {
	Header
	Found   bool
	Value   []byte
	Version uint64
}

var getRPC = rpc[*apipb.GetRequest, *apipb.GetResponse]{
	op:   "get",
	call: apipb.KVClient.Get,
	toCall: func(r *apipb.GetRequest) *apipb.Call {
		return &apipb.Call{Op: &apipb.Call_Get{Get: &apipb.GetRequest{Key: bytes.Clone(r.Key), Serializable: r.Serializable}}}
	},
	fromReply: func(r *apipb.Reply) (*apipb.GetResponse, bool) {
		resp := r.GetGet()
		return resp, resp != nil
	},
}

// Get reads key, linearizably unless Serializable is given.
func (c *Client) Get(ctx context.Context, key []byte, opts ...ReadOption) (GetResult, error) {
	resp, err := do(ctx, c, &getRPC, &apipb.GetRequest{Key: key, Serializable: serializable(opts)})
	if err != nil {
		return GetResult{}, err
	}
	return GetResult{Header: headerOf(resp.Header), Found: resp.Found, Value: resp.Value, Version: resp.Version}, nil
}

// DeleteResult is the answer to Delete.
type DeleteResult struct {
	Header
	// Existed says whether there was a key to delete.
	Existed bool
}

var deleteRPC = rpc[*apipb.DeleteRequest, *apipb.DeleteResponse]{
	op:         "delete",
	call:       apipb.KVClient.Delete,
	setSession: func(r *apipb.DeleteRequest, s *apipb.Session) { r.Session = s },
	toCall: func(r *apipb.DeleteRequest) *apipb.Call {
		return &apipb.Call{Op: &apipb.Call_Delete{Delete: &apipb.DeleteRequest{Key: bytes.Clone(r.Key), Session: cloneSession(r.Session)}}}
	},
	fromReply: func(r *apipb.Reply) (*apipb.DeleteResponse, bool) {
		resp := r.GetDelete()
		return resp, resp != nil
	},
}

// Delete removes key, exactly once. Deleting a missing key succeeds with
// Existed=false.
func (c *Client) Delete(ctx context.Context, key []byte) (DeleteResult, error) {
	resp, err := do(ctx, c, &deleteRPC, &apipb.DeleteRequest{Key: key})
	if err != nil {
		return DeleteResult{}, err
	}
	return DeleteResult{Header: headerOf(resp.Header), Existed: resp.Existed}, nil
}

// CASResult is the answer to CompareAndSwap. A failed comparison is
// Succeeded=false, not an error; it carries the key's current state so the
// caller can decide again without a read.
type CASResult struct {
	Header
	Succeeded bool
	// Version: on success the key's new version; on failure its current
	// version (0 if absent).
	Version uint64
	// Exists and CurrentValue describe the key on failure.
	Exists       bool
	CurrentValue []byte
}

var casRPC = rpc[*apipb.CompareAndSwapRequest, *apipb.CompareAndSwapResponse]{
	op:         "cas",
	call:       apipb.KVClient.CompareAndSwap,
	setSession: func(r *apipb.CompareAndSwapRequest, s *apipb.Session) { r.Session = s },
	toCall: func(r *apipb.CompareAndSwapRequest) *apipb.Call {
		return &apipb.Call{Op: &apipb.Call_CompareAndSwap{CompareAndSwap: &apipb.CompareAndSwapRequest{
			Key: bytes.Clone(r.Key), ExpectedVersion: r.ExpectedVersion, Value: bytes.Clone(r.Value), Session: cloneSession(r.Session)}}}
	},
	fromReply: func(r *apipb.Reply) (*apipb.CompareAndSwapResponse, bool) {
		resp := r.GetCompareAndSwap()
		return resp, resp != nil
	},
}

// CompareAndSwap sets key to value only if the key's version is
// expectedVersion; expectedVersion 0 means "only if the key is absent".
// Applied exactly once: a retry after a lost reply gets the original answer,
// not a spurious failure caused by its own first attempt.
func (c *Client) CompareAndSwap(ctx context.Context, key []byte, expectedVersion uint64, value []byte) (CASResult, error) {
	resp, err := do(ctx, c, &casRPC, &apipb.CompareAndSwapRequest{Key: key, ExpectedVersion: expectedVersion, Value: value})
	if err != nil {
		return CASResult{}, err
	}
	return CASResult{
		Header:       headerOf(resp.Header),
		Succeeded:    resp.Succeeded,
		Version:      resp.Version,
		Exists:       resp.Exists,
		CurrentValue: resp.CurrentValue,
	}, nil
}

// KeyValue is one key in a Range answer.
type KeyValue struct {
	Key     []byte
	Value   []byte
	Version uint64
}

// RangePage is one page of keys, in byte order.
type RangePage struct {
	Header
	KVs []KeyValue
	// More says whether keys remain after the last one returned.
	More bool
}

var rangeRPC = rpc[*apipb.RangeRequest, *apipb.RangeResponse]{op: "range", call: apipb.KVClient.Range}

// Range returns one page: keys starting with prefix that sort after
// startAfter (nil: from the start), at most limit of them (0: the server's
// default page size). If More is set, call again with startAfter set to the
// last key returned.
func (c *Client) Range(ctx context.Context, prefix, startAfter []byte, limit uint32, opts ...ReadOption) (RangePage, error) {
	resp, err := do(ctx, c, &rangeRPC, &apipb.RangeRequest{
		Prefix: prefix, StartAfter: startAfter, Limit: limit, Serializable: serializable(opts),
	})
	if err != nil {
		return RangePage{}, err
	}
	page := RangePage{Header: headerOf(resp.Header), More: resp.More, KVs: make([]KeyValue, len(resp.Kvs))}
	for i, kv := range resp.Kvs {
		page.KVs[i] = KeyValue{Key: kv.Key, Value: kv.Value, Version: kv.Version}
	}
	return page, nil
}

// ListPageSize is how many keys List asks for per page.
const ListPageSize = 500

// List returns the keys with prefix in byte order, at most limit of them
// (0: all), fetching page after page. Each page is a separate read, so a
// listing that spans pages is not one snapshot: keys written meanwhile may or
// may not appear. The answer's Header is the last page's; More says whether
// keys remained beyond limit.
func (c *Client) List(ctx context.Context, prefix []byte, limit int, opts ...ReadOption) (RangePage, error) {
	var out RangePage
	var startAfter []byte
	for {
		pageSize := ListPageSize
		if limit > 0 {
			pageSize = min(pageSize, limit-len(out.KVs))
		}
		page, err := c.Range(ctx, prefix, startAfter, uint32(pageSize), opts...)
		if err != nil {
			return RangePage{}, err
		}
		out.Header = page.Header
		if len(page.KVs) > pageSize {
			return RangePage{}, fmt.Errorf("list: server returned %d keys for a page of %d", len(page.KVs), pageSize)
		}
		out.KVs = append(out.KVs, page.KVs...)
		out.More = page.More
		if !page.More || (limit > 0 && len(out.KVs) >= limit) {
			return out, nil
		}
		// A server that says "more" without advancing would loop us forever.
		if len(page.KVs) == 0 {
			return RangePage{}, fmt.Errorf("list: server returned an empty page with more=true after %q", startAfter)
		}
		last := page.KVs[len(page.KVs)-1].Key
		if startAfter != nil && bytes.Compare(last, startAfter) <= 0 {
			return RangePage{}, fmt.Errorf("list: server returned more=true without advancing past %q", startAfter)
		}
		startAfter = last
	}
}

// Member is one cluster member as the answering node sees it.
type Member struct {
	ID            uint64
	PeerAddress   string
	ClientAddress string
	// Match is how far the member's log matches the leader's (as the
	// leader sees it).
	Match uint64
	State string
	// Learner: receives the log but does not vote.
	Learner bool
}

// NodeStatus describes one member, as it answered for itself.
type NodeStatus struct {
	// Endpoint is the address asked.
	Endpoint string
	Header
	ID         uint64
	Role       string
	Term       uint64
	Commit     uint64
	Applied    uint64
	LeaderID   uint64
	FirstIndex uint64
	LastIndex  uint64
	ClusterID  string
	Members    []Member
	// Err is set (by StatusAll) when the member did not answer; the other
	// fields are then zero.
	Err error
}

// Status asks one member, at endpoint, about itself. Unlike the other
// calls it does not move to another member or retry: it reports on this
// one. endpoint need not be one of the configured endpoints.
func (c *Client) Status(ctx context.Context, endpoint string) (NodeStatus, error) {
	out := NodeStatus{Endpoint: endpoint}
	if c.closed.Load() {
		return out, fmt.Errorf("status: %w", ErrClosed)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	var kv apipb.KVClient
	configured := -1
	for i, ep := range c.eps {
		if ep.addr == endpoint {
			kv, configured = ep.kv, i
		}
	}
	if kv == nil {
		conn, err := grpc.NewClient(endpoint, c.dialOpts...)
		if err != nil {
			return out, fmt.Errorf("status: endpoint %q: %w", endpoint, err)
		}
		defer conn.Close()
		kv = apipb.NewKVClient(conn)
	}
	resp, err := kv.Status(ctx, &apipb.StatusRequest{})
	if err != nil {
		if ctx.Err() != nil {
			return out, contextError(ctx, "status "+endpoint, nil, err)
		}
		if class, st := classify(err); class != classRetry {
			return out, &StatusError{Op: "status", Endpoint: endpoint, Code: st.Code(), Message: st.Message()}
		}
		return out, &UnavailableError{Op: "status", Endpoints: []string{endpoint}, Attempts: 1, Last: err}
	}
	if configured >= 0 {
		// Learn the member's id and its leader, so later calls can go to
		// the leader first.
		c.noteSuccess(configured, &apipb.Header{NodeId: resp.Id, LeaderId: resp.LeaderId})
	}
	out.Header = headerOf(resp.Header)
	out.ID, out.Role, out.Term = resp.Id, resp.Role, resp.Term
	out.Commit, out.Applied, out.LeaderID = resp.Commit, resp.Applied, resp.LeaderId
	out.FirstIndex, out.LastIndex, out.ClusterID = resp.FirstIndex, resp.LastIndex, resp.ClusterId
	out.Members = toMembers(resp.Members)
	return out, nil
}

// StatusAll asks every configured endpoint at once and returns one entry
// per endpoint, in configuration order; a member that did not answer has
// Err set.
func (c *Client) StatusAll(ctx context.Context) []NodeStatus {
	out := make([]NodeStatus, len(c.addrs))
	var wg sync.WaitGroup
	for i, addr := range c.addrs {
		wg.Go(func() {
			st, err := c.Status(ctx, addr)
			st.Err = err
			out[i] = st
		})
	}
	wg.Wait()
	return out
}
