package azure

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/remediator/remediator/internal/app"
)

// Identity tells who sent an HTTP invocation from what the platform
// vouches for, and nothing else:
//
//   - With App Service Authentication on (WEBSITE_AUTH_ENABLED=true), the
//     platform authenticates the caller, strips any X-MS-CLIENT-PRINCIPAL*
//     header the caller sent and sets its own: the caller is the principal
//     (principal:<object id>), and the app roles and groups of
//     X-MS-CLIENT-PRINCIPAL are grants CALLER_POLICY may name (role:<value>,
//     group:<object id>). The Functions host trusts these headers on the
//     same condition (AuthenticationLevelHandler: IsEasyAuthEnabled).
//   - Otherwise those headers are whatever the caller wrote and are
//     ignored: the only identity the platform hands out is the function key
//     the host admitted, so each key is its own caller,
//     key:<first 12 hex digits of its SHA-256> (never the key itself), with
//     function-key as the policy rule of keys without one of their own.
type Identity struct {
	AuthEnabled bool
}

// principalHeaders are the headers App Service Authentication sets.
var principalHeaders = []string{"X-MS-CLIENT-PRINCIPAL", "X-MS-CLIENT-PRINCIPAL-ID", "X-MS-CLIENT-PRINCIPAL-NAME", "X-MS-CLIENT-PRINCIPAL-IDP"}

// maxPrincipal bounds the X-MS-CLIENT-PRINCIPAL header read (the platform
// writes a few KiB; more is not read).
const maxPrincipal = 64 << 10

// Caller is who sent r.
func (id Identity) Caller(r *http.Request) app.Caller {
	if id.AuthEnabled {
		if p := r.Header.Get("X-MS-CLIENT-PRINCIPAL-ID"); p != "" {
			return app.Caller{ID: "principal:" + strings.ToLower(p), Grants: grants(r.Header.Get("X-MS-CLIENT-PRINCIPAL"))}
		}
	}
	if key := functionKey(r); key != "" {
		return app.Caller{ID: KeyCaller(key), Fallback: "function-key"}
	}
	return app.Caller{Fallback: "function-key"}
}

// KeyCaller is the caller a function key makes: key: and the first 12 hex
// digits of its SHA-256 (what CALLER_POLICY names it by; the README shows
// how to compute it).
func KeyCaller(key string) string {
	h := sha256.Sum256([]byte(key))
	return "key:" + hex.EncodeToString(h[:])[:12]
}

// functionKey is the key the host admitted the request with: the
// x-functions-key header, else the code query parameter (the host's
// order: the header wins).
func functionKey(r *http.Request) string {
	if vs, ok := r.Header[http.CanonicalHeaderKey("x-functions-key")]; ok {
		return vs[0]
	}
	if vs, ok := r.URL.Query()["code"]; ok {
		return vs[0]
	}
	return ""
}

// grants reads the roles and groups of an X-MS-CLIENT-PRINCIPAL header:
// base64 of {"auth_typ","name_typ","role_typ","claims":[{"typ","val"}]}.
func grants(header string) []string {
	if header == "" || len(header) > maxPrincipal {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		return nil
	}
	var p struct {
		RoleType string `json:"role_typ"`
		Claims   []struct {
			Type  string `json:"typ"`
			Value string `json:"val"`
		} `json:"claims"`
	}
	if json.Unmarshal(raw, &p) != nil {
		return nil
	}
	var out []string
	for _, c := range p.Claims {
		switch {
		case c.Value == "":
		case c.Type == "roles" || (p.RoleType != "" && c.Type == p.RoleType):
			out = append(out, "role:"+c.Value)
		case c.Type == "groups":
			out = append(out, "group:"+strings.ToLower(c.Value))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Audit is the audit line's view of an HTTP invocation under the host: its
// invocation id, the caller (never a key), the principal's name when the
// platform vouches for it, and whether principal headers were sent that
// nothing vouches for.
func (id Identity) Audit(r *http.Request) []any {
	c := id.Caller(r)
	attrs := []any{"invocation_id", r.Header.Get("X-Azure-Functions-InvocationId"), "caller", c.ID}
	if strings.HasPrefix(c.ID, "principal:") {
		return append(attrs, "caller_name", r.Header.Get("X-MS-CLIENT-PRINCIPAL-NAME"))
	}
	for _, h := range principalHeaders {
		if r.Header.Get(h) != "" {
			return append(attrs, "principal_header", "untrusted: App Service Authentication is off (WEBSITE_AUTH_ENABLED)")
		}
	}
	return attrs
}
