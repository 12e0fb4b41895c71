package main

import "syscall"

// freeBytes is how many bytes an unprivileged writer may still put on the
// file system holding path.
func freeBytes(path string) (int64, bool, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, false, err
	}
	return int64(st.Bavail) * st.Bsize, true, nil
}
