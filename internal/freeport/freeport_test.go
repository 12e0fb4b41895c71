package freeport

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoopbackNeverRepeatsAndAvoidsEphemeralPorts(t *testing.T) {
	lo, hi := ephemeralRange()
	seen := map[string]bool{}
	for range 500 {
		addr, err := Loopback()
		require.NoError(t, err)
		require.False(t, seen[addr], "handed out twice: %s", addr)
		seen[addr] = true
		_, p, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		port, err := strconv.Atoi(p)
		require.NoError(t, err)
		require.False(t, port >= lo && port <= hi, "port %d is in the ephemeral range %d-%d", port, lo, hi)
		require.GreaterOrEqual(t, port, lowest)
	}
}

func TestLoopbackSkipsPortsInUse(t *testing.T) {
	// Occupy many non-ephemeral ports; none of them may be handed out.
	var held []net.Listener
	busy := map[string]bool{}
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range 200 {
		addr, err := Loopback()
		require.NoError(t, err)
		mu.Lock()
		delete(issued, portOf(t, addr)) // pretend we never handed it out
		mu.Unlock()
		l, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		held = append(held, l)
		busy[addr] = true
	}
	for range 500 {
		addr, err := Loopback()
		require.NoError(t, err)
		require.False(t, busy[addr], "handed out a port in use: %s", addr)
	}
}

func portOf(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	port, err := strconv.Atoi(p)
	require.NoError(t, err)
	return port
}
