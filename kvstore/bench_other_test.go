//go:build !linux

package kvstore

import "time"

// onTmpfs cannot tell on this platform; KVSTORE_BENCH_DIR can point the
// benchmarks at a real disk.
func onTmpfs(string) bool { return false }

// processCPU is not measured on this platform.
func processCPU() time.Duration { return 0 }
