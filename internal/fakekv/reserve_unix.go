//go:build unix

package fakekv

import (
	"fmt"
	"io"
	"net/netip"
	"syscall"
)

// reservePort holds a stopped node's port: a socket bound to it but not
// listening, so connections are refused (as for a closed port) while no
// other socket on the machine can take the port before Restart. Restart can
// listen on the port while the reservation holds it, because both use
// SO_REUSEADDR and neither is listening at once.
func reservePort(addr string) (io.Closer, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("fakekv: reserve %s: not an IPv4 address: %v", addr, err)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, fmt.Errorf("fakekv: reserve %s: socket: %w", addr, err)
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("fakekv: reserve %s: SO_REUSEADDR: %w", addr, err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("fakekv: reserve %s: bind: %w", addr, err)
	}
	return fdCloser(fd), nil
}

type fdCloser int

func (f fdCloser) Close() error { return syscall.Close(int(f)) }
