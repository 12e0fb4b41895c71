package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// logSize is the current length of a log file (0 if it does not exist), to
// read later only what was written after this point.
func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// roleChanges counts keyvald's "role changed" log lines by the role taken.
// Every leader elected logs role=Leader once, so Leader counts elections
// won; Candidate counts elections started (a PreCandidate that wins its
// pre-vote becomes one); PreCandidate counts pre-votes started.
type roleChanges struct {
	Leader, Candidate, PreCandidate int
	// Lines are the Leader and Candidate lines themselves, for the report.
	Lines []string
}

func (r *roleChanges) add(o roleChanges) {
	r.Leader += o.Leader
	r.Candidate += o.Candidate
	r.PreCandidate += o.PreCandidate
	r.Lines = append(r.Lines, o.Lines...)
}

// readRoleChanges scans a member's log from offset.
func readRoleChanges(path string, offset int64) (roleChanges, error) {
	f, err := os.Open(path)
	if err != nil {
		return roleChanges{}, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return roleChanges{}, err
	}
	return scanRoleChanges(f)
}

// scanRoleChanges counts role changes in keyvald log output (text or JSON
// format).
func scanRoleChanges(r io.Reader) (roleChanges, error) {
	var rc roleChanges
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "role changed") {
			continue
		}
		switch {
		case hasField(line, "role", "Leader"):
			rc.Leader++
			rc.Lines = append(rc.Lines, line)
		case hasField(line, "role", "Candidate"):
			rc.Candidate++
			rc.Lines = append(rc.Lines, line)
		case hasField(line, "role", "PreCandidate"):
			rc.PreCandidate++
		}
	}
	if err := sc.Err(); err != nil {
		return rc, fmt.Errorf("reading log: %w", err)
	}
	return rc, nil
}

// hasField says whether a slog line has key=value (text) or
// "key":"value" (JSON).
func hasField(line, key, value string) bool {
	return strings.Contains(line, " "+key+"="+value+" ") || strings.HasSuffix(line, " "+key+"="+value) ||
		strings.Contains(line, `"`+key+`":"`+value+`"`)
}

// countLines counts lines of a member's log from offset that contain s.
func countLines(path string, offset int64, s string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0
	}
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// logTail returns the last n lines of a file, for error messages.
func logTail(path string, n int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
