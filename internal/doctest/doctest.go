// Package doctest finds the shell examples in KeyVal's documents, so that
// one test can run them against a real cluster (`make doc-test`) and
// another can insist that every example says whether it runs.
//
// A fenced block whose info string is empty or a shell (sh, shell, bash,
// console) holds commands, and the line just before its opening fence
// must be a marker:
//
//	<!-- doctest -->                  run every command of the block, in order
//	<!-- doctest: skip REASON -->     do not run it, because REASON
//
// Output samples, code and configuration go in blocks with another info
// string (text, go, yaml, ...), which need no marker.
//
// A command is one line, or several joined by a trailing backslash. A
// comment ending in "(exit N)" says the command is expected to exit with
// status N rather than 0. In a block where some lines start with "$ ", only
// those lines are commands and the others are their output.
package doctest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Block is one fenced code block of a document.
type Block struct {
	// File is the document's path as given to Parse; Line is the line of
	// the opening fence (1-based).
	File string
	Line int
	Info string
	// Marker is the doctest comment before the block, nil if none.
	Marker *Marker
	// Body holds the lines between the fences; Body[i] is on line Line+1+i.
	Body []string
}

// Marker is a doctest comment.
type Marker struct {
	Line int
	// Run is true for "doctest", false for "doctest: skip".
	Run bool
	// Reason says why a skipped block does not run.
	Reason string
}

// Command is one command of a runnable block.
type Command struct {
	File string
	Line int
	// Text is the command as typed, continuation lines joined.
	Text string
	// WantExit is the exit status the document promises.
	WantExit int
}

func (c Command) String() string {
	if c.Line == 0 {
		return fmt.Sprintf("%s: %s", c.File, c.Text)
	}
	return fmt.Sprintf("%s:%d: %s", c.File, c.Line, c.Text)
}

// IsShell reports whether a block's info string says it holds commands.
func IsShell(info string) bool {
	lang, _, _ := strings.Cut(info, " ")
	return slices.Contains([]string{"", "sh", "shell", "bash", "console"}, lang)
}

var markerRE = regexp.MustCompile(`^<!--\s*doctest(?::\s*(\S+)\s*(.*?))?\s*-->$`)

// parseMarker reads a marker line; ok is false if the line is not a
// doctest comment at all, err set if it is one but malformed.
func parseMarker(line string, lineNo int) (m *Marker, ok bool, err error) {
	s := strings.TrimSpace(line)
	if !strings.HasPrefix(s, "<!--") || !strings.Contains(s, "doctest") {
		return nil, false, nil
	}
	g := markerRE.FindStringSubmatch(s)
	switch {
	case g == nil:
		return nil, true, fmt.Errorf("line %d: malformed doctest marker %q: want <!-- doctest --> or <!-- doctest: skip REASON -->", lineNo, s)
	case g[1] == "":
		return &Marker{Line: lineNo, Run: true}, true, nil
	case g[1] != "skip":
		return nil, true, fmt.Errorf("line %d: unknown doctest directive %q: want <!-- doctest --> or <!-- doctest: skip REASON -->", lineNo, g[1])
	case g[2] == "":
		return nil, true, fmt.Errorf("line %d: a doctest skip needs a reason: <!-- doctest: skip REASON -->", lineNo)
	}
	return &Marker{Line: lineNo, Reason: g[2]}, true, nil
}

// Parse reads the fenced blocks of the Markdown document at path. A marker
// that is malformed or precedes no code block is an error.
func Parse(path string) ([]Block, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read document: %w", err)
	}
	defer f.Close()
	var (
		blocks  []Block
		cur     *Block
		fence   string
		pending *Marker
		lineNo  int
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if cur != nil {
			if strings.TrimSpace(line) == fence {
				blocks = append(blocks, *cur)
				cur = nil
				continue
			}
			cur.Body = append(cur.Body, line)
			continue
		}
		if fc, info, ok := openingFence(line); ok {
			cur = &Block{File: path, Line: lineNo, Info: info, Marker: pending}
			fence, pending = fc, nil
			continue
		}
		m, isMarker, err := parseMarker(line, lineNo)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if pending != nil {
			return nil, fmt.Errorf("%s:%d: a doctest marker must be on the line just before a code block's opening fence", path, pending.Line)
		}
		if isMarker {
			pending = m
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if cur != nil {
		return nil, fmt.Errorf("%s:%d: code block never closed", path, cur.Line)
	}
	if pending != nil {
		return nil, fmt.Errorf("%s:%d: a doctest marker must be on the line just before a code block's opening fence", path, pending.Line)
	}
	return blocks, nil
}

// openingFence recognises ``` or ~~~ fences (three or more), returning the
// fence that closes the block and the info string.
func openingFence(line string) (fence, info string, ok bool) {
	s := strings.TrimSpace(line)
	for _, c := range []string{"`", "~"} {
		n := len(s) - len(strings.TrimLeft(s, c))
		if n >= 3 {
			return s[:n], strings.TrimSpace(s[n:]), true
		}
	}
	return "", "", false
}

var exitRE = regexp.MustCompile(`\(exit (\d+)\)\s*$`)

// Commands splits a block into its commands.
func (b Block) Commands() []Command {
	transcript := slices.ContainsFunc(b.Body, func(l string) bool { return strings.HasPrefix(l, "$ ") })
	var out []Command
	var cur *Command
	for i, line := range b.Body {
		lineNo := b.Line + 1 + i
		if cur != nil {
			cur.Text += "\n" + line
		} else {
			text := line
			if transcript {
				var ok bool
				if text, ok = strings.CutPrefix(line, "$ "); !ok {
					continue // output
				}
			}
			trimmed := strings.TrimSpace(text)
			if trimmed == "" || strings.HasPrefix(trimmed, "#") {
				continue
			}
			cur = &Command{File: b.File, Line: lineNo, Text: text}
		}
		if strings.HasSuffix(line, `\`) {
			continue
		}
		if g := exitRE.FindStringSubmatch(line); g != nil && strings.Contains(line, "#") {
			cur.WantExit, _ = strconv.Atoi(g[1])
		}
		out = append(out, *cur)
		cur = nil
	}
	if cur != nil {
		out = append(out, *cur)
	}
	return out
}

// Documents lists the documents whose examples are checked, relative to the
// repository root: README.md first, then docs/*.md in name order.
func Documents(root string) ([]string, error) {
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return nil, err
	}
	slices.Sort(docs)
	out := []string{"README.md"}
	for _, d := range docs {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			return nil, err
		}
		out = append(out, rel)
	}
	return out, nil
}

// Check parses a document (path relative to root) and returns its
// runnable commands, or every problem with its markers: a shell block
// without a marker, a marker on a block that holds no commands, or a
// runnable block with no command in it.
func Check(root, rel string) ([]Command, []error) {
	blocks, err := Parse(filepath.Join(root, rel))
	if err != nil {
		return nil, []error{err}
	}
	var cmds []Command
	var errs []error
	for _, b := range blocks {
		b.File = rel
		shell := IsShell(b.Info)
		switch {
		case b.Marker == nil && shell:
			errs = append(errs, fmt.Errorf("%s:%d: a shell block without a doctest marker: put <!-- doctest --> or <!-- doctest: skip REASON --> on the line before it, or give an output sample the info string text", rel, b.Line))
		case b.Marker != nil && !shell:
			errs = append(errs, fmt.Errorf("%s:%d: a doctest marker on a %q block, which holds no commands", rel, b.Marker.Line, b.Info))
		case b.Marker != nil && b.Marker.Run:
			bc := b.Commands()
			if len(bc) == 0 {
				errs = append(errs, fmt.Errorf("%s:%d: a runnable block with no command in it", rel, b.Line))
			}
			cmds = append(cmds, bc...)
		}
	}
	return cmds, errs
}
