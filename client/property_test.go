package client

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"pgregory.net/rapid"

	"github.com/therealutkarshpriyadarshi/keyval/internal/fakekv"
)

type modelEntry struct {
	value   string
	version uint64
}

// TestPropertyWritesApplyOnceUnderFaults runs random operations against a
// two-member fake cluster while injecting random faults before each one
// (transient refusals, applied-then-lost replies, expired sessions, a member
// down) and checks every answer against a model that applies each write
// exactly once.
func TestPropertyWritesApplyOnceUnderFaults(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		store := fakekv.NewStore()
		defer store.Close()
		var nodes []*fakekv.Node
		for id := uint64(1); id <= 2; id++ {
			n, err := store.StartNode(id)
			if err != nil {
				rt.Fatalf("start node: %v", err)
			}
			nodes = append(nodes, n)
		}
		c, err := New(Config{
			Endpoints:   []string{nodes[0].Addr(), nodes[1].Addr()},
			MaxRetries:  1000,
			BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond,
		})
		if err != nil {
			rt.Fatalf("new: %v", err)
		}
		defer c.Close()

		ctx := context.Background()
		model := map[string]modelEntry{}
		var rev uint64
		writes := 0
		steps := rapid.IntRange(1, 25).Draw(rt, "steps")
		for range steps {
			target := nodes[rapid.IntRange(0, 1).Draw(rt, "node")]
			fault := rapid.SampledFrom([]string{"none", "unavailable", "lose", "expire", "down"}).Draw(rt, "fault")
			switch fault {
			case "unavailable":
				target.Fail("", codes.Unavailable, "no leader known", rapid.IntRange(1, 3).Draw(rt, "times"))
			case "lose":
				target.LoseReplies("", 1)
			case "expire":
				store.ExpireSessions()
			case "down":
				target.Stop()
			}
			key := rapid.SampledFrom([]string{"a", "b", "c"}).Draw(rt, "key")
			cur, exists := model[key]
			switch op := rapid.SampledFrom([]string{"put", "delete", "cas", "get"}).Draw(rt, "op"); op {
			case "put":
				val := rapid.StringN(0, 4, 4).Draw(rt, "value")
				res, err := c.Put(ctx, []byte(key), []byte(val))
				if err != nil {
					rt.Fatalf("put: %v", err)
				}
				rev++
				writes++
				if res.Existed != exists || res.Version != rev {
					rt.Fatalf("put %s: got existed=%v version=%d, want %v %d", key, res.Existed, res.Version, exists, rev)
				}
				model[key] = modelEntry{val, rev}
			case "delete":
				res, err := c.Delete(ctx, []byte(key))
				if err != nil {
					rt.Fatalf("delete: %v", err)
				}
				rev++
				writes++
				if res.Existed != exists {
					rt.Fatalf("delete %s: got existed=%v, want %v", key, res.Existed, exists)
				}
				delete(model, key)
			case "cas":
				expected := cur.version
				if rapid.Bool().Draw(rt, "stale") {
					expected += 1 + uint64(rapid.IntRange(0, 2).Draw(rt, "off"))
				}
				res, err := c.CompareAndSwap(ctx, []byte(key), expected, []byte("cas"))
				if err != nil {
					rt.Fatalf("cas: %v", err)
				}
				writes++
				want := expected == cur.version
				if res.Succeeded != want {
					rt.Fatalf("cas %s expecting %d (current %d): succeeded=%v", key, expected, cur.version, res.Succeeded)
				}
				if want {
					rev++
					model[key] = modelEntry{"cas", rev}
				} else if res.Version != cur.version || res.Exists != exists {
					rt.Fatalf("failed cas %s reported version %d exists %v, want %d %v", key, res.Version, res.Exists, cur.version, exists)
				}
			case "get":
				res, err := c.Get(ctx, []byte(key))
				if err != nil {
					rt.Fatalf("get: %v", err)
				}
				if res.Found != exists || string(res.Value) != cur.value || res.Version != cur.version {
					rt.Fatalf("get %s: got %v %q v%d, want %v %q v%d", key, res.Found, res.Value, res.Version, exists, cur.value, cur.version)
				}
			}
			if fault == "down" {
				if err := target.Restart(); err != nil {
					rt.Fatalf("restart: %v", err)
				}
			}
		}
		if got := store.Applied(); got != writes {
			rt.Fatalf("store applied %d writes, client made %d", got, writes)
		}
		if v := store.Violations(); len(v) > 0 {
			rt.Fatalf("session rule violations: %v", v)
		}
	})
}
