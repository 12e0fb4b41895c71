package disk

import "golang.org/x/sys/unix"

// onTmpfs reports whether dir is on a RAM-backed file system.
func onTmpfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC
}
