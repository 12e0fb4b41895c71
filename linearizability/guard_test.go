package linearizability

import (
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The simulator calls this package, so it must be as deterministic as the
// simulator: no goroutines of its own, no clock reads, no global randomness,
// and no behaviour that depends on map iteration order. This test reads the
// package's own (non-test) source and fails on any of them.
func TestPackageIsDeterministic(t *testing.T) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatalf("list package directory: %v", err)
	}
	var files []*ast.File
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		t.Fatal("no source files found")
	}

	info := &types.Info{Types: make(map[ast.Expr]types.TypeAndValue)}
	conf := types.Config{Importer: importer.ForCompiler(fset, "source", nil)}
	if _, err := conf.Check("linearizability", fset, files, info); err != nil {
		t.Fatalf("type-check package: %v", err)
	}

	forbiddenImports := map[string]string{
		"math/rand":    "global randomness",
		"math/rand/v2": "global randomness",
		"crypto/rand":  "randomness",
		"os":           "file or environment access (Porcupine writes the visualization)",
	}
	// Map ranges are allowed only where the keys are sorted before use.
	sortedRanges := map[string]bool{"sortedKeys": true}

	for _, f := range files {
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if why, bad := forbiddenImports[path]; bad {
				t.Errorf("%v: imports %s: %s", fset.Position(imp.Pos()), path, why)
			}
		}
		for _, decl := range f.Decls {
			fn, _ := decl.(*ast.FuncDecl)
			ast.Inspect(decl, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.GoStmt:
					t.Errorf("%v: go statement: the package must start no goroutines", fset.Position(n.Pos()))
				case *ast.SelectorExpr:
					if pkg, ok := n.X.(*ast.Ident); ok && pkg.Name == "time" && n.Sel.Name != "Duration" {
						t.Errorf("%v: time.%s: only time.Duration may be used; the caller supplies all times",
							fset.Position(n.Pos()), n.Sel.Name)
					}
				case *ast.RangeStmt:
					if _, isMap := info.TypeOf(n.X).Underlying().(*types.Map); isMap &&
						(fn == nil || !sortedRanges[fn.Name.Name]) {
						t.Errorf("%v: range over a map: iteration order is random; collect and sort the keys",
							fset.Position(n.Pos()))
					}
				}
				return true
			})
		}
	}
}
