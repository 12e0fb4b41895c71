package qb

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/therealutkarshpriyadarshi/keyval/client/apipb"
)

func TestLoad(t *testing.T) {
	for _, clients := range []int{1, 16, 64, 256} {
		conns := make([]apipb.KVClient, 16)
		for i := range conns {
			c, _ := grpc.NewClient("127.0.0.1:2379", grpc.WithTransportCredentials(insecure.NewCredentials()))
			conns[i] = apipb.NewKVClient(c)
		}
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		start := time.Now()
		dur := 4 * time.Second
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				val := make([]byte, 256)
				kv := conns[i%len(conns)]
				var mine []time.Duration
				for n := 0; time.Since(start) < dur; n++ {
					t0 := time.Now()
					_, err := kv.Put(context.Background(), &apipb.PutRequest{Key: []byte(fmt.Sprintf("%08d", (i*7919+n)%100000)), Value: val})
					if err != nil { continue }
					mine = append(mine, time.Since(t0))
				}
				mu.Lock(); lat = append(lat, mine...); mu.Unlock()
			}(i)
		}
		wg.Wait()
		el := time.Since(start)
		sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
		fmt.Printf("clients=%d writes/s=%.0f p50=%v p99=%v\n", clients, float64(len(lat))/el.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100])
	}
}
