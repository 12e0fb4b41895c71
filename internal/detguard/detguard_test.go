package detguard

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The guard must catch each kind of violation it claims to.
func TestCatchesViolations(t *testing.T) {
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
	for name, rules := range map[string]Rules{"core": Core, "sim": Sim} {
		got, err := Check(dir, rules)
		if err != nil {
			t.Fatal(err)
		}
		all := strings.Join(got, "\n")
		want := []string{"go statement", "range over map", "select", "rand.IntN", "channel"}
		if name == "core" {
			want = append(want, `import "time"`)
		} else {
			want = append(want, "time.Now")
		}
		for _, w := range want {
			if !strings.Contains(all, w) {
				t.Errorf("%s rules missed %q; reported:\n%s", name, w, all)
			}
		}
	}
}

func TestCleanSourcePasses(t *testing.T) {
	dir := t.TempDir()
	src := `package good
import "math/rand/v2"
func f(r *rand.Rand, s []int) int {
	for _, v := range s { _ = v }
	return r.IntN(3) + rand.New(rand.NewPCG(1, 2)).IntN(2)
}
`
	if err := os.WriteFile(filepath.Join(dir, "good.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Check(dir, Core)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("clean source reported: %v", got)
	}
}
