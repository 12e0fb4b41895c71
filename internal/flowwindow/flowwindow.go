// Package flowwindow gives gRPC connections fixed HTTP/2 flow-control
// windows instead of gRPC's default, which starts at 64 KiB and grows by
// estimating the bandwidth-delay product. The estimate is made by pinging:
// a receiver that gets data while no estimate is under way answers it with
// a window update and a PING, and the sender answers the PING. For
// KeyVal's traffic — small messages, one or a few at a time, each answered
// quickly — that is nearly every message, so every Raft message and every
// client call cost two extra frames, two extra syscalls and a goroutine
// wake-up on each side (seen with strace on a follower: 13 writes per
// client put at one client). Fixed windows end that: 4 MiB a stream is
// more than one of KeyVal's messages or calls usually carries, so flow
// control holds one back only when it is larger (it then goes in
// window-sized pieces) or its receiver stops reading.
//
// The windows are credit, not buffers: memory is used only by data a
// receiver has not read yet, and every KeyVal stream reads as it goes.
package flowwindow

import "google.golang.org/grpc"

const (
	// Stream is each stream's window: a Raft stream's largest batch of
	// entries or a client's largest call is sent in window-sized pieces,
	// one round trip each, past it.
	Stream = 4 << 20
	// Conn is the connection's window, shared by its streams.
	Conn = 16 << 20
)

// ServerOptions fixes the windows of a gRPC server's connections.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StaticStreamWindowSize(Stream), grpc.StaticConnWindowSize(Conn)}
}

// DialOptions fixes the windows of a gRPC client connection.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStaticStreamWindowSize(Stream), grpc.WithStaticConnWindowSize(Conn)}
}
