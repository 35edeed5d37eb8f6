package architecture

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/fault"
)

const module = "github.com/remediator/remediator/"

// layers ranks the module's packages: a package may import only packages
// of lower layers. Tools for tests (simulator, fakes) are at the bottom.
var layers = map[string]int{
	"internal/intune":            0,
	"internal/pace":              0,
	"internal/replay":            0,
	"internal/intunesim":         0,
	"internal/testing/procbench": 0,
	"internal/testing/azurite":   0,
	"internal/testing/azurefake": 0,
	"internal/testing/funchost":  0,
	"internal/fault":             0,
	"internal/testing/simgraph":  1,
	"internal/remediate":         1,
	"internal/graph":             1,
	"internal/credential":        1,
	"internal/config":            6,
	"internal/alert":             2,
	"internal/runs":              2,
	"internal/azstore":           3,
	"internal/app":               3,
	"internal/httpapi":           4,
	"internal/azure":             5,
	"internal/awslambda":         5,
	"handler":                    7,
	"deploy":                     7,
}

// sdkAllowed may depend on the Graph SDK: the client that wraps it and
// the command that wires it.
var sdkAllowed = map[string]bool{"internal/graph": true, "handler": true}

// httpFree are the domain packages: they know nothing of HTTP.
var httpFree = map[string]bool{"internal/intune": true, "internal/remediate": true, "internal/app": true, "internal/runs": true}

func golist(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// sdkModules are the modules internal/graph imports directly, outside the
// standard library and this module: the Graph SDK and Kiota, derived from
// the client rather than spelled out.
func sdkModules(t *testing.T) []string {
	t.Helper()
	var external []string
	for _, imp := range golist(t, "-f", `{{join .Imports "\n"}}`, "../graph") {
		if strings.Contains(strings.Split(imp, "/")[0], ".") && !strings.HasPrefix(imp, module) {
			external = append(external, imp)
		}
	}
	require.NotEmpty(t, external, "internal/graph imports the Graph SDK")
	var mods []string
	for _, m := range golist(t, append([]string{"-f", `{{.Module.Path}}`}, external...)...) {
		if !slices.Contains(mods, m) {
			mods = append(mods, m)
		}
	}
	return mods
}

// TestOnlyGraphImportsTheSDK: no package but graph and handler depends,
// even indirectly, on the modules of the Graph SDK and Kiota, so they
// compile and test without the SDK's ten-gigabyte models package.
func TestOnlyGraphImportsTheSDK(t *testing.T) {
	t.Parallel()
	sdk := sdkModules(t)
	for _, line := range golist(t, "-f", `{{.ImportPath}} {{join .Deps " "}}`, "../../...") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if sdkAllowed[pkg] || pkg == "internal/architecture" {
			continue
		}
		for _, dep := range fields[1:] {
			for _, m := range sdk {
				if dep == m || strings.HasPrefix(dep, m+"/") {
					t.Errorf("%s depends on %s: only internal/graph may use the Graph SDK (%s)", pkg, dep, m)
				}
			}
		}
	}
}

// TestOnlyGraphAndHandlerTestsLinkTheSDK: the tests of every other
// package build without the Graph SDK too (they use
// internal/testing/simgraph), so the race-enabled tests that `make test`
// runs never compile the SDK's models package; the Makefile's SDK_TESTS
// names exactly the packages whose tests do.
func TestOnlyGraphAndHandlerTestsLinkTheSDK(t *testing.T) {
	t.Parallel()
	sdk := sdkModules(t)
	linked := map[string]bool{}
	for _, line := range golist(t, "-test", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "../../...") {
		fields := strings.Fields(line)
		pkg, _, _ := strings.Cut(strings.TrimPrefix(fields[0], module), " ")
		pkg = strings.TrimSuffix(pkg, ".test")
		for _, dep := range fields[1:] {
			for _, m := range sdk {
				if dep == m || strings.HasPrefix(dep, m+"/") {
					linked[pkg] = true
				}
			}
		}
	}
	var got []string
	for pkg := range linked {
		got = append(got, pkg)
	}
	slices.Sort(got)
	assert.Equal(t, []string{"handler", "internal/graph"}, got, "packages whose tests link the Graph SDK")
	mk, err := os.ReadFile("../../Makefile")
	require.NoError(t, err)
	assert.Contains(t, string(mk), "SDK_TESTS := ./handler ./internal/graph\n", "the Makefile names them")
}

// TestImportsPointDown: every package imports only packages of lower
// layers, and the domain imports no HTTP.
func TestImportsPointDown(t *testing.T) {
	t.Parallel()
	for _, line := range golist(t, "-f", `{{.ImportPath}} {{join .Imports " "}}`, "../../...") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if pkg == "internal/architecture" {
			continue
		}
		rank, ok := layers[pkg]
		if !ok {
			t.Errorf("package %s has no layer: add it to the table", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			if httpFree[pkg] && imp == "net/http" {
				t.Errorf("%s imports net/http: the domain knows nothing of HTTP", pkg)
			}
			dep, own := strings.CutPrefix(imp, module)
			if !own {
				continue
			}
			if r, ok := layers[dep]; ok && r >= rank {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports point down only", pkg, rank, dep, r)
			}
		}
	}
}

// TestTestSupportStaysInTests: no package outside internal/testing imports
// it in its own (non-test) files, so test support never ships in the
// binary; and the tools for tests live there.
func TestTestSupportStaysInTests(t *testing.T) {
	t.Parallel()
	for _, line := range golist(t, "-f", `{{.ImportPath}} {{join .Imports " "}}`, "../../...") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if strings.HasPrefix(pkg, "internal/testing/") {
			continue
		}
		for _, imp := range fields[1:] {
			if strings.HasPrefix(imp, module+"internal/testing/") {
				t.Errorf("%s imports %s outside its tests: test support belongs to tests", pkg, imp)
			}
		}
	}
	for _, tool := range []string{"azurite", "azurefake", "procbench", "funchost", "simgraph"} {
		out := golist(t, "-f", "{{.ImportPath}}", "../testing/"+tool)
		assert.Len(t, out, 1, "internal/testing/%s", tool)
	}
}

// TestCodesAreSpelledOnce: outside internal/fault no file of the program
// spells an error code as a string literal (a typo there would be a code
// without a row in the status table, a silent 500); they use fault's
// constants.
func TestCodesAreSpelledOnce(t *testing.T) {
	t.Parallel()
	// Words of other vocabularies that happen to be spelled as a code: a
	// device's reason, a log line's key.
	other := map[string]bool{"internal/remediate/summary.go not_found": true, "internal/runs/worker.go devices_failed": true}
	codes := map[string]bool{}
	for _, c := range fault.All() {
		codes[string(c)] = true
	}
	for _, line := range golist(t, "-f", `{{.Dir}} {{join .GoFiles " "}}`, "../../...") {
		fields := strings.Fields(line)
		if len(fields) < 2 || strings.HasSuffix(fields[0], "/internal/fault") {
			continue
		}
		for _, name := range fields[1:] {
			path := filepath.Join(fields[0], name)
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
			require.NoError(t, err)
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					rel := strings.TrimPrefix(path[strings.Index(path, "/internal/")+1:], "/")
					if v, err := strconv.Unquote(lit.Value); err == nil && codes[v] && !other[rel+" "+v] {
						t.Errorf("%s spells the code %q: use internal/fault's constant", path, v)
					}
				}
				return true
			})
		}
	}
}

// TestNoTemplatesInTheBinary: the binary's packages import neither
// text/template nor html/template, whose method lookup by name keeps every
// method of the Graph SDK's models in the binary (11 MB becomes 85 MB).
func TestNoTemplatesInTheBinary(t *testing.T) {
	t.Parallel()
	for _, dep := range golist(t, "-deps", "../../handler") {
		assert.NotContains(t, []string{"text/template", "html/template"}, dep, "the handler's binary depends on %s", dep)
	}
}
