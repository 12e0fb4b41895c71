package doctest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/therealutkarshpriyadarshi/keyval/api/apipb"
)

// TestAPIDocumentCoversTheProtos keeps docs/API.md in step with the client
// API: every RPC has a section ("### Service.Method") naming each field of
// its request and response, every field of every message is named
// somewhere, and no section describes an RPC that is gone.
func TestAPIDocumentCoversTheProtos(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "API.md"))
	if err != nil {
		t.Fatal(err)
	}
	sections := rpcSections(string(doc))
	files := []protoreflect.FileDescriptor{apipb.File_api_apipb_kv_proto, apipb.File_api_apipb_cluster_proto, apipb.File_api_apipb_auth_proto,
		apipb.File_api_apipb_maintenance_proto}
	rpcs := map[string]bool{}
	for _, f := range files {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				m := svc.Methods().Get(j)
				name := string(svc.Name()) + "." + string(m.Name())
				rpcs[name] = true
				text, ok := sections[name]
				if !ok {
					t.Errorf("docs/API.md has no section \"### %s\"", name)
					continue
				}
				// What a service's introduction names holds for all its
				// methods (every answer's header, say).
				text += serviceIntro(string(doc), string(svc.Name()))
				for _, msg := range []protoreflect.MessageDescriptor{m.Input(), m.Output()} {
					for _, field := range missingFields(text, msg) {
						t.Errorf("docs/API.md, section %s: field %s of %s is not named (as `%s`)", name, field, msg.Name(), field)
					}
				}
			}
		}
		for i := range f.Messages().Len() {
			msg := f.Messages().Get(i)
			for _, field := range missingFields(string(doc), msg) {
				t.Errorf("docs/API.md: field %s of %s is not named anywhere (as `%s`)", field, msg.Name(), field)
			}
		}
	}
	for name := range sections {
		if !rpcs[name] {
			t.Errorf("docs/API.md has a section for %s, which the protos do not define", name)
		}
	}
}

var rpcHeadingRE = regexp.MustCompile(`(?m)^### ([A-Za-z]+\.[A-Za-z]+)\s*$`)

// rpcSections maps each "### Service.Method" heading to its text, up to
// the next heading.
func rpcSections(doc string) map[string]string {
	out := map[string]string{}
	locs := rpcHeadingRE.FindAllStringSubmatchIndex(doc, -1)
	for i, loc := range locs {
		end := len(doc)
		if next := strings.Index(doc[loc[1]:], "\n#"); next >= 0 {
			end = loc[1] + next
		}
		if i+1 < len(locs) && locs[i+1][0] < end {
			end = locs[i+1][0]
		}
		out[doc[loc[2]:loc[3]]] = doc[loc[1]:end]
	}
	return out
}

// serviceIntro is the text between "## Service name" and its first
// method's heading.
func serviceIntro(doc, name string) string {
	_, rest, ok := strings.Cut(doc, "\n## Service "+name+"\n")
	if !ok {
		return ""
	}
	intro, _, _ := strings.Cut(rest, "\n#")
	return intro
}

// missingFields lists the fields of msg that text does not name in
// backquotes.
func missingFields(text string, msg protoreflect.MessageDescriptor) []string {
	var missing []string
	for i := range msg.Fields().Len() {
		name := string(msg.Fields().Get(i).Name())
		if !strings.Contains(text, "`"+name+"`") {
			missing = append(missing, name)
		}
	}
	return missing
}
