package gateway

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"tether/gateway/api"
)

// docs/openapi.yaml must describe the API as built. These tests fail when
// a route or a field of a gateway/api type changes without the document.

const openAPIFile = "../docs/openapi.yaml"

// openAPISchemaTypes maps each components.schemas entry that mirrors a Go
// type to that type. Every exported struct type of gateway/api/types.go
// must be listed (TestOpenAPISchemaTypesListed).
var openAPISchemaTypes = map[string]reflect.Type{
	"App":              reflect.TypeFor[api.App](),
	"CreateAppRequest": reflect.TypeFor[api.CreateAppRequest](),
	"PatchAppRequest":  reflect.TypeFor[api.PatchAppRequest](),
	"WebhookConfig":    reflect.TypeFor[api.WebhookConfig](),
	"WebhookView":      reflect.TypeFor[api.WebhookView](),
	"APNSConfig":       reflect.TypeFor[api.APNSConfig](),
	"APNSView":         reflect.TypeFor[api.APNSView](),
	"FCMConfig":        reflect.TypeFor[api.FCMConfig](),
	"FCMView":          reflect.TypeFor[api.FCMView](),
	"SMSConfig":        reflect.TypeFor[api.SMSConfig](),
	"SMSView":          reflect.TypeFor[api.SMSView](),
	"Defaults":         reflect.TypeFor[api.Defaults](),
	"KeyResponse":      reflect.TypeFor[api.KeyResponse](),
	"PutUserRequest":   reflect.TypeFor[api.PutUserRequest](),
	"User":             reflect.TypeFor[api.User](),
	"PushRegistration": reflect.TypeFor[api.PushRegistration](),
	"PutDeviceRequest": reflect.TypeFor[api.PutDeviceRequest](),
	"PushView":         reflect.TypeFor[api.PushView](),
	"Device":           reflect.TypeFor[api.Device](),
	"SMSFallback":      reflect.TypeFor[api.SMSFallback](),
	"SendRequest":      reflect.TypeFor[api.SendRequest](),
	"SentMessage":      reflect.TypeFor[api.SentMessage](),
	"SendResponse":     reflect.TypeFor[api.SendResponse](),
	"DeviceStatus":     reflect.TypeFor[api.DeviceStatus](),
	"Fallback":         reflect.TypeFor[api.Fallback](),
	"MessageStatus":    reflect.TypeFor[api.MessageStatus](),
	"EventsResponse":   reflect.TypeFor[api.EventsResponse](),
	"Event":            reflect.TypeFor[api.Event](),
	"PulledMessage":    reflect.TypeFor[api.PulledMessage](),
	"PullResponse":     reflect.TypeFor[api.PullResponse](),
	"AcksRequest":      reflect.TypeFor[api.AcksRequest](),
	"Stats":            reflect.TypeFor[api.Stats](),
	"StoreStats":       reflect.TypeFor[api.StoreStats](),
	"Error":            reflect.TypeFor[api.Error](),
	"ErrorBody":        reflect.TypeFor[api.ErrorBody](),
	"Secret":           reflect.TypeFor[api.Secret](),
}

// routeRecorder is a router that only records the patterns.
type routeRecorder struct{ patterns []string }

func (r *routeRecorder) HandleFunc(pattern string, _ func(http.ResponseWriter, *http.Request)) {
	r.patterns = append(r.patterns, pattern)
}

func (r *routeRecorder) Handle(pattern string, _ http.Handler) {
	r.patterns = append(r.patterns, pattern)
}

var wildcardRE = regexp.MustCompile(`\{([^{}]*)\}`)

// openAPIPath turns a ServeMux path into an OpenAPI path template:
// "{rest...}" becomes "{rest}" and the end anchor "{$}" goes.
func openAPIPath(p string) string {
	p = strings.ReplaceAll(p, "{$}", "")
	return wildcardRE.ReplaceAllStringFunc(p, func(w string) string {
		return "{" + strings.TrimSuffix(w[1:len(w)-1], "...") + "}"
	})
}

// recordedRoutes returns "METHOD /path" for every pattern routes()
// registers, without the catch-all "/".
func recordedRoutes(t *testing.T) map[string]bool {
	t.Helper()
	rec := &routeRecorder{}
	(&Gateway{}).routes(rec)
	out := map[string]bool{}
	for _, pat := range rec.patterns {
		if pat == "/" {
			continue
		}
		method, path, ok := strings.Cut(pat, " ")
		if !ok || !strings.HasPrefix(path, "/") {
			t.Errorf("routes() registers %q: the test expects \"METHOD /path\" patterns (no host, a method)", pat)
			continue
		}
		key := method + " " + openAPIPath(strings.TrimSpace(path))
		if out[key] {
			t.Errorf("routes() registers %q twice", key)
		}
		out[key] = true
	}
	if len(out) == 0 {
		t.Fatal("routes() registered no patterns")
	}
	return out
}

// loadOpenAPI parses docs/openapi.yaml (yaml.v3 rejects duplicate keys).
func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatalf("reading %s: %v", openAPIFile, err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parsing %s: %v", openAPIFile, err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1") {
		t.Errorf("%s: openapi is %q, want 3.1.x", openAPIFile, v)
	}
	return doc
}

// mapAt walks doc along keys; nil if a step is missing or not a mapping.
func mapAt(doc map[string]any, keys ...string) map[string]any {
	m := doc
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// openAPIOperation is one operation of the document.
type openAPIOperation struct {
	path     string
	pathItem map[string]any
	op       map[string]any
}

// openAPIOperations returns the document's operations by "METHOD /path".
func openAPIOperations(t *testing.T, doc map[string]any) map[string]openAPIOperation {
	t.Helper()
	paths := mapAt(doc, "paths")
	if paths == nil {
		t.Fatalf("%s has no paths mapping", openAPIFile)
	}
	out := map[string]openAPIOperation{}
	for path, v := range paths {
		item, ok := v.(map[string]any)
		if !ok {
			t.Errorf("%s: paths.%s is not a mapping", openAPIFile, path)
			continue
		}
		for k, v := range item {
			if !slices.Contains(httpMethods, k) {
				continue
			}
			op, ok := v.(map[string]any)
			if !ok {
				t.Errorf("%s: paths.%s.%s is not a mapping", openAPIFile, path, k)
				continue
			}
			out[strings.ToUpper(k)+" "+path] = openAPIOperation{path: path, pathItem: item, op: op}
		}
	}
	return out
}

// TestOpenAPIRoutes: the operations of docs/openapi.yaml are exactly the
// routes routes() registers, and each declares its path parameters.
func TestOpenAPIRoutes(t *testing.T) {
	routes := recordedRoutes(t)
	doc := loadOpenAPI(t)
	ops := openAPIOperations(t, doc)

	for _, r := range slices.Sorted(maps.Keys(routes)) {
		if _, ok := ops[r]; !ok {
			method, path, _ := strings.Cut(r, " ")
			t.Errorf("route %q is registered by routes() (gateway/rest.go) but %s has no operation paths.%q.%s",
				r, openAPIFile, path, strings.ToLower(method))
		}
	}
	for _, o := range slices.Sorted(maps.Keys(ops)) {
		if !routes[o] {
			t.Errorf("%s documents operation %q, which routes() (gateway/rest.go) does not register", openAPIFile, o)
		}
	}

	params := mapAt(doc, "components", "parameters")
	for _, key := range slices.Sorted(maps.Keys(ops)) {
		o := ops[key]
		want := map[string]bool{}
		for _, m := range wildcardRE.FindAllStringSubmatch(o.path, -1) {
			want[m[1]] = true
		}
		got := map[string]bool{}
		for _, list := range []any{o.pathItem["parameters"], o.op["parameters"]} {
			items, _ := list.([]any)
			for _, it := range items {
				p, _ := it.(map[string]any)
				if ref, ok := p["$ref"].(string); ok {
					name, found := strings.CutPrefix(ref, "#/components/parameters/")
					if !found || params[name] == nil {
						t.Errorf("%s: %s: parameter $ref %q does not resolve", openAPIFile, key, ref)
						continue
					}
					p, _ = params[name].(map[string]any)
				}
				if p["in"] != "path" {
					continue
				}
				name, _ := p["name"].(string)
				got[name] = true
				if p["required"] != true {
					t.Errorf("%s: %s: path parameter %q must have required: true", openAPIFile, key, name)
				}
			}
		}
		for _, n := range slices.Sorted(maps.Keys(want)) {
			if !got[n] {
				t.Errorf("%s: %s: path parameter {%s} is not declared (in: path) on the path item or operation", openAPIFile, key, n)
			}
		}
		for _, n := range slices.Sorted(maps.Keys(got)) {
			if !want[n] {
				t.Errorf("%s: %s: declares path parameter %q, which the path has no {%s} for", openAPIFile, key, n, n)
			}
		}
	}
}

// jsonFields returns the JSON names of t's exported fields, each with the
// Go field it comes from, as encoding/json sees them (embedded structs
// without a name are flattened).
func jsonFields(t reflect.Type) map[string]string {
	out := map[string]string{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag, hasTag := f.Tag.Lookup("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				maps.Copy(out, jsonFields(ft))
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if !hasTag || name == "" {
			name = f.Name
		}
		out[name] = f.Name
	}
	return out
}

// TestOpenAPISchemas: each schema named after a gateway/api type has
// exactly that type's JSON fields as properties, and requires only
// properties it has.
func TestOpenAPISchemas(t *testing.T) {
	doc := loadOpenAPI(t)
	schemas := mapAt(doc, "components", "schemas")
	if schemas == nil {
		t.Fatalf("%s has no components.schemas", openAPIFile)
	}
	for _, name := range slices.Sorted(maps.Keys(openAPISchemaTypes)) {
		typ := openAPISchemaTypes[name]
		goName := "api." + typ.Name()
		schema, ok := schemas[name].(map[string]any)
		if !ok {
			t.Errorf("%s: components.schemas.%s is missing (it mirrors %s)", openAPIFile, name, goName)
			continue
		}
		props, _ := schema["properties"].(map[string]any)
		fields := jsonFields(typ)
		for _, f := range slices.Sorted(maps.Keys(fields)) {
			if _, ok := props[f]; !ok {
				t.Errorf("%s: components.schemas.%s.properties lacks %q (field %s.%s)", openAPIFile, name, f, goName, fields[f])
			}
		}
		for _, p := range slices.Sorted(maps.Keys(props)) {
			if _, ok := fields[p]; !ok {
				t.Errorf("%s: components.schemas.%s.properties has %q, which %s has no JSON field for", openAPIFile, name, p, goName)
			}
		}
		req, _ := schema["required"].([]any)
		for _, r := range req {
			if s, _ := r.(string); props[s] == nil {
				t.Errorf("%s: components.schemas.%s.required lists %v, which is not one of its properties", openAPIFile, name, r)
			}
		}
	}
}

// TestOpenAPISchemaTypesListed: every exported struct type declared in
// gateway/api/types.go is in openAPISchemaTypes, so a new type gets a
// schema.
func TestOpenAPISchemaTypesListed(t *testing.T) {
	const file = "api/types.go"
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, typ := range openAPISchemaTypes {
		listed[typ.Name()] = true
	}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, s := range gd.Specs {
			ts := s.(*ast.TypeSpec)
			if _, isStruct := ts.Type.(*ast.StructType); !isStruct || !ts.Name.IsExported() {
				continue
			}
			if !listed[ts.Name.Name] {
				t.Errorf("gateway/%s declares api.%s, which openAPISchemaTypes (gateway/openapi_test.go) does not list: add it and components.schemas.%s to %s",
					file, ts.Name.Name, ts.Name.Name, openAPIFile)
			}
		}
	}
}

// TestOpenAPIRefs: every local $ref of the document resolves.
func TestOpenAPIRefs(t *testing.T) {
	doc := loadOpenAPI(t)
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if err := resolveRef(doc, ref); err != nil {
					t.Errorf("%s: %s: $ref %q: %v", openAPIFile, where, ref, err)
				}
			}
			for _, k := range slices.Sorted(maps.Keys(v)) {
				walk(strings.TrimPrefix(where+"."+k, "."), v[k])
			}
		case map[any]any:
			t.Errorf("%s: %s has a non-string key (quote status codes)", openAPIFile, where)
		case []any:
			for i, c := range v {
				walk(fmt.Sprintf("%s[%d]", where, i), c)
			}
		}
	}
	walk("", doc)
}

// resolveRef follows a local JSON pointer ("#/a/b").
func resolveRef(doc map[string]any, ref string) error {
	ptr, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return fmt.Errorf("not a local reference")
	}
	var cur any = doc
	for _, tok := range strings.Split(ptr, "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := cur.(map[string]any)
		if !ok {
			return fmt.Errorf("%q is not inside a mapping", tok)
		}
		if cur, ok = m[tok]; !ok {
			return fmt.Errorf("no %q", tok)
		}
	}
	return nil
}
