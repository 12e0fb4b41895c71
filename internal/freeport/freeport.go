// Package freeport hands out loopback TCP addresses for test clusters and
// local benchmark clusters, whose members must know each other's addresses
// before any of them listens.
//
// Asking the kernel for port 0 and closing the listener is not enough: the
// kernel may hand the same port out again to the next caller in this
// process, or use it as the local port of an outgoing connection before the
// member binds it. So ports come from outside the kernel's ephemeral range
// and are never handed out twice by one process.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Ports below lowest are left to well-known services.
const lowest = 10000

var (
	mu     sync.Mutex
	issued = map[int]bool{}
)

// Loopback returns "127.0.0.1:<port>" for a port nothing listened on when
// it was checked and that this process has not handed out before.
func Loopback() (string, error) {
	return On("127.0.0.1")
}

// On is Loopback for another local address (a network namespace's, say).
func On(host string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	lo, hi := ephemeralRange()
	for range 1000 {
		port := lowest + rand.IntN(65536-lowest)
		if (port >= lo && port <= hi) || issued[port] {
			continue
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // in use by someone else
		}
		_ = l.Close()
		issued[port] = true
		return addr, nil
	}
	return "", fmt.Errorf("no free port on %s after 1000 tries", host)
}

// ephemeralRange is the kernel's range for outgoing connections' local
// ports, or the Linux default when it cannot be read.
func ephemeralRange() (int, int) {
	lo, hi := 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || l > h {
		return lo, hi
	}
	return l, h
}
