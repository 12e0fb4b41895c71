//go:build !unix

package fakekv

import "io"

// reservePort is a no-op where raw sockets are not at hand: a stopped
// node's port is simply free, and Restart may find it taken.
func reservePort(string) (io.Closer, error) { return nopCloser{}, nil }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
