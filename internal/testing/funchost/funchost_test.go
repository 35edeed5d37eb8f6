package funchost

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeApp(t *testing.T, hostJSON string, functions map[string]string) string {
	t.Helper()
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "host.json"), []byte(hostJSON), 0o600))
	for name, fj := range functions {
		require.NoError(t, os.MkdirAll(filepath.Join(root, name), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(root, name, "function.json"), []byte(fj), 0o600))
	}
	return root
}

func httpFunction(route, methods, level string) string {
	return `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","authLevel":"` + level + `","methods":` + methods +
		`,"route":"` + route + `"},{"type":"http","direction":"out","name":"res"}]}`
}

func TestRoutesMatchAsTheHostDoes(t *testing.T) {
	t.Parallel()
	app, err := Load(writeApp(t, `{"version":"2.0"}`, map[string]string{
		"remediate": httpFunction("remediate/{*rest}", `["get","post"]`, "function"),
		"runs":      httpFunction("runs/{id}", `["get"]`, "function"),
		"opt":       httpFunction("opt/{a}/{b?}", `["get"]`, "anonymous"),
		"timer":     `{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"0 * * * * *"}]}`,
	}))
	require.NoError(t, err)
	require.Len(t, app.Functions, 3, "only HTTP triggers are routes")
	for _, c := range []struct {
		method, path, function string
		values                 map[string]string
	}{
		{"POST", "/api/remediate", "remediate", map[string]string{"rest": ""}},
		{"GET", "/api/remediate/runs/abc", "remediate", map[string]string{"rest": "runs/abc"}},
		{"post", "/API/Remediate", "remediate", map[string]string{"rest": ""}},
		{"GET", "/api/runs/abc", "runs", map[string]string{"id": "abc"}},
		{"GET", "/api/opt/x", "opt", map[string]string{"a": "x"}},
		{"GET", "/api/opt/x/y", "opt", map[string]string{"a": "x", "b": "y"}},
		{"POST", "/api/runs/abc", "", nil},     // method not in the function's list
		{"GET", "/api/runs", "", nil},          // {id} is required
		{"GET", "/api/runs/abc/more", "", nil}, // too long
		{"GET", "/api/opt/x/y/z", "", nil},
		{"POST", "/remediate", "", nil}, // outside the prefix
	} {
		f, values := app.Match(c.method, c.path)
		if c.function == "" {
			assert.Nil(t, f, "%s %s", c.method, c.path)
			continue
		}
		require.NotNil(t, f, "%s %s", c.method, c.path)
		assert.Equal(t, c.function, f.Name, "%s %s", c.method, c.path)
		assert.Equal(t, c.values, values, "%s %s", c.method, c.path)
	}

	prefixed, err := Load(writeApp(t, `{"version":"2.0","extensions":{"http":{"routePrefix":""}}}`, map[string]string{
		"runs": httpFunction("runs/{id}", `["get"]`, "function"),
	}))
	require.NoError(t, err)
	f, _ := prefixed.Match("GET", "/runs/abc")
	require.NotNil(t, f, "an empty routePrefix serves routes from the root")

	_, err = Load(writeApp(t, `{}`, map[string]string{"bad": httpFunction("runs/{id:int}", `["get"]`, "function")}))
	assert.ErrorContains(t, err, "not emulated", "a route this emulation cannot read is an error, never a guess")
}

// TestKeysOpenOnlyTheirFunction: the key rules of the host's
// AuthenticationLevelHandler and SecretManager, seen through a handler
// that records what reaches it.
func TestKeysOpenOnlyTheirFunction(t *testing.T) {
	t.Parallel()
	app, err := Load(writeApp(t, `{}`, map[string]string{
		"remediate": httpFunction("remediate/{*rest}", `["get","post"]`, "function"),
		"runs":      httpFunction("runs/{id}", `["get"]`, "function"),
		"admin":     httpFunction("admin/{id}", `["get"]`, "admin"),
		"open":      httpFunction("open", `["get"]`, "anonymous"),
	}))
	require.NoError(t, err)
	type seen struct {
		Path, Query, Invocation, Host, UserAgent string
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(seen{r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Azure-Functions-InvocationId"), r.Host, r.Header.Get("User-Agent")})
	})
	backend := httptest.NewServer(handler)
	defer backend.Close()
	front, err := Start(app, backend.URL)
	require.NoError(t, err)
	defer front.Close()

	do := func(method, path string, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, front.URL+path, nil)
		require.NoError(t, err)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	rk, sk := app.Key("remediate"), app.Key("runs")
	require.NotEqual(t, rk, sk, "every function has its own key")

	for _, c := range []struct {
		name, method, path string
		header             []string
		status             int
	}{
		{"own key in the query", "GET", "/api/remediate/runs/r1?code=" + rk, nil, 200},
		{"own key in the header", "POST", "/api/remediate", []string{"x-functions-key", rk}, 200},
		{"another function's key", "GET", "/api/runs/r1?code=" + rk, nil, 401},
		{"another function's key, header", "GET", "/api/runs/r1", []string{"x-functions-key", rk}, 401},
		{"the runs key at runs", "GET", "/api/runs/r1?code=" + sk, nil, 200},
		{"the runs key at remediate", "GET", "/api/remediate/runs/r1?code=" + sk, nil, 401},
		{"a host key anywhere", "GET", "/api/runs/r1?code=" + app.HostKey, nil, 200},
		{"a host key at remediate", "POST", "/api/remediate", []string{"x-functions-key", app.HostKey}, 200},
		{"no key", "GET", "/api/runs/r1", nil, 401},
		{"a wrong header wins over a right query", "GET", "/api/runs/r1?code=" + sk, []string{"x-functions-key", "nope"}, 401},
		{"admin needs the master key", "GET", "/api/admin/1?code=" + app.HostKey, nil, 401},
		{"the master key", "GET", "/api/admin/1?code=" + app.MasterKey, nil, 200},
		{"anonymous", "GET", "/api/open", nil, 200},
		{"no route", "GET", "/api/nothing?code=" + app.MasterKey, nil, 404},
	} {
		status, body := do(c.method, c.path, c.header...)
		assert.Equal(t, c.status, status, c.name)
		if status != 200 {
			assert.Empty(t, body, "%s: the host answers %d with no body", c.name, status)
		}
	}
	assert.Equal(t, 3, front.Invocations("remediate"), "only admitted requests reach the handler")
	assert.Equal(t, 2, front.Invocations("runs"))

	status, body := do("GET", "/api/remediate/runs/r1?code="+rk+"&page=2")
	require.Equal(t, 200, status)
	var s seen
	require.NoError(t, json.Unmarshal([]byte(body), &s))
	assert.Equal(t, "/api/remediate/runs/r1", s.Path, "forwarded with the caller's path")
	assert.Equal(t, "code="+rk+"&page=2", s.Query, "and query")
	assert.NotEmpty(t, s.Invocation)
	assert.Equal(t, strings.TrimPrefix(front.URL, "http://"), s.Host, "and the Host the caller used")
	assert.Equal(t, "Azure-Functions-Host/"+HostVersion, s.UserAgent)
}

// TestEasyAuthVouchesForThePrincipal: with App Service Authentication in
// front, a caller's own principal headers never reach the handler, a
// request without a valid token is refused, and a valid token's principal
// arrives in the platform's headers; named keys open their function only.
func TestEasyAuthVouchesForThePrincipal(t *testing.T) {
	t.Parallel()
	app, err := Load(writeApp(t, `{}`, map[string]string{
		"remediate": httpFunction("remediate/{*rest}", `["get","post"]`, "function"),
		"runs":      httpFunction("runs/{id}", `["get"]`, "function"),
	}))
	require.NoError(t, err)
	seen := make(chan http.Header, 4)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen <- r.Header.Clone() }))
	defer backend.Close()
	front, err := Start(app, backend.URL)
	require.NoError(t, err)
	defer front.Close()
	teamA := app.AddKey("remediate", "team-a")
	require.NotEqual(t, app.Key("remediate"), teamA)

	do := func(path string, header ...string) int {
		req, err := http.NewRequest("GET", front.URL+path, nil)
		require.NoError(t, err)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, 200, do("/api/remediate/runs/x?code="+teamA, "X-MS-CLIENT-PRINCIPAL-ID", "spoofed"))
	h := <-seen
	assert.Equal(t, "spoofed", h.Get("X-MS-CLIENT-PRINCIPAL-ID"), "without authentication the platform passes the header on as it came")
	assert.Equal(t, 401, do("/api/runs/x?code="+teamA), "a named key opens its own function only")

	front.SetAuth(&EasyAuth{Tokens: map[string]Principal{"tok-admin": {ID: "0b5c4f1e-0000-4000-8000-00000000beef", Name: "admin@contoso.com", Roles: []string{"Remediation.Run"}}}})
	assert.Equal(t, 401, do("/api/remediate/runs/x?code="+teamA, "X-MS-CLIENT-PRINCIPAL-ID", "spoofed"), "no token, no entry")
	assert.Equal(t, 200, do("/api/remediate/runs/x?code="+teamA, "Authorization", "Bearer tok-admin", "X-MS-CLIENT-PRINCIPAL-ID", "spoofed", "X-MS-CLIENT-PRINCIPAL-NAME", "ceo"))
	h = <-seen
	assert.Equal(t, "0b5c4f1e-0000-4000-8000-00000000beef", h.Get("X-MS-CLIENT-PRINCIPAL-ID"))
	assert.Equal(t, "admin@contoso.com", h.Get("X-MS-CLIENT-PRINCIPAL-NAME"), "the caller's own headers are replaced")
	raw, err := base64.StdEncoding.DecodeString(h.Get("X-MS-CLIENT-PRINCIPAL"))
	require.NoError(t, err)
	assert.Contains(t, string(raw), `{"typ":"roles","val":"Remediation.Run"}`)
}
