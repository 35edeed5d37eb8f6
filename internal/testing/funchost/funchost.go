// Package funchost plays the Azure Functions host's HTTP front for tests:
// it reads the app's host.json and function.json files, routes a request to
// the function whose route template and methods match, authorizes it with
// function keys exactly as the host does, and forwards it to the custom
// handler (enableForwardingHttpRequest) with the path, query, headers and
// body the caller sent. What it enforces, and where that comes from:
//
//   - Keys (azure-functions-host, AuthenticationLevelHandler and
//     SecretManager.GetAuthorizationLevelAsync): the key is the
//     x-functions-key header, else the code query parameter (the header wins
//     even when it is wrong); the master key is admin level; host keys and
//     the invoked function's own keys are function level; any other
//     function's key is nothing. "A function key allows access only to a
//     specific function endpoint" (Microsoft's "Work with access keys in
//     Azure Functions").
//   - A request a function's authLevel does not admit is answered 401 with
//     an empty body (FunctionInvocationMiddleware returns UnauthorizedResult)
//     and never reaches the handler.
//   - No function whose route and methods match: 404, empty body.
//   - Routes are ASP.NET Core route templates under host.json's
//     extensions.http.routePrefix (default "api"), matched without regard
//     to case; {name} is one segment, {name?} an optional one, {*name} the
//     rest of the path including none ("catch-all parameters can also match
//     the empty string": ASP.NET Core routing docs).
//   - The forwarded request carries X-Azure-Functions-InvocationId,
//     X-Azure-Functions-HostVersion and the host's User-Agent
//     (DefaultHttpWorkerService.AddHeaders), and the caller's Host header.
package funchost

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// HostVersion is the host version the emulation reports to the handler.
const HostVersion = "4.1037.0"

// Function is an HTTP-triggered function of the app.
type Function struct {
	Name      string
	Route     string // the route template, without the prefix
	Methods   []string
	AuthLevel string // anonymous, function or admin
	// Key is the function's default key; Keys its other keys, by name.
	Key  string
	Keys map[string]string
}

// App is an app's HTTP functions and keys, as the host loads them.
type App struct {
	Prefix    string
	Functions []Function
	// MasterKey is admin level; HostKey is the host's default function-level
	// key, valid at every function.
	MasterKey, HostKey string
}

// Load reads host.json and every */function.json under root, and gives each
// HTTP function a fresh default key.
func Load(root string) (*App, error) {
	a := &App{Prefix: "api", MasterKey: newKey(), HostKey: newKey()}
	raw, err := os.ReadFile(filepath.Join(root, "host.json"))
	if err != nil {
		return nil, err
	}
	var host struct {
		Extensions struct {
			HTTP struct {
				RoutePrefix *string `json:"routePrefix"`
			} `json:"http"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(raw, &host); err != nil {
		return nil, fmt.Errorf("host.json: %w", err)
	}
	if p := host.Extensions.HTTP.RoutePrefix; p != nil {
		a.Prefix = strings.Trim(*p, "/")
	}
	files, err := filepath.Glob(filepath.Join(root, "*", "function.json"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var fj struct {
			Bindings []struct {
				Type      string   `json:"type"`
				Route     *string  `json:"route"`
				Methods   []string `json:"methods"`
				AuthLevel string   `json:"authLevel"`
			} `json:"bindings"`
		}
		if err := json.Unmarshal(raw, &fj); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		name := filepath.Base(filepath.Dir(f))
		for _, b := range fj.Bindings {
			if !strings.EqualFold(b.Type, "httpTrigger") {
				continue
			}
			fn := Function{Name: name, Route: name, Methods: b.Methods, AuthLevel: strings.ToLower(b.AuthLevel), Key: newKey()}
			if b.Route != nil {
				fn.Route = strings.Trim(*b.Route, "/")
			}
			if fn.AuthLevel == "" {
				fn.AuthLevel = "function" // the HTTP trigger's default
			}
			if _, err := parse(fn.Route); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			a.Functions = append(a.Functions, fn)
		}
	}
	if len(a.Functions) == 0 {
		return nil, errors.New("no HTTP functions under " + root)
	}
	return a, nil
}

// Key is the default key of the named function ("" when there is none).
func (a *App) Key(function string) string {
	for _, f := range a.Functions {
		if f.Name == function {
			return f.Key
		}
	}
	return ""
}

// AddKey gives the named function another key, as an administrator does
// for each consumer, and returns it.
func (a *App) AddKey(function, name string) string {
	for i := range a.Functions {
		if f := &a.Functions[i]; f.Name == function {
			if f.Keys == nil {
				f.Keys = map[string]string{}
			}
			f.Keys[name] = newKey()
			return f.Keys[name]
		}
	}
	return ""
}

// Match is the function that serves method and path (a path from the
// root, prefix included), with its route's values; nil when none does.
func (a *App) Match(method, path string) (*Function, map[string]string) {
	rest := strings.Trim(path, "/")
	if a.Prefix != "" {
		head, tail, _ := strings.Cut(rest, "/")
		if !strings.EqualFold(head, a.Prefix) {
			return nil, nil
		}
		rest = tail
	}
	for i := range a.Functions {
		f := &a.Functions[i]
		if len(f.Methods) > 0 && !slices.ContainsFunc(f.Methods, func(m string) bool { return strings.EqualFold(m, method) }) {
			continue
		}
		segs, _ := parse(f.Route)
		if values, ok := match(segs, rest); ok {
			return f, values
		}
	}
	return nil, nil
}

// Authorized reports whether r may invoke f: the level its key grants
// against f's authLevel.
func (a *App) Authorized(f *Function, r *http.Request) bool {
	key := ""
	if vs, ok := r.Header[http.CanonicalHeaderKey("x-functions-key")]; ok {
		key = vs[0]
	} else if vs, ok := r.URL.Query()["code"]; ok {
		key = vs[0]
	}
	level := "anonymous"
	switch key {
	case "":
	case a.MasterKey:
		level = "admin"
	case a.HostKey, f.Key:
		level = "function"
	default:
		for _, k := range f.Keys {
			if key == k {
				level = "function"
			}
		}
	}
	switch f.AuthLevel {
	case "anonymous":
		return true
	case "admin":
		return level == "admin"
	default:
		return level == "admin" || level == f.AuthLevel
	}
}

// Principal is a caller App Service Authentication has authenticated.
type Principal struct {
	ID, Name      string
	Roles, Groups []string
}

// EasyAuth plays App Service Authentication in front of the host, with
// unauthenticated requests refused (unauthenticatedClientAction Return401,
// as the template sets it): it strips every X-MS-CLIENT-PRINCIPAL* header
// a caller sends ("App Service ... strips them from incoming requests":
// Microsoft's "Work with user identities in Azure App Service
// authentication"), answers 401 to a request without a valid token, and
// for a valid bearer token sets the principal's headers, its claims in
// X-MS-CLIENT-PRINCIPAL as base64 JSON (auth_typ, name_typ, role_typ,
// claims).
type EasyAuth struct {
	// Tokens are the bearer tokens it accepts, each for a principal.
	Tokens map[string]Principal
}

func (e *EasyAuth) authenticate(r *http.Request) bool {
	for k := range r.Header {
		if strings.HasPrefix(strings.ToUpper(k), "X-MS-CLIENT-PRINCIPAL") || strings.HasPrefix(strings.ToUpper(k), "X-MS-TOKEN-") {
			r.Header.Del(k)
		}
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p, known := e.Tokens[tok]
	if !ok || !known {
		return false
	}
	type claim struct {
		Type  string `json:"typ"`
		Value string `json:"val"`
	}
	claims := []claim{{"http://schemas.microsoft.com/identity/claims/objectidentifier", p.ID}, {"name", p.Name}}
	for _, role := range p.Roles {
		claims = append(claims, claim{"roles", role})
	}
	for _, g := range p.Groups {
		claims = append(claims, claim{"groups", g})
	}
	b, _ := json.Marshal(map[string]any{"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims})
	r.Header.Set("X-MS-CLIENT-PRINCIPAL", base64.StdEncoding.EncodeToString(b))
	r.Header.Set("X-MS-CLIENT-PRINCIPAL-ID", p.ID)
	r.Header.Set("X-MS-CLIENT-PRINCIPAL-NAME", p.Name)
	r.Header.Set("X-MS-CLIENT-PRINCIPAL-IDP", "aad")
	return true
}

// Front is the emulated host on loopback in front of a handler.
type Front struct {
	*httptest.Server
	App *App
	// auth, when set, is App Service Authentication in front of the host.
	auth *EasyAuth
	mu   sync.Mutex
	// Invocations counts requests forwarded to the handler, by function.
	invocations map[string]int
	n           int
}

// Start serves a in front of the custom handler at handlerURL.
func Start(a *App, handlerURL string) (*Front, error) {
	target, err := url.Parse(handlerURL)
	if err != nil {
		return nil, err
	}
	f := &Front{App: a, invocations: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		auth := f.auth
		f.mu.Unlock()
		if auth != nil && !auth.authenticate(r) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fn, _ := a.Match(r.Method, r.URL.Path)
		if fn == nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if !a.Authorized(fn, r) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		f.invocations[fn.Name]++
		f.n++
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", f.n)
		f.mu.Unlock()
		f.forward(w, r, target, id)
	}))
	return f, nil
}

// SetAuth puts App Service Authentication in front of the host (nil takes
// it away).
func (f *Front) SetAuth(e *EasyAuth) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth = e
}

// Invocations is how many requests reached the handler as function.
func (f *Front) Invocations(function string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.invocations[function]
}

func (f *Front) forward(w http.ResponseWriter, r *http.Request, target *url.URL, invocation string) {
	u := *target
	u.Path, u.RawPath, u.RawQuery = r.URL.Path, r.URL.RawPath, r.URL.RawQuery
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	req.Host = r.Host
	req.ContentLength = r.ContentLength
	req.Header.Set("X-Azure-Functions-HostVersion", HostVersion)
	req.Header.Set("X-Azure-Functions-InvocationId", invocation)
	req.Header.Set("User-Agent", "Azure-Functions-Host/"+HostVersion)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		// The host fails the invocation: 500 to the caller.
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// segment is one segment of a route template.
type segment struct {
	literal  string
	param    string
	optional bool
	catchAll bool
}

func parse(route string) ([]segment, error) {
	if route == "" {
		return nil, nil
	}
	parts := strings.Split(route, "/")
	out := make([]segment, 0, len(parts))
	for i, p := range parts {
		if !strings.HasPrefix(p, "{") {
			if strings.ContainsAny(p, "{}") {
				return nil, fmt.Errorf("route %q: segment %q mixes literals and parameters, which this emulation does not read", route, p)
			}
			out = append(out, segment{literal: p})
			continue
		}
		if !strings.HasSuffix(p, "}") {
			return nil, fmt.Errorf("route %q: unclosed parameter %q", route, p)
		}
		s := segment{param: strings.Trim(p, "{}")}
		if name, ok := strings.CutPrefix(s.param, "*"); ok {
			if i != len(parts)-1 {
				return nil, fmt.Errorf("route %q: a catch-all parameter must be last", route)
			}
			s.param, s.catchAll = name, true
		}
		if name, ok := strings.CutSuffix(s.param, "?"); ok {
			s.param, s.optional = name, true
		}
		if name, _, ok := strings.Cut(s.param, ":"); ok {
			return nil, fmt.Errorf("route %q: constraint on %q is not emulated", route, name)
		}
		out = append(out, s)
	}
	return out, nil
}

func match(segs []segment, path string) (map[string]string, bool) {
	var parts []string
	if path != "" {
		parts = strings.Split(path, "/")
	}
	values := map[string]string{}
	for i, s := range segs {
		switch {
		case s.catchAll:
			values[s.param] = strings.Join(parts[min(i, len(parts)):], "/")
			return values, true
		case i >= len(parts):
			if !s.optional {
				return nil, false
			}
		case s.literal != "":
			if !strings.EqualFold(s.literal, parts[i]) {
				return nil, false
			}
		case parts[i] == "":
			return nil, false
		default:
			values[s.param] = parts[i]
		}
	}
	return values, len(parts) <= len(segs)
}

// newKey is a key in the host's form: random, URL-safe base64.
func newKey() string {
	b := make([]byte, 40)
	_, _ = rand.Read(b)
	return strings.TrimRight(base64.URLEncoding.EncodeToString(b), "=")
}
