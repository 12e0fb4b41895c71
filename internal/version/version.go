// Package version says which build of a KeyVal command is running, from
// what the Go toolchain stamps into every binary: the module version, the
// commit it was built from, and the Go release. Nothing is set by hand, so
// it cannot go stale.
package version

import (
	"errors"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

// String is one line naming the build of command name, e.g.
//
//	kvctl v0.0.0-20261202163105-2292653e9f1a+dirty (commit 2292653e9f1a, modified; go1.26.8 linux/amd64)
func String(name string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return fmt.Sprintf("%s (no build information; %s %s/%s)", name, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	return fmt.Sprintf("%s %s (%s; %s %s/%s)", name, info.Main.Version, commit(info.Settings), info.GoVersion, runtime.GOOS, runtime.GOARCH)
}

// commit describes the version control state of the build: `go run` and
// `go test`, or a build outside a checkout, record none.
func commit(settings []debug.BuildSetting) string {
	var rev, modified string
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "commit unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		return "commit " + rev + ", modified"
	}
	return "commit " + rev
}

// Usage is the help text of every command's --version flag.
const Usage = "print the version (module version, commit, Go release) and exit"

// ErrRequested is what a command's flag parsing returns when --version was
// given, as flag.ErrHelp for --help: the caller prints String and exits 0.
var ErrRequested = errors.New("version requested")

// AddFlag registers --version on fs; the result is whether it was given.
func AddFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("version", false, Usage)
}
