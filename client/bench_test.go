package client

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// The benchmarks run against the in-process fake over loopback gRPC, so
// they measure the client's cost on top of gRPC's, not a server. The Raw
// variants call the generated stub directly: the difference is the
// client's own overhead (deadline, session, retry bookkeeping).

func benchClient(b *testing.B) (*Client, string) {
	_, nodes := startCluster(b, 1)
	c := newClient(b, Config{Endpoints: addrs(nodes...)})
	return c, nodes[0].Addr()
}

func BenchmarkGet(b *testing.B) {
	c, _ := benchClient(b)
	ctx := context.Background()
	key := []byte("key")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Get(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawGet(b *testing.B) {
	_, addr := benchClient(b)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	kv := apipb.NewKVClient(conn)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kv.Get(ctx, &apipb.GetRequest{Key: []byte("key")}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPut(b *testing.B) {
	c, _ := benchClient(b)
	ctx := context.Background()
	key, value := []byte("key"), make([]byte, 100)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Put(ctx, key, value); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPutParallel(b *testing.B) {
	c, _ := benchClient(b)
	ctx := context.Background()
	value := make([]byte, 100)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := []byte("key")
		for pb.Next() {
			if _, err := c.Put(ctx, key, value); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPutConcurrent compares the two call paths with 64 writers: the
// fake server runs in the same process, so ns/op is the CPU of both ends
// of the gRPC conversation per put.
func BenchmarkPutConcurrent(b *testing.B) {
	for _, path := range []struct {
		name  string
		unary bool
	}{{"pipeline", false}, {"unary", true}} {
		b.Run(path.name, func(b *testing.B) {
			_, nodes := startCluster(b, 1)
			c, err := New(Config{Endpoints: addrs(nodes...), Unary: path.unary})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			value := make([]byte, 256)
			b.SetParallelism(32) // 64 goroutines on 2 cores
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				key := []byte("key")
				for pb.Next() {
					if _, err := c.Put(ctx, key, value); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
