//go:build !linux

package main

import "syscall"

// childAttrs puts a child in its own process group, so a Ctrl-C at the
// terminal reaches only the driver, which then stops the children. (Only
// Linux can also have the kernel kill children when the driver dies.)
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
