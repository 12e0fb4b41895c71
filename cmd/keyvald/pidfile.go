package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// pidFileName holds keyvald's process id in its data directory, for tools
// that stop members they did not start (make cluster-stop stops every
// member under .cluster, those started by hand too). It is written once
// the node holds the directory (server.New has locked it) and removed on a
// clean exit; after a crash it names a process that is gone, which such
// tools check.
const pidFileName = "keyvald.pid"

// writePIDFile records this process in dir and returns what removes the
// record again, if it still names this process. The file is a convenience
// for tools: failing to write it is logged, not fatal.
func writePIDFile(dir string, log *slog.Logger) (remove func()) {
	path := filepath.Join(dir, pidFileName)
	pid := strconv.Itoa(os.Getpid())
	if err := os.WriteFile(path, []byte(pid+"\n"), 0o644); err != nil {
		log.Warn("could not write the pid file", "file", path, "err", err)
		return func() {}
	}
	return func() {
		if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == pid {
			_ = os.Remove(path)
		}
	}
}
