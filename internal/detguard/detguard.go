// Package detguard checks Go source for anything that would make a
// deterministic package (core, sim) give different outputs for the same
// inputs: wall clocks, goroutines, channels, unseeded randomness, ranging
// over maps. Tests of those packages call Check on their own directory.
package detguard

import (
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"strings"
)

// Rules say what a package may not use.
type Rules struct {
	// Imports maps a forbidden import path to the reason.
	Imports map[string]string
	// Funcs maps a package path to its functions that are forbidden
	// (for packages that are allowed for their types, like time).
	Funcs map[string][]string
}

// Core is the strictest set: no clock, no threads, no I/O at all.
var Core = Rules{
	Imports: map[string]string{
		"time": "wall clock", "os": "I/O", "net": "I/O", "io/ioutil": "I/O", "syscall": "I/O",
		"sync": "threads", "sync/atomic": "threads", "runtime": "scheduler", "unsafe": "memory tricks",
		"math/rand":   "global randomness (use math/rand/v2 with a seeded source)",
		"crypto/rand": "unseeded randomness",
	},
	Funcs: map[string][]string{"math/rand/v2": randGlobals},
}

// Sim allows time's types (durations) but no clock, and no threads or I/O.
var Sim = Rules{
	Imports: map[string]string{
		"os": "I/O", "net": "I/O", "io/ioutil": "I/O", "syscall": "I/O",
		"sync": "threads", "sync/atomic": "threads", "runtime": "scheduler", "unsafe": "memory tricks",
		"math/rand":   "global randomness (use math/rand/v2 with a seeded source)",
		"crypto/rand": "unseeded randomness",
	},
	Funcs: map[string][]string{
		"math/rand/v2": randGlobals,
		"time":         {"Now", "Since", "Until", "Sleep", "After", "AfterFunc", "Tick", "NewTimer", "NewTicker"},
	},
}

// randGlobals are math/rand/v2's functions that draw from the global source.
var randGlobals = []string{"Int", "IntN", "Int32", "Int32N", "Int64", "Int64N", "Uint", "UintN", "Uint32",
	"Uint32N", "Uint64", "Uint64N", "Float32", "Float64", "Perm", "Shuffle", "NormFloat64", "ExpFloat64", "N"}

// Check parses the non-test Go files in dir and returns every violation,
// each prefixed with its position.
func Check(dir string, rules Rules) ([]string, error) {
	fset := token.NewFileSet()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("detguard: no Go files in %s", dir)
	}
	// Type information tells a map from a slice in a range statement. Only
	// the standard library is type-checked from source (third-party
	// packages would make this slow); a map of a third-party type is still
	// a map, since the map type itself is written in this package.
	info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}}
	std := importer.ForCompiler(fset, "source", nil)
	conf := types.Config{Importer: stdOnly{std}, Error: func(error) {}}
	_, _ = conf.Check(files[0].Name.Name, fset, files, info)
	var out []string
	for _, f := range files {
		out = append(out, fileViolations(fset, f, info, rules)...)
	}
	return out, nil
}

// stdOnly imports standard library packages and refuses the rest.
type stdOnly struct{ std types.Importer }

func (s stdOnly) Import(path string) (*types.Package, error) {
	if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
		return nil, fmt.Errorf("detguard: not type-checking third-party package %s", path)
	}
	return s.std.Import(path)
}

func fileViolations(fset *token.FileSet, f *ast.File, info *types.Info, rules Rules) []string {
	var out []string
	report := func(n ast.Node, what string) {
		out = append(out, fset.Position(n.Pos()).String()+": "+what)
	}
	// names maps the local name of an import to the functions forbidden
	// through it.
	names := map[string][]string{}
	for _, imp := range f.Imports {
		path := strings.Trim(imp.Path.Value, `"`)
		if why, bad := rules.Imports[path]; bad {
			report(imp, `import "`+path+`" (`+why+`)`)
		}
		if fns, ok := rules.Funcs[path]; ok {
			local := filepath.Base(path)
			if path == "math/rand/v2" {
				local = "rand"
			}
			if imp.Name != nil {
				local = imp.Name.Name
			}
			names[local] = fns
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
			if id, ok := n.X.(*ast.Ident); ok {
				for _, fn := range names[id.Name] {
					if n.Sel.Name == fn {
						report(n, "call of "+id.Name+"."+fn)
					}
				}
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
