package doctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the directory holding go.mod, above the test's directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

func writeDoc(t *testing.T, text string) (root, rel string) {
	t.Helper()
	root = t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "doc.md"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, "doc.md"
}

func TestCommandsOfMarkedBlocks(t *testing.T) {
	root, rel := writeDoc(t, strings.Join([]string{
		"# A document",
		"<!-- doctest -->",
		"```",
		"make cluster-start",
		"./bin/kvctl put k v        # OK (version 1)",
		"",
		"./bin/kvctl cas k 7 w      # cas failed   (exit 1)",
		"./bin/keyvald --id 4 \\",
		"    --join 127.0.0.1:2379 &",
		"```",
		"<!-- doctest: skip takes ten minutes -->",
		"```sh",
		"make chaos-test",
		"```",
		"```text",
		"OK (version 1)",
		"```",
		"<!--doctest-->",
		"```console",
		"$ ./bin/kvctl get k",
		"v",
		"```",
	}, "\n"))
	cmds, errs := Check(root, rel)
	if len(errs) > 0 {
		t.Fatalf("Check: %v", errs)
	}
	want := []Command{
		{File: rel, Line: 4, Text: "make cluster-start"},
		{File: rel, Line: 5, Text: "./bin/kvctl put k v        # OK (version 1)"},
		{File: rel, Line: 7, Text: "./bin/kvctl cas k 7 w      # cas failed   (exit 1)", WantExit: 1},
		{File: rel, Line: 8, Text: "./bin/keyvald --id 4 \\\n    --join 127.0.0.1:2379 &"},
		{File: rel, Line: 20, Text: "./bin/kvctl get k"},
	}
	if !reflect.DeepEqual(cmds, want) {
		t.Errorf("commands:\n got %q\nwant %q", cmds, want)
	}
}

func TestMarkerProblemsAreReported(t *testing.T) {
	for name, tc := range map[string]struct{ doc, want string }{
		"unmarked shell block": {"```\nls\n```\n", "without a doctest marker"},
		"unmarked sh block":    {"```sh\nls\n```\n", "without a doctest marker"},
		"skip without reason":  {"<!-- doctest: skip -->\n```\nls\n```\n", "needs a reason"},
		"unknown directive":    {"<!-- doctest: maybe -->\n```\nls\n```\n", "unknown doctest directive"},
		"malformed":            {"<!-- doctest run -->\n```\nls\n```\n", "malformed"},
		"marker not before":    {"<!-- doctest -->\n\n```\nls\n```\n", "just before"},
		"marker at the end":    {"text\n<!-- doctest -->\n", "just before"},
		"marker on go code":    {"<!-- doctest -->\n```go\nx := 1\n```\n", "holds no commands"},
		"nothing to run":       {"<!-- doctest -->\n```\n# a comment\n```\n", "no command"},
		"unclosed block":       {"<!-- doctest -->\n```\nls\n", "never closed"},
	} {
		t.Run(name, func(t *testing.T) {
			root, rel := writeDoc(t, tc.doc)
			_, errs := Check(root, rel)
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Errorf("errors %v, want one saying %q", errs, tc.want)
			}
		})
	}
}

// TestEveryDocumentMarksItsExamples keeps the documents runnable by
// make doc-test: every shell block says whether it runs, and every command
// that runs is at least valid shell.
func TestEveryDocumentMarksItsExamples(t *testing.T) {
	root := repoRoot(t)
	docs, err := Documents(root)
	if err != nil {
		t.Fatal(err)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to check the commands' syntax: %v", err)
	}
	for _, rel := range docs {
		cmds, errs := Check(root, rel)
		for _, err := range errs {
			t.Error(err)
		}
		for _, c := range cmds {
			if out, err := exec.Command(bash, "-n", "-c", c.Text).CombinedOutput(); err != nil {
				t.Errorf("%v: not valid shell: %v\n%s", c, err, out)
			}
		}
	}
}

// TestExamplesNameRealPathsAndTargets catches examples gone stale without
// running them, the skipped ones too: every ./path a command names (other
// than built binaries) exists, and every make target is in the Makefile.
func TestExamplesNameRealPathsAndTargets(t *testing.T) {
	root := repoRoot(t)
	targets := makeTargets(t, root)
	docs, err := Documents(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range docs {
		blocks, err := Parse(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			if !IsShell(b.Info) {
				continue
			}
			b.File = rel
			for _, c := range b.Commands() {
				for _, why := range staleNames(root, targets, c) {
					t.Errorf("%v: %s", c, why)
				}
			}
		}
	}
}

// staleNames lists the paths and make targets a command names that do not
// exist.
func staleNames(root string, targets map[string]bool, c Command) []string {
	var stale []string
	words := shellWords(c.Text)
	for i, w := range words {
		if strings.HasPrefix(w, "#") {
			break
		}
		if p, ok := strings.CutPrefix(w, "./"); ok && !strings.HasPrefix(p, "bin/") {
			p = strings.TrimSuffix(strings.TrimSuffix(p, "..."), "/")
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				stale = append(stale, fmt.Sprintf("%s does not exist", w))
			}
		}
		if w != "make" {
			continue
		}
		for _, arg := range words[i+1:] {
			if strings.HasPrefix(arg, "-") || strings.Contains(arg, "=") {
				continue // a flag or a variable
			}
			if strings.ContainsAny(arg, "&;|#<>") {
				break
			}
			if !targets[arg] {
				stale = append(stale, fmt.Sprintf("the Makefile has no target %q", arg))
			}
		}
	}
	return stale
}

// shellWords splits a command line into words as the shell does for
// quoting: text in single or double quotes, spaces included, stays in one
// word (VAR='a b' is one word, a variable). Escapes and expansions are
// not interpreted: the doc's commands need only this to be told apart.
func shellWords(line string) []string {
	var (
		words  []string
		word   strings.Builder
		inWord bool
		quote  rune
	)
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				word.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words, inWord = append(words, word.String()), false
				word.Reset()
			}
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, word.String())
	}
	return words
}

func TestShellWords(t *testing.T) {
	got := shellWords(`make bench-compare BENCH_COMPARE_FLAGS='--dir x --timeout 31m' X="a b" ''  last`)
	want := []string{"make", "bench-compare", "BENCH_COMPARE_FLAGS=--dir x --timeout 31m", "X=a b", "", "last"}
	if !slices.Equal(got, want) {
		t.Fatalf("shellWords = %q, want %q", got, want)
	}
}

var targetRE = regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*)\s*:([^=]|$)`)

// makeTargets lists the Makefile's rule names.
func makeTargets(t *testing.T, root string) map[string]bool {
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, g := range targetRE.FindAllStringSubmatch(string(b), -1) {
		out[g[1]] = true
	}
	return out
}

func TestStaleNamesAreCaught(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "Makefile"), []byte("X := 1\nbuild:\n\tgo build\nsim: build\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "core"), 0o755); err != nil {
		t.Fatal(err)
	}
	targets := makeTargets(t, root)
	for text, wantErr := range map[string]bool{
		"go test ./core/ -run X":           false,
		"go test ./core/...":               false,
		"./bin/kvctl get k":                false,
		"make sim SEED=4 && ./bin/kvctl x": false,
		"make build   # not ./old/":        false,
		"go test ./server/replica/":        true,
		"make X":                           true,
		"make sim cluster-start":           true,
	} {
		stale := staleNames(root, targets, Command{File: "doc.md", Line: 1, Text: text})
		if (len(stale) > 0) != wantErr {
			t.Errorf("%q: reported %q, want an error: %v", text, stale, wantErr)
		}
	}
}
