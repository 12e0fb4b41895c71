//go:build !linux

package kvstore

// onTmpfs cannot tell on this platform; KVSTORE_BENCH_DIR can point the
// benchmarks at a real disk.
func onTmpfs(string) bool { return false }
