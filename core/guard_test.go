package core

import (
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// forbiddenImports would let the core read a clock, start threads, touch
// the outside world or draw unseeded randomness.
var forbiddenImports = map[string]string{
	"time": "wall clock", "os": "I/O", "net": "I/O", "io/ioutil": "I/O", "syscall": "I/O",
	"sync": "threads", "sync/atomic": "threads", "runtime": "scheduler", "unsafe": "memory tricks",
	"math/rand":   "global randomness (use math/rand/v2 with a seeded source)",
	"crypto/rand": "unseeded randomness",
}

// allowedRand is what core may use from math/rand/v2: a source it seeds.
var allowedRand = map[string]bool{"New": true, "NewPCG": true, "Rand": true, "PCG": true}

// TestCoreIsDeterministic parses core's source and fails on anything that
// could make the same inputs give different outputs: forbidden imports, go
// statements, channels, select, global math/rand functions, and ranging
// over a map (whose order Go randomizes).
func TestCoreIsDeterministic(t *testing.T) {
	for _, v := range determinismViolations(t, ".") {
		t.Error(v)
	}
}

// The guard itself must catch each kind of violation.
func TestDeterminismGuardCatchesViolations(t *testing.T) {
	dir := t.TempDir()
	src := `package bad
import (
	"math/rand/v2"
	"time"
)
func f(m map[int]int, c chan int) {
	go func() {}()
	for k := range m { _ = k }
	select {}
	_ = rand.IntN(3)
	_ = time.Now()
	c <- 1
}
`
	if err := os.WriteFile(filepath.Join(dir, "bad.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(determinismViolations(t, dir), "\n")
	for _, want := range []string{`import "time"`, "go statement", "range over map", "select", "rand.IntN", "channel"} {
		if !strings.Contains(got, want) {
			t.Errorf("guard missed %q; it reported:\n%s", want, got)
		}
	}
}

func determinismViolations(t *testing.T, dir string) []string {
	t.Helper()
	fset := token.NewFileSet()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		t.Fatalf("no Go files in %s", dir)
	}
	// Type information tells a map from a slice in a range statement.
	info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}}
	conf := types.Config{Importer: importer.ForCompiler(fset, "source", nil), Error: func(error) {}}
	_, _ = conf.Check(files[0].Name.Name, fset, files, info)
	var out []string
	for _, f := range files {
		out = append(out, fileViolations(fset, f, info)...)
	}
	return out
}

func fileViolations(fset *token.FileSet, f *ast.File, info *types.Info) []string {
	var out []string
	report := func(n ast.Node, format string) {
		out = append(out, fset.Position(n.Pos()).String()+": "+format)
	}
	randName := ""
	for _, imp := range f.Imports {
		path := strings.Trim(imp.Path.Value, `"`)
		if why, bad := forbiddenImports[path]; bad {
			report(imp, `import "`+path+`" (`+why+`)`)
		}
		if path == "math/rand/v2" {
			randName = "rand"
			if imp.Name != nil {
				randName = imp.Name.Name
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			report(n, "go statement")
		case *ast.SelectStmt:
			report(n, "select statement")
		case *ast.ChanType:
			report(n, "channel type")
		case *ast.SendStmt:
			report(n, "channel send")
		case *ast.UnaryExpr:
			if n.Op == token.ARROW {
				report(n, "channel receive")
			}
		case *ast.SelectorExpr:
			if id, ok := n.X.(*ast.Ident); ok && randName != "" && id.Name == randName && !allowedRand[n.Sel.Name] {
				report(n, "global "+id.Name+"."+n.Sel.Name)
			}
		case *ast.RangeStmt:
			if tv, ok := info.Types[n.X]; ok {
				if _, isMap := tv.Type.Underlying().(*types.Map); isMap {
					report(n, "range over map (iteration order is random)")
				}
			}
		}
		return true
	})
	return out
}
