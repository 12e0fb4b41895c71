package fakekv

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// A stopped node refuses connections and comes back on the same address.
// (That the reservation keeps the port from ephemeral ports of other
// sockets is the kernel's doing and not checked here.)
func TestStopHoldsPortAndRestartReusesIt(t *testing.T) {
	s := NewStore()
	defer s.Close()
	n, err := s.StartNode(1)
	require.NoError(t, err)
	addr := n.Addr()

	n.Stop()
	_, err = net.Dial("tcp", addr)
	require.Error(t, err, "a stopped node refuses connections")

	require.NoError(t, n.Restart())
	require.Equal(t, addr, n.Addr())
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	require.NoError(t, conn.Close())
}
