package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestStringNamesTheCommandAndTheGoRelease(t *testing.T) {
	s := String("kvctl")
	if !strings.HasPrefix(s, "kvctl ") || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("version line %q lacks the name or %s", s, runtime.Version())
	}
}

func TestCommitIsShortAndSaysWhenModified(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "2292653e9f1a0b1c2d3e4f5a6b7c8d9e0f1a2b3c"}}
	if got := commit(rev); got != "commit 2292653e9f1a" {
		t.Errorf("clean build: %q", got)
	}
	if got := commit(append(rev, debug.BuildSetting{Key: "vcs.modified", Value: "true"})); got != "commit 2292653e9f1a, modified" {
		t.Errorf("modified build: %q", got)
	}
	if got := commit(nil); got != "commit unknown" {
		t.Errorf("no version control information: %q", got)
	}
}
