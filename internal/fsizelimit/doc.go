// Package fsizelimit lets a test make this process's file writes fail: it
// lowers the file size limit (RLIMIT_FSIZE, Linux), so that a write past
// it fails with EFBIG, the kernel's SIGXFSZ being ignored meanwhile, and
// lifts it again.
package fsizelimit
