// Package peerpb holds the gRPC Peer service that KeyVal nodes serve each
// other and the messages only its streams use (acknowledgements, snapshot
// chunks). The Raft messages the streams carry, and their conversion to and
// from core, are raftpb's. The Go code is generated from peer.proto by `make
// proto`; docs/net.md describes the streams.
package peerpb
