package core

import (
	"testing"

	"github.com/therealutkarshpriyadarshi/keyval/internal/detguard"
)

// TestCoreIsDeterministic parses core's source and fails on anything that
// could make the same inputs give different outputs: forbidden imports, go
// statements, channels, select, global math/rand functions, and ranging
// over a map (whose order Go randomizes).
func TestCoreIsDeterministic(t *testing.T) {
	violations, err := detguard.Check(".", detguard.Core)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range violations {
		t.Error(v)
	}
}
