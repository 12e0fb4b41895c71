package chaos

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The lock workload: lockers take one lock the way etcd's lock recipe
// does (create the lock key with their lease; its create revision is
// their fencing token) and, holding it, write the resource it guards
// with a transaction that compares the lock key's create revision with
// their token: the fencing pattern of docs/etcd.md. Now and then a locker
// stops keeping its lease alive for longer than its TTL, as a paused
// process does, and on waking writes once more before it looks, so that
// a stale holder's write really is tried. The judge (CheckFencing)
// requires the guarded writes that took effect to carry tokens that never
// go down in revision order: no stale holder's write after a newer
// holder's.

const (
	lockKey      = "lock/key"
	lockResource = "lock/resource"
	lockTTL      = 2 // seconds
)

// FencedWrite is a guarded write acknowledged as applied.
type FencedWrite struct {
	Locker   int    `json:"locker"`
	Token    int64  `json:"token"`
	Revision uint64 `json:"revision"`
}

// LockReport is what the lockers did and what the judge found.
type LockReport struct {
	Acquired int `json:"acquired"`
	Fenced   int `json:"fenced_writes"`
	// Refused counts guarded writes the fence refused; Stale those tried
	// after a pause past the lease's TTL.
	Refused  int      `json:"refused"`
	Stale    int      `json:"stale_attempts"`
	Problems []string `json:"problems,omitempty"`
}

type lockLog struct {
	mu     sync.Mutex
	writes []FencedWrite
	report LockReport
}

func (l *lockLog) note(fn func(r *LockReport, w *[]FencedWrite)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fn(&l.report, &l.writes)
}

type locker struct {
	id        int
	endpoints []string
	rng       *rand.Rand
	log       *lockLog
	conn      *grpc.ClientConn
	at        int
}

func newLocker(id int, endpoints []string, log *lockLog, seed int64) *locker {
	return &locker{id: id, endpoints: endpoints, log: log, rng: rand.New(rand.NewPCG(uint64(seed), uint64(1000+id))), at: id}
}

// client is a connection to the locker's current member; next moves on.
func (lk *locker) client() (*grpc.ClientConn, error) {
	if lk.conn == nil {
		c, err := grpc.NewClient(lk.endpoints[lk.at%len(lk.endpoints)], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		lk.conn = c
	}
	return lk.conn, nil
}

func (lk *locker) next() {
	if lk.conn != nil {
		lk.conn.Close()
		lk.conn = nil
	}
	lk.at++
}

// run takes and uses the lock until stop closes.
func (lk *locker) run(ctx context.Context, stop <-chan struct{}) {
	defer lk.next()
	for !shouldStop(ctx, stop) {
		if err := lk.round(ctx, stop); err != nil {
			lk.next()
			pauseFor(ctx, stop, 100*time.Millisecond)
		}
	}
}

// round is one lease: grant, take the lock, write under it, let go.
func (lk *locker) round(ctx context.Context, stop <-chan struct{}) error {
	conn, err := lk.client()
	if err != nil {
		return err
	}
	lease, err := call(ctx, func(c context.Context) (*pb.LeaseGrantResponse, error) {
		return pb.NewLeaseClient(conn).LeaseGrant(c, &pb.LeaseGrantRequest{TTL: lockTTL})
	})
	if err != nil {
		return err
	}
	kctx, stopKeeping := context.WithCancel(ctx)
	defer stopKeeping()
	go keepAlive(kctx, conn, lease.ID)

	token, err := lk.acquire(ctx, stop, conn, lease.ID)
	if err != nil || token == 0 {
		return err
	}
	lk.log.note(func(r *LockReport, _ *[]FencedWrite) { r.Acquired++ })
	for i := 3 + lk.rng.IntN(10); i > 0 && !shouldStop(ctx, stop); i-- {
		if lk.rng.IntN(6) == 0 {
			// A pause past the TTL: no keep-alive, then a write at once.
			stopKeeping()
			pauseFor(ctx, stop, time.Duration(lockTTL)*time.Second+time.Duration(lk.rng.IntN(1500))*time.Millisecond)
			lk.log.note(func(r *LockReport, _ *[]FencedWrite) { r.Stale++ })
			_, _ = lk.guardedWrite(ctx, conn, token)
			break
		}
		ok, err := lk.guardedWrite(ctx, conn, token)
		if err != nil || !ok {
			break
		}
		pauseFor(ctx, stop, time.Duration(20+lk.rng.IntN(80))*time.Millisecond)
	}
	_, _ = call(ctx, func(c context.Context) (*pb.LeaseRevokeResponse, error) {
		return pb.NewLeaseClient(conn).LeaseRevoke(c, &pb.LeaseRevokeRequest{ID: lease.ID})
	})
	return nil
}

// acquire creates the lock key with the lease, retrying while another
// holds it; the token is the key's create revision (0: gave up).
func (lk *locker) acquire(ctx context.Context, stop <-chan struct{}, conn *grpc.ClientConn, lease int64) (int64, error) {
	for tries := 0; tries < 50 && !shouldStop(ctx, stop); tries++ {
		resp, err := call(ctx, func(c context.Context) (*pb.TxnResponse, error) {
			return pb.NewKVClient(conn).Txn(c, &pb.TxnRequest{
				Compare: []*pb.Compare{{Key: []byte(lockKey), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
					TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}},
				Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
					Key: []byte(lockKey), Value: []byte(strconv.Itoa(lk.id)), Lease: lease}}}},
			})
		})
		if err != nil {
			return 0, err
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
		pauseFor(ctx, stop, 100*time.Millisecond)
	}
	return 0, nil
}

// guardedWrite writes the resource under the fence; ok says it took
// effect.
func (lk *locker) guardedWrite(ctx context.Context, conn *grpc.ClientConn, token int64) (bool, error) {
	resp, err := call(ctx, func(c context.Context) (*pb.TxnResponse, error) {
		return pb.NewKVClient(conn).Txn(c, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte(lockKey), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_CreateRevision{CreateRevision: token}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
				Key: []byte(lockResource), Value: []byte(strconv.FormatInt(token, 10))}}}},
		})
	})
	if err != nil {
		return false, err // unknown: not recorded
	}
	lk.log.note(func(r *LockReport, ws *[]FencedWrite) {
		if resp.Succeeded {
			r.Fenced++
			*ws = append(*ws, FencedWrite{Locker: lk.id, Token: token, Revision: uint64(resp.Header.Revision)})
		} else {
			r.Refused++
		}
	})
	return resp.Succeeded, nil
}

// keepAlive renews the lease every third of its TTL until ctx ends.
func keepAlive(ctx context.Context, conn *grpc.ClientConn, id int64) {
	stream, err := pb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
	if err != nil {
		return
	}
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	for {
		if stream.Send(&pb.LeaseKeepAliveRequest{ID: id}) != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(lockTTL) * time.Second / 3):
		}
	}
}

// call makes one request with a deadline.
func call[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return fn(c)
}

// pauseFor waits d, or less if the run stops.
func pauseFor(ctx context.Context, stop <-chan struct{}, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-stop:
	case <-time.After(d):
	}
}

// CheckFencing requires the guarded writes that took effect, in revision
// order, to carry tokens that never go down.
func CheckFencing(writes []FencedWrite) []string {
	ws := slices.Clone(writes)
	slices.SortFunc(ws, func(a, b FencedWrite) int { return cmp.Compare(a.Revision, b.Revision) })
	var problems []string
	for i := 1; i < len(ws) && len(problems) < maxWatchProblems; i++ {
		switch prev, w := ws[i-1], ws[i]; {
		case w.Revision == prev.Revision:
			problems = append(problems, fmt.Sprintf("two guarded writes acknowledged at revision %d", w.Revision))
		case w.Token < prev.Token:
			problems = append(problems, fmt.Sprintf("locker %d's write under token %d took effect at revision %d, after locker %d's under token %d at %d: a stale holder wrote",
				w.Locker, w.Token, w.Revision, prev.Locker, prev.Token, prev.Revision))
		}
	}
	return problems
}
