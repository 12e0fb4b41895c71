package main

import "syscall"

// childAttrs puts a child in its own process group, so a Ctrl-C at the
// terminal reaches only the driver (which then stops the children in
// order), and has the kernel SIGKILL it if the driver dies without
// cleaning up (a crash, or kill -9 of the driver).
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
