// Package lint holds tests that enforce the project's structure: the
// direction of imports between packages and who may import which
// third-party library (see docs/architecture.md).
package lint

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "tether"

// rule says which imports a package (by path prefix) may not have.
type rule struct {
	pkg    string   // package path prefix this rule applies to ("" for all)
	except []string // package path prefixes exempt from the rule
	banned []string // import path prefixes it may not import
	allow  []string // imports exempt from banned (exact paths)
	why    string
}

var rules = []rule{
	{pkg: "", except: []string{"tether/storage"}, banned: []string{"github.com/cockroachdb/pebble"}, why: "only storage imports Pebble"},
	{pkg: "", except: []string{"tether/wake"}, banned: []string{"github.com/sideshow/apns2", "firebase.google.com/go"}, why: "only wake imports the push providers' clients"},
	{pkg: "tether/storage", banned: []string{"tether/"}, why: "storage imports nothing of Tether's"},
	{pkg: "tether/sdkproto", banned: []string{"tether/"}, allow: []string{"tether/internal/xmppxml", "tether/internal/readbuf", "tether/internal/bufpool"}, why: "sdkproto is a leaf that SDK users import (it may use the XML parser and the read and write buffers, themselves leaves)"},
	{pkg: "tether/internal/xmppxml", banned: []string{"tether/"}, why: "xmppxml is a leaf: sdkproto imports it"},
	{pkg: "tether/internal/readbuf", banned: []string{"tether/"}, why: "readbuf is a leaf: sdkproto imports it"},
	{pkg: "tether/internal/bufpool", banned: []string{"tether/"}, why: "bufpool is a leaf: sdkproto imports it"},
	{pkg: "tether/queue", banned: []string{"tether/gateway", "tether/session", "tether/wake", "tether/loadtest"}, why: "queue knows neither sessions nor wake"},
	{pkg: "tether/session", banned: []string{"tether/gateway", "tether/wake", "tether/storage", "tether/loadtest"}, why: "session talks to the queue only"},
	{pkg: "tether/wake", banned: []string{"tether/gateway", "tether/session", "tether/queue", "tether/storage", "tether/loadtest"}, why: "wake is a leaf below gateway"},
	{pkg: "tether/gateway/api", banned: []string{"tether/"}, why: "the API types are a leaf the CLI imports"},
	{pkg: "", except: []string{"tether/cmd/", "tether/loadtest", "tether/internal/gatewaytest", "tether/gateway"}, banned: []string{"tether/gateway"}, why: "gateway is the composition root"},
	{pkg: "", except: []string{"tether/cmd/", "tether/loadtest"}, banned: []string{"log"}, why: "library packages log with zap"},
}

func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules" || name == "data") {
			return filepath.SkipDir
		}
		pkg, err := build.ImportDir(path, 0)
		if err != nil {
			return nil // no Go files here
		}
		rel, _ := filepath.Rel(root, path)
		ipath := module
		if rel != "." {
			ipath = module + "/" + filepath.ToSlash(rel)
		}
		n++
		for _, imp := range pkg.Imports { // production code only, not tests
			for _, r := range rules {
				if !applies(r, ipath) {
					continue
				}
				if slices.Contains(r.allow, imp) {
					continue
				}
				for _, b := range r.banned {
					if imp == b || strings.HasPrefix(imp, strings.TrimSuffix(b, "/")+"/") || strings.HasSuffix(b, "/") && strings.HasPrefix(imp, b) {
						if imp == ipath || strings.HasPrefix(imp, ipath+"/") {
							continue // a package's own subpackages
						}
						t.Errorf("%s imports %s: %s", ipath, imp, r.why)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("found only %d packages: is the walk broken?", n)
	}
}

func applies(r rule, pkg string) bool {
	if r.pkg != "" && pkg != r.pkg && !strings.HasPrefix(pkg, r.pkg+"/") {
		return false
	}
	for _, e := range r.except {
		if pkg == strings.TrimSuffix(e, "/") || strings.HasPrefix(pkg, strings.TrimSuffix(e, "/")+"/") || strings.HasSuffix(e, "/") && strings.HasPrefix(pkg, e) {
			return false
		}
	}
	return true
}
