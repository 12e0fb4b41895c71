package doctest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const modulePath = "github.com/therealutkarshpriyadarshi/keyval/"

// TestArchitectureImports keeps docs/ARCHITECTURE.md's package table true:
// for every top-level package, the KeyVal packages outside it that it (or
// a package under it) imports, test files aside.
func TestArchitectureImports(t *testing.T) {
	root := repoRoot(t)
	want := goListImports(t, root)
	got := documentedImports(t, filepath.Join(root, "docs", "ARCHITECTURE.md"))
	for _, group := range sortedKeys(want) {
		doc, ok := got[group]
		if !ok {
			t.Errorf("docs/ARCHITECTURE.md: no row for %s/ (it imports %s)", group, strings.Join(want[group], ", "))
			continue
		}
		if !slices.Equal(doc, want[group]) {
			t.Errorf("docs/ARCHITECTURE.md: %s/ imports %s, the table says %s", group, orNone(want[group]), orNone(doc))
		}
	}
	for _, group := range sortedKeys(got) {
		if _, ok := want[group]; !ok {
			t.Errorf("docs/ARCHITECTURE.md: a row for %s/, which is no package", group)
		}
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "—"
	}
	return strings.Join(s, ", ")
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// goListImports groups the module's packages by their first path element
// and lists what each group imports from the others.
func goListImports(t *testing.T, root string) map[string][]string {
	cmd := exec.Command("go", "list", "-e", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	sets := map[string]map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], modulePath)
		if !ok {
			continue
		}
		group, _, _ := strings.Cut(pkg, "/")
		if sets[group] == nil {
			sets[group] = map[string]bool{}
		}
		for _, imp := range fields[1:] {
			imp, ok := strings.CutPrefix(imp, modulePath)
			if first, _, _ := strings.Cut(imp, "/"); ok && first != group {
				sets[group][imp] = true
			}
		}
	}
	groups := map[string][]string{}
	for g, set := range sets {
		groups[g] = []string{}
		for imp := range set {
			groups[g] = append(groups[g], imp)
		}
		slices.Sort(groups[g])
	}
	return groups
}

var tableRowRE = regexp.MustCompile("^\\| `([a-z0-9]+)/` \\|.*\\| ([^|]*) \\|$")

// documentedImports reads the package table: the last column of each row
// whose first names a top-level package.
func documentedImports(t *testing.T, path string) map[string][]string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		g := tableRowRE.FindStringSubmatch(line)
		if g == nil {
			continue
		}
		imports := []string{}
		if col := strings.TrimSpace(g[2]); col != "—" {
			for _, imp := range strings.Split(col, ",") {
				imports = append(imports, strings.TrimSpace(imp))
			}
		}
		slices.Sort(imports)
		out[g[1]] = imports
	}
	return out
}
