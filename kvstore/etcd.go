package kvstore

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/therealutkarshpriyadarshi/keyval/auth"
	"github.com/therealutkarshpriyadarshi/keyval/kvstore/kvpb"
)

// The etcd v3 API's writes reach the store as one command kind, an etcd
// TxnRequest (a Put or a DeleteRange is a transaction of one operation),
// applied with etcd's semantics over the history (mvcc.go): the compares
// and the choice of branch (nested ones included) are decided on the state
// before the transaction, the chosen operations are checked before any of
// them runs, so a transaction that fails writes nothing, and all its writes
// share one revision. Reads (Range) run here too, inside a transaction or
// on a Store's applied state (EtcdRange).

// The texts of etcd refusals, as etcd words them: clients recognise them.
const (
	errEtcdEmptyKey     = "etcdserver: key is not provided"
	errEtcdDuplicateKey = "etcdserver: duplicate key given in txn request"
	errEtcdKeyNotFound  = "etcdserver: key not found"
	errEtcdValueGiven   = "etcdserver: value is provided"
	errEtcdLeaseGiven   = "etcdserver: lease is provided"
	errEtcdLeaseMissing = "etcdserver: requested lease not found"
	errEtcdCompacted    = "etcdserver: mvcc: required revision has been compacted"
	errEtcdFutureRev    = "etcdserver: mvcc: required revision is a future revision"
	errEtcdReserved     = "invalid command: keys starting with \"\\x00keyval/\" are KeyVal's own records"
	errEtcdMalformed    = "malformed command: the transaction does not decode"
)

// EncodeEtcdTxn returns the command that applies req as user (empty: auth
// off).
func EncodeEtcdTxn(req *pb.TxnRequest, user string) ([]byte, error) {
	data, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode etcd transaction: %w", err)
	}
	return mustEncode(&kvpb.Command{User: user, Op: &kvpb.Command_EtcdTxn{EtcdTxn: data}}), nil
}

// EncodeCompact returns the command that compacts the history at rev, as
// user.
func EncodeCompact(rev uint64, user string) []byte {
	return mustEncode(&kvpb.Command{User: user, Op: &kvpb.Command_Compact{Compact: &kvpb.Compact{Revision: rev}}})
}

// reader is what a read needs: a state, inside a batch or a read-only
// view of the applied one.
type reader interface {
	revision() uint64
	compacted() uint64
	scanLatest(start, end []byte, fn func(v version) bool) error
	history
	scanRevisions(from, to uint64, fn func(rev uint64, key []byte) bool) error
	// versionAround returns key's version at rev and the one just before
	// it (nil where there is none).
	versionAround(key []byte, rev uint64) (at, before *version, err error)
	lease(id int64) (*kvpb.Lease, error)
	leaseKeys(id int64) ([][]byte, error)
}

// etcdTxn applies an etcd transaction.
func etcdTxn(st state, cmd *command) (Result, error) {
	var req pb.TxnRequest
	if err := req.Unmarshal(cmd.value); err != nil {
		return invalid(st, StatusMalformed, errEtcdMalformed), nil
	}
	if msg := checkTxn(&req); msg != "" {
		return invalid(st, StatusInvalid, msg), nil
	}
	if r, ok, err := authorizeTxn(st, cmd.user, &req); err != nil || !ok {
		return r, err
	}
	// Decide every branch first, on the state before any write.
	var path []bool
	if err := choosePath(st, &req, &path); err != nil {
		return Result{}, err
	}
	if status, msg, err := checkPath(st, &req, path); err != nil || status != 0 {
		if err != nil {
			return Result{}, err
		}
		return invalid(st, status, msg), nil
	}
	if noSpace(st, nil) && txnPuts(&req, path) {
		return invalid(st, StatusNoSpace, errNoSpace), nil
	}
	x := txnRun{st: st, rev: st.revision() + 1, path: path}
	resp, err := x.run(&req)
	if err != nil {
		return Result{}, err
	}
	if x.wrote {
		st.setRevision(x.rev)
	}
	stampHeaders(resp, st.revision())
	return Result{Status: StatusOK, Revision: st.revision(), Etcd: resp}, nil
}

// checkTxn checks what etcd checks before a transaction runs: keys are
// given and not KeyVal's own, and within each branch (nested transactions'
// branches included) no key is put twice or both put and deleted.
func checkTxn(req *pb.TxnRequest) string {
	for _, c := range req.Compare {
		if msg := checkEtcdKey(c.Key); msg != "" {
			return msg
		}
	}
	for _, branch := range [][]*pb.RequestOp{req.Success, req.Failure} {
		var w txnWrites
		if msg := w.add(branch); msg != "" {
			return msg
		}
	}
	return ""
}

func checkEtcdKey(key []byte) string {
	switch {
	case len(key) == 0:
		return errEtcdEmptyKey
	case bytes.HasPrefix(key, reservedKeyPrefix):
		return errEtcdReserved
	case len(key) > MaxKeySize:
		return fmt.Sprintf(errKeyTooLong, len(key), MaxKeySize)
	}
	return ""
}

// txnWrites collects one branch's writes to find overlaps.
type txnWrites struct {
	puts map[string]bool
	dels []keyRange
}

type keyRange struct{ key, end []byte }

func (r keyRange) contains(key []byte) bool {
	if len(r.end) == 0 {
		return bytes.Equal(key, r.key)
	}
	return inRange(key, r.key, rangeBound(r.end))
}

func (w *txnWrites) add(ops []*pb.RequestOp) string {
	for _, op := range ops {
		switch o := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			if msg := checkEtcdKey(o.RequestRange.Key); msg != "" {
				return msg
			}
		case *pb.RequestOp_RequestPut:
			p := o.RequestPut
			if msg := checkEtcdKey(p.Key); msg != "" {
				return msg
			}
			if len(p.Value) > MaxValueSize {
				return fmt.Sprintf(errValueTooLong, len(p.Value), MaxValueSize)
			}
			if w.puts[string(p.Key)] || w.deleted(p.Key) {
				return errEtcdDuplicateKey
			}
			if w.puts == nil {
				w.puts = map[string]bool{}
			}
			w.puts[string(p.Key)] = true
		case *pb.RequestOp_RequestDeleteRange:
			d := o.RequestDeleteRange
			if msg := checkEtcdKey(d.Key); msg != "" {
				return msg
			}
			r := keyRange{d.Key, d.RangeEnd}
			for k := range w.puts { // membership only: the answer is the same in any order
				if r.contains([]byte(k)) {
					return errEtcdDuplicateKey
				}
			}
			w.dels = append(w.dels, r)
		case *pb.RequestOp_RequestTxn:
			if msg := w.addNested(o.RequestTxn); msg != "" {
				return msg
			}
		}
	}
	return ""
}

// addNested adds both branches of a nested transaction: each is checked
// against what the enclosing branch writes, not against the other.
func (w *txnWrites) addNested(t *pb.TxnRequest) string {
	for _, c := range t.Compare {
		if msg := checkEtcdKey(c.Key); msg != "" {
			return msg
		}
	}
	var merged txnWrites
	for _, branch := range [][]*pb.RequestOp{t.Success, t.Failure} {
		inner := txnWrites{puts: copySet(w.puts), dels: append([]keyRange(nil), w.dels...)}
		if msg := inner.add(branch); msg != "" {
			return msg
		}
		for k := range inner.puts {
			if merged.puts == nil {
				merged.puts = map[string]bool{}
			}
			merged.puts[k] = true
		}
		merged.dels = append(merged.dels, inner.dels...)
	}
	for k := range merged.puts {
		if w.puts == nil {
			w.puts = map[string]bool{}
		}
		w.puts[k] = true
	}
	w.dels = append(w.dels, merged.dels...)
	return ""
}

func (w *txnWrites) deleted(key []byte) bool {
	for _, r := range w.dels {
		if r.contains(key) {
			return true
		}
	}
	return false
}

func copySet(s map[string]bool) map[string]bool {
	out := make(map[string]bool, len(s))
	for k := range s {
		out[k] = true
	}
	return out
}

// rangeBound turns etcd's range_end into scan's end: "\x00" means every
// key from the start on.
func rangeBound(end []byte) []byte {
	if len(end) == 1 && end[0] == 0 {
		return nil
	}
	return end
}

// keySpan is the [start, end) a request's key and range_end cover.
func keySpan(key, end []byte) (start, stop []byte) {
	if len(end) == 0 {
		return key, append(append([]byte(nil), key...), 0)
	}
	return key, rangeBound(end)
}

// authorizeTxn checks, once auth is enabled, that user may read every key
// the transaction compares or reads and write every key it writes, in both
// branches (as etcd does).
func authorizeTxn(st state, user string, req *pb.TxnRequest) (Result, bool, error) {
	on, err := authEnabled(st)
	if err != nil || !on {
		return Result{}, err == nil, err
	}
	return authResult(st, txnAllowed(records{st}, user, req))
}

func txnAllowed(r auth.Records, user string, req *pb.TxnRequest) error {
	const read, write = kvpb.AuthPermission_TYPE_READ, kvpb.AuthPermission_TYPE_WRITE
	for _, c := range req.Compare {
		if err := auth.Allowed(r, user, read, c.Key, c.RangeEnd); err != nil {
			return err
		}
	}
	for _, op := range append(append([]*pb.RequestOp(nil), req.Success...), req.Failure...) {
		var err error
		switch o := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			err = auth.Allowed(r, user, read, o.RequestRange.Key, o.RequestRange.RangeEnd)
		case *pb.RequestOp_RequestPut:
			err = auth.Allowed(r, user, write, o.RequestPut.Key, nil)
			if err == nil && o.RequestPut.PrevKv {
				err = auth.Allowed(r, user, read, o.RequestPut.Key, nil)
			}
		case *pb.RequestOp_RequestDeleteRange:
			d := o.RequestDeleteRange
			err = auth.Allowed(r, user, write, d.Key, d.RangeEnd)
			if err == nil && d.PrevKv {
				err = auth.Allowed(r, user, read, d.Key, d.RangeEnd)
			}
		case *pb.RequestOp_RequestTxn:
			err = txnAllowed(r, user, o.RequestTxn)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// choosePath appends, depth first in operation order, whether each
// transaction (req, then its nested ones on the chosen branch) takes its
// success branch.
func choosePath(rd reader, req *pb.TxnRequest, path *[]bool) error {
	ok := true
	for _, c := range req.Compare {
		holds, err := compareHolds(rd, c)
		if err != nil {
			return err
		}
		if !holds {
			ok = false
			break
		}
	}
	*path = append(*path, ok)
	for _, op := range branch(req, ok) {
		if t, isTxn := op.Request.(*pb.RequestOp_RequestTxn); isTxn {
			if err := choosePath(rd, t.RequestTxn, path); err != nil {
				return err
			}
		}
	}
	return nil
}

func branch(req *pb.TxnRequest, success bool) []*pb.RequestOp {
	if success {
		return req.Success
	}
	return req.Failure
}

// compareHolds evaluates one compare: on every key in its range, or on
// the one key (an absent key has version, create and mod revision and
// lease 0, and no value compares true).
func compareHolds(rd reader, c *pb.Compare) (bool, error) {
	start, stop := keySpan(c.Key, c.RangeEnd)
	holds, any := true, false
	err := rd.scanLatest(start, stop, func(v version) bool {
		if bytes.HasPrefix(v.key, reservedKeyPrefix) {
			return true
		}
		any = true
		holds = compareOne(c, v.value, v.meta, true)
		return holds
	})
	if err != nil || any {
		return holds, err
	}
	return compareOne(c, nil, kvMeta{}, false), nil
}

func compareOne(c *pb.Compare, value []byte, m kvMeta, found bool) bool {
	var cmp int
	switch c.Target {
	case pb.Compare_VALUE:
		if !found {
			return false
		}
		cmp = bytes.Compare(value, c.GetValue())
	case pb.Compare_VERSION:
		cmp = compareInt(int64(m.count), c.GetVersion())
	case pb.Compare_CREATE:
		cmp = compareInt(int64(m.createRev), c.GetCreateRevision())
	case pb.Compare_MOD:
		cmp = compareInt(int64(m.modRev), c.GetModRevision())
	case pb.Compare_LEASE:
		cmp = compareInt(int64(m.lease), c.GetLease())
	default:
		return false
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return cmp == 0
	case pb.Compare_NOT_EQUAL:
		return cmp != 0
	case pb.Compare_GREATER:
		return cmp > 0
	case pb.Compare_LESS:
		return cmp < 0
	}
	return false
}

func compareInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkPath checks the operations on the chosen branches before any runs:
// a put that keeps the value or lease needs the key to exist, a lease it
// names must exist, and reads name revisions the store holds.
func checkPath(rd reader, req *pb.TxnRequest, path []bool) (Status, string, error) {
	i := 0
	var walk func(t *pb.TxnRequest) (Status, string, error)
	walk = func(t *pb.TxnRequest) (Status, string, error) {
		ok := path[i]
		i++
		for _, op := range branch(t, ok) {
			switch o := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				p := o.RequestPut
				if p.Lease != 0 && !p.IgnoreLease {
					if l, err := rd.lease(p.Lease); err != nil || l == nil {
						if err != nil {
							return 0, "", err
						}
						return StatusLeaseNotFound, errEtcdLeaseMissing, nil
					}
				}
				if p.IgnoreValue && len(p.Value) > 0 {
					return StatusInvalid, errEtcdValueGiven, nil
				}
				if p.IgnoreLease && p.Lease != 0 {
					return StatusInvalid, errEtcdLeaseGiven, nil
				}
				if p.IgnoreValue || p.IgnoreLease {
					found := false
					if err := rd.scanLatest(p.Key, append(append([]byte(nil), p.Key...), 0), func(version) bool { found = true; return false }); err != nil {
						return 0, "", err
					}
					if !found {
						return StatusKeyNotFound, errEtcdKeyNotFound, nil
					}
				}
			case *pb.RequestOp_RequestRange:
				if status, msg := checkReadRevision(rd, o.RequestRange.Revision); status != 0 {
					return status, msg, nil
				}
			case *pb.RequestOp_RequestTxn:
				if status, msg, err := walk(o.RequestTxn); err != nil || status != 0 {
					return status, msg, err
				}
			}
		}
		return 0, "", nil
	}
	return walk(req)
}

// txnPuts reports whether the chosen branches put anything (refused under
// the NOSPACE alarm; deletes go on).
func txnPuts(req *pb.TxnRequest, path []bool) bool {
	i := 0
	var walk func(t *pb.TxnRequest) bool
	walk = func(t *pb.TxnRequest) bool {
		ok := path[i]
		i++
		for _, op := range branch(t, ok) {
			switch o := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				return true
			case *pb.RequestOp_RequestTxn:
				if walk(o.RequestTxn) {
					return true
				}
			}
		}
		return false
	}
	return walk(req)
}

func checkReadRevision(rd reader, rev int64) (Status, string) {
	switch {
	case rev <= 0:
		return 0, ""
	case uint64(rev) > rd.revision():
		return StatusFutureRevision, errEtcdFutureRev
	case uint64(rev) < rd.compacted():
		return StatusCompacted, errEtcdCompacted
	}
	return 0, ""
}

// txnRun executes the chosen branches; every write is at rev.
type txnRun struct {
	st    state
	rev   uint64
	path  []bool
	next  int
	wrote bool
}

func (x *txnRun) run(t *pb.TxnRequest) (*pb.TxnResponse, error) {
	ok := x.path[x.next]
	x.next++
	resp := &pb.TxnResponse{Succeeded: ok}
	for _, op := range branch(t, ok) {
		r := &pb.ResponseOp{}
		switch o := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			rr, err := etcdRange(x.st, o.RequestRange, 0)
			if err != nil {
				return nil, err
			}
			r.Response = &pb.ResponseOp_ResponseRange{ResponseRange: rr}
		case *pb.RequestOp_RequestPut:
			pr, err := x.put(o.RequestPut)
			if err != nil {
				return nil, err
			}
			r.Response = &pb.ResponseOp_ResponsePut{ResponsePut: pr}
		case *pb.RequestOp_RequestDeleteRange:
			dr, err := x.deleteRange(o.RequestDeleteRange)
			if err != nil {
				return nil, err
			}
			r.Response = &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: dr}
		case *pb.RequestOp_RequestTxn:
			tr, err := x.run(o.RequestTxn)
			if err != nil {
				return nil, err
			}
			r.Response = &pb.ResponseOp_ResponseTxn{ResponseTxn: tr}
		}
		resp.Responses = append(resp.Responses, r)
	}
	return resp, nil
}

func (x *txnRun) put(p *pb.PutRequest) (*pb.PutResponse, error) {
	var (
		cur   []byte
		meta  kvMeta
		found bool
		err   error
	)
	if p.PrevKv || p.IgnoreValue { // only these need the old value
		cur, meta, found, err = x.st.get(p.Key)
	} else {
		meta, found, err = x.st.lookup(p.Key)
	}
	if err != nil {
		return nil, err
	}
	resp := &pb.PutResponse{}
	if found && p.PrevKv {
		resp.PrevKv = toMVCC(version{key: p.Key, value: cur, meta: meta}, false)
	}
	value := p.Value
	if p.IgnoreValue {
		value = clone(cur) // cur is valid only until the next call
	}
	next := meta.next(x.rev, found)
	next.lease = uint64(p.Lease)
	if p.IgnoreLease {
		next.lease = meta.lease
	}
	if err := x.st.put(p.Key, value, next); err != nil {
		return nil, err
	}
	x.wrote = true
	return resp, nil
}

func (x *txnRun) deleteRange(d *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	start, stop := keySpan(d.Key, d.RangeEnd)
	var doomed []version
	err := x.st.scanLatest(start, stop, func(v version) bool {
		if !bytes.HasPrefix(v.key, reservedKeyPrefix) {
			doomed = append(doomed, version{key: clone(v.key), value: clone(v.value), meta: v.meta})
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	resp := &pb.DeleteRangeResponse{Deleted: int64(len(doomed))}
	for _, v := range doomed {
		if err := x.st.del(v.key, x.rev); err != nil {
			return nil, err
		}
		if d.PrevKv {
			resp.PrevKvs = append(resp.PrevKvs, toMVCC(v, false))
		}
	}
	x.wrote = x.wrote || len(doomed) > 0
	return resp, nil
}

// stampHeaders gives every response of a transaction the revision it
// left the store at; the server fills in the rest of the top header.
func stampHeaders(t *pb.TxnResponse, rev uint64) {
	t.Header = &pb.ResponseHeader{Revision: int64(rev)}
	for _, r := range t.Responses {
		switch o := r.Response.(type) {
		case *pb.ResponseOp_ResponseRange:
			o.ResponseRange.Header = &pb.ResponseHeader{Revision: int64(rev)}
		case *pb.ResponseOp_ResponsePut:
			o.ResponsePut.Header = &pb.ResponseHeader{Revision: int64(rev)}
		case *pb.ResponseOp_ResponseDeleteRange:
			o.ResponseDeleteRange.Header = &pb.ResponseHeader{Revision: int64(rev)}
		case *pb.ResponseOp_ResponseTxn:
			stampHeaders(o.ResponseTxn, rev)
		}
	}
}

func toMVCC(v version, keysOnly bool) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{
		Key:            clone(v.key),
		CreateRevision: int64(v.meta.createRev),
		ModRevision:    int64(v.meta.modRev),
		Version:        int64(v.meta.count),
		Lease:          int64(v.meta.lease),
	}
	if !keysOnly {
		kv.Value = clone(v.value)
	}
	return kv
}

// etcdRange answers an etcd Range on rd, at its revision or the one req
// names. maxBytes (> 0) bounds the keys and values returned: the answer
// stops before it with More set, holding at least one key.
func etcdRange(rd reader, req *pb.RangeRequest, maxBytes int) (*pb.RangeResponse, error) {
	if status, msg := checkReadRevision(rd, req.Revision); status != 0 {
		return nil, &RangeError{Status: status, Msg: msg}
	}
	rev := rd.revision()
	if req.Revision > 0 {
		rev = uint64(req.Revision)
	}
	start, stop := keySpan(req.Key, req.RangeEnd)
	keep := func(v version) bool {
		m := v.meta
		return (req.MinModRevision == 0 || int64(m.modRev) >= req.MinModRevision) &&
			(req.MaxModRevision == 0 || int64(m.modRev) <= req.MaxModRevision) &&
			(req.MinCreateRevision == 0 || int64(m.createRev) >= req.MinCreateRevision) &&
			(req.MaxCreateRevision == 0 || int64(m.createRev) <= req.MaxCreateRevision)
	}
	sorted := req.SortOrder != pb.RangeRequest_NONE || req.SortTarget != pb.RangeRequest_KEY
	// A keys-only answer holds no value, unless values order it.
	keepValues := !req.KeysOnly || req.SortTarget == pb.RangeRequest_VALUE
	var (
		all   []version
		count int64 // every key in the range, as etcd counts (filters aside)
		taken int   // bytes of keys and values in all
		cut   bool  // a key that passed the filters was left out
	)
	collect := func(v version) bool {
		if bytes.HasPrefix(v.key, reservedKeyPrefix) {
			return true
		}
		count++
		if req.CountOnly || !keep(v) {
			return true
		}
		// Unsorted, the answer is the first keys in order: stop
		// copying once it is full (the count goes on). Sorted, every key
		// is a candidate, but not past the byte budget when there is no
		// limit: such an answer is cut anyway.
		full := (!sorted && req.Limit > 0 && int64(len(all)) >= req.Limit) ||
			((!sorted || req.Limit <= 0) && maxBytes > 0 && taken >= maxBytes)
		if full {
			cut = true
			return true
		}
		taken += answerBytes(v, req.KeysOnly)
		kept := version{key: clone(v.key), meta: v.meta}
		if keepValues {
			kept.value = clone(v.value)
		}
		all = append(all, kept)
		return true
	}
	var err error
	if rev == rd.revision() {
		err = rd.scanLatest(start, stop, collect)
	} else {
		err = scanAt(rd, start, stop, rev, collect)
	}
	if err != nil {
		return nil, err
	}
	if sorted {
		sortVersions(all, req.SortTarget, req.SortOrder)
	}
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: int64(rd.revision())}, Count: count}
	if req.CountOnly {
		return resp, nil
	}
	size := 0
	for _, v := range all {
		if req.Limit > 0 && int64(len(resp.Kvs)) >= req.Limit {
			break
		}
		if maxBytes > 0 && len(resp.Kvs) > 0 && size+answerBytes(v, req.KeysOnly) > maxBytes {
			break
		}
		size += answerBytes(v, req.KeysOnly)
		resp.Kvs = append(resp.Kvs, toMVCC(v, req.KeysOnly))
	}
	// More says the limit or the byte budget left keys out, as etcd's
	// does (not the filters).
	resp.More = cut || len(resp.Kvs) < len(all)
	return resp, nil
}

// answerBytes is what v adds to an answer's byte budget: its key, and its
// value unless the answer carries keys only.
func answerBytes(v version, keysOnly bool) int {
	if keysOnly {
		return len(v.key)
	}
	return len(v.key) + len(v.value)
}

func sortVersions(all []version, target pb.RangeRequest_SortTarget, order pb.RangeRequest_SortOrder) {
	less := func(a, b version) bool {
		switch target {
		case pb.RangeRequest_VERSION:
			return a.meta.count < b.meta.count
		case pb.RangeRequest_CREATE:
			return a.meta.createRev < b.meta.createRev
		case pb.RangeRequest_MOD:
			return a.meta.modRev < b.meta.modRev
		case pb.RangeRequest_VALUE:
			return bytes.Compare(a.value, b.value) < 0
		}
		return bytes.Compare(a.key, b.key) < 0
	}
	// Ties keep key order, so the answer is the same on every member.
	sort.SliceStable(all, func(i, j int) bool {
		if order == pb.RangeRequest_DESCEND {
			return less(all[j], all[i])
		}
		return less(all[i], all[j])
	})
}

// RangeError is a Range refused for its revision: StatusCompacted or
// StatusFutureRevision, with etcd's words for it.
type RangeError struct {
	Status Status
	Msg    string
}

func (e *RangeError) Error() string { return e.Msg }

// compact applies a Compact command.
func compact(st state, cmd *command) (Result, error) {
	if cmd.clientID != 0 || cmd.seq != 0 {
		return invalid(st, StatusInvalid, errAdminIDs), nil
	}
	if on, err := authEnabled(st); err != nil {
		return Result{}, err
	} else if on {
		if r, ok, err := authResult(st, auth.RequireRoot(records{st}, cmd.user)); err != nil || !ok {
			return r, err
		}
	}
	rev := cmd.expected
	switch {
	case rev > st.revision():
		return invalid(st, StatusFutureRevision, errEtcdFutureRev), nil
	case rev <= st.compacted():
		return invalid(st, StatusCompacted, errEtcdCompacted), nil
	}
	if p, ok := st.(laterPruner); ok {
		if err := p.schedulePrune(rev); err != nil {
			return Result{}, err
		}
	} else if err := pruneNow(st, rev); err != nil {
		return Result{}, err
	}
	if err := st.compactRevisions(rev); err != nil { // Events reads from rev on
		return Result{}, err
	}
	st.setCompacted(rev)
	return Result{Status: StatusOK, Revision: st.revision()}, nil
}

func encodeEtcdResponse(r *pb.TxnResponse) []byte {
	if r == nil {
		return nil
	}
	data, err := r.Marshal()
	if err != nil {
		panic(fmt.Sprintf("kvstore: encoding an etcd response cannot fail: %v", err))
	}
	return data
}

// decodeEtcdResponse reads a remembered answer, which was checked when it
// was stored or restored (checkClient); one that does not decode is left
// out.
func decodeEtcdResponse(data []byte) *pb.TxnResponse {
	if len(data) == 0 {
		return nil
	}
	var r pb.TxnResponse
	if r.Unmarshal(data) != nil {
		return nil
	}
	return &r
}

// KVHash is a hash of the history as of a revision (HashKV): members that
// hold the same history, compacted at the same revision, give the same
// hash for the same revision.
type KVHash struct {
	Hash              uint32
	Revision          uint64 // the revision hashed
	CompactedRevision uint64
}

// hashKV hashes every history entry at or below rev (0: the current
// revision): its key, revision, meta and value, in (key, revision) order;
// but a tombstone at the compacted revision, which builds before
// 2026-12-07 pruned and later ones keep (as etcd's hash leaves it out for
// the same reason), so that members of both give the same hash.
func hashKV(rd reader, rev int64) (KVHash, error) {
	if status, msg := checkReadRevision(rd, rev); status != 0 {
		return KVHash{}, &RangeError{Status: status, Msg: msg}
	}
	h := KVHash{Revision: rd.revision(), CompactedRevision: rd.compacted()}
	if rev > 0 {
		h.Revision = uint64(rev)
	}
	sum := crc32.New(castagnoli)
	var buf []byte
	err := rd.scanHistory(nil, nil, func(v version) bool {
		if v.meta.modRev > h.Revision || v.meta.modRev == h.CompactedRevision && v.meta.tombstone() {
			return true
		}
		buf = histKey(buf[:0], v.key, v.meta.modRev)
		var m [metaSize]byte
		putMeta(m[:], v.meta)
		buf = append(append(buf, m[:]...), v.value...)
		sum.Write(buf)
		return true
	})
	h.Hash = sum.Sum32()
	return h, err
}
