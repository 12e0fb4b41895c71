//go:build !linux

package kvstore

import "go.etcd.io/bbolt"

// dropMapped does nothing here: see mapped_linux.go.
func dropMapped(*bbolt.Tx) {}
