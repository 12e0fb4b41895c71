package sim

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestMain collects garbage at 4× the live heap rather than 2×, as kvsim
// does (see tuneGC there): the runs' outcomes do not change, their CPU does.
func TestMain(m *testing.M) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	os.Exit(m.Run())
}
