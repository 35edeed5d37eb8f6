// Package azurefake holds local stand-ins for the Azure services
// remediator's credentials talk to, for tests that run the real SDK code
// paths on loopback: Microsoft Entra ID's token endpoint (client secret and
// certificate credentials), the App Service managed-identity endpoint, and
// Key Vault's secrets API with its 401 challenge. The TLS servers use
// net/http/httptest's certificate; CertPEM gives it to a child process
// through SSL_CERT_FILE.
package azurefake

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// App is an app registration in a tenant: its client secret, or the
// certificate its assertions are signed with.
type App struct {
	Tenant, ClientID, Secret string
	// Certificate, when set, is accepted as a signed client assertion
	// (its signature is not verified).
	Certificate bool
}

// Entra is a fake Microsoft Entra ID token service.
type Entra struct {
	*httptest.Server
	mu       sync.Mutex
	apps     map[string]App    // by tenant|client
	tokens   map[string]string // issued token → tenant|client
	requests []TokenRequest
	n        int
	down     bool
}

// TokenRequest records one token request.
type TokenRequest struct {
	Tenant, ClientID, Scope string
	// Kind is "secret" or "assertion".
	Kind string
}

// NewEntra starts a fake token service over TLS.
func NewEntra() *Entra {
	e := &Entra{apps: map[string]App{}, tokens: map[string]string{}}
	e.Server = httptest.NewTLSServer(http.HandlerFunc(e.serve))
	return e
}

// Register adds or replaces (rotates) an app's credential; tokens issued
// under an earlier secret stop being valid.
func (e *Entra) Register(a App) {
	e.mu.Lock()
	defer e.mu.Unlock()
	key := a.Tenant + "|" + a.ClientID
	for tok, k := range e.tokens {
		if k == key {
			delete(e.tokens, tok)
		}
	}
	e.apps[key] = a
}

// SetDown makes the token endpoint answer 503.
func (e *Entra) SetDown(down bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.down = down
}

// Valid reports whether tok is a live token and for which tenant|client.
func (e *Entra) Valid(tok string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k, ok := e.tokens[tok]
	return k, ok
}

// Requests returns the token requests so far.
func (e *Entra) Requests() []TokenRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]TokenRequest(nil), e.requests...)
}

func (e *Entra) serve(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 2 {
		http.NotFound(w, r)
		return
	}
	tenant := parts[0]
	base := e.URL + "/" + tenant
	switch {
	case strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration"):
		writeJSON(w, 200, map[string]any{
			"token_endpoint":                        base + "/oauth2/v2.0/token",
			"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
			"issuer":                                base + "/v2.0",
			"jwks_uri":                              base + "/discovery/v2.0/keys",
			"response_types_supported":              []string{"code", "id_token"},
			"subject_types_supported":               []string{"pairwise"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"tenant_region_scope":                   "NA",
		})
	case strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token") && r.Method == http.MethodPost:
		_ = r.ParseForm()
		req := TokenRequest{Tenant: tenant, ClientID: r.Form.Get("client_id"), Scope: r.Form.Get("scope"), Kind: "secret"}
		if r.Form.Get("client_assertion") != "" {
			req.Kind = "assertion"
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		e.requests = append(e.requests, req)
		if e.down {
			writeJSON(w, 503, map[string]any{"error": "temporarily_unavailable", "error_description": "AADSTS90033: The service is temporarily unavailable."})
			return
		}
		app, ok := e.apps[tenant+"|"+req.ClientID]
		switch {
		case !ok:
			writeJSON(w, 400, map[string]any{"error": "unauthorized_client", "error_description": "AADSTS700016: Application with identifier '" + req.ClientID + "' was not found in the directory '" + tenant + "'."})
			return
		case req.Kind == "secret" && r.Form.Get("client_secret") != app.Secret, req.Kind == "assertion" && !app.Certificate:
			writeJSON(w, 401, map[string]any{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})
			return
		}
		e.n++
		tok := fmt.Sprintf("graph-token-%s-%d", tenant[:8], e.n)
		e.tokens[tok] = tenant + "|" + req.ClientID
		writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": tok})
	default:
		http.NotFound(w, r)
	}
}

// ManagedIdentity is a fake App Service managed-identity endpoint
// (IDENTITY_ENDPOINT, IDENTITY_HEADER).
type ManagedIdentity struct {
	*httptest.Server
	Header string
	mu     sync.Mutex
	calls  int
}

// NewManagedIdentity starts the endpoint over plain HTTP, as App Service
// serves it on the local machine.
func NewManagedIdentity() *ManagedIdentity {
	m := &ManagedIdentity{Header: "fake-identity-header"}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-IDENTITY-HEADER") != m.Header {
			writeJSON(w, 401, map[string]any{"error": "invalid identity header"})
			return
		}
		m.mu.Lock()
		m.calls++
		m.mu.Unlock()
		writeJSON(w, 200, map[string]any{"access_token": "mi-token-for-" + r.URL.Query().Get("resource"),
			"expires_on": fmt.Sprint(time.Now().Add(time.Hour).Unix()), "resource": r.URL.Query().Get("resource"), "token_type": "Bearer"})
	}))
	return m
}

// Endpoint is the value for IDENTITY_ENDPOINT.
func (m *ManagedIdentity) Endpoint() string { return m.URL + "/msi/token" }

// Calls counts token requests.
func (m *ManagedIdentity) Calls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// Secret is a Key Vault secret.
type Secret struct {
	Value       string
	ContentType string
	Tags        map[string]string
}

// KeyVault is a fake Key Vault secrets API over TLS. A request without a
// token is answered with the 401 challenge the SDK expects.
type KeyVault struct {
	*httptest.Server
	Tenant  string // named in the challenge
	mu      sync.Mutex
	secrets map[string]Secret
	reads   map[string]int
	down    bool
	delay   time.Duration
}

// NewKeyVault starts the vault.
func NewKeyVault(tenant string) *KeyVault {
	kv := &KeyVault{Tenant: tenant, secrets: map[string]Secret{}, reads: map[string]int{}}
	kv.Server = httptest.NewTLSServer(http.HandlerFunc(kv.serve))
	return kv
}

// Set stores (or rotates) a secret.
func (kv *KeyVault) Set(name string, s Secret) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	kv.secrets[name] = s
}

// SetDown makes every request fail with 503; SetDelay slows answers.
func (kv *KeyVault) SetDown(down bool) { kv.mu.Lock(); kv.down = down; kv.mu.Unlock() }

// SetDelay delays every answer.
func (kv *KeyVault) SetDelay(d time.Duration) { kv.mu.Lock(); kv.delay = d; kv.mu.Unlock() }

// Reads counts authorized reads of a secret.
func (kv *KeyVault) Reads(name string) int {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	return kv.reads[name]
}

func (kv *KeyVault) serve(w http.ResponseWriter, r *http.Request) {
	kv.mu.Lock()
	down, delay := kv.down, kv.delay
	kv.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	if down {
		writeJSON(w, 503, map[string]any{"error": map[string]any{"code": "ServiceUnavailable", "message": "The service is unavailable."}})
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="https://vault.azure.net"`, kv.Tenant))
		writeJSON(w, 401, map[string]any{"error": map[string]any{"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}})
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 2 || parts[0] != "secrets" {
		http.NotFound(w, r)
		return
	}
	name := parts[1]
	kv.mu.Lock()
	s, ok := kv.secrets[name]
	if ok {
		kv.reads[name]++
	}
	kv.mu.Unlock()
	if !ok {
		writeJSON(w, 404, map[string]any{"error": map[string]any{"code": "SecretNotFound", "message": "A secret with (name/id) " + name + " was not found in this key vault."}})
		return
	}
	body := map[string]any{"value": s.Value, "id": kv.URL + "/secrets/" + name + "/0123456789abcdef",
		"attributes": map[string]any{"enabled": true, "created": time.Now().Unix(), "updated": time.Now().Unix(), "recoveryLevel": "Recoverable"}}
	if s.ContentType != "" {
		body["contentType"] = s.ContentType
	}
	if len(s.Tags) > 0 {
		body["tags"] = s.Tags
	}
	writeJSON(w, 200, body)
}

// CertPEM is the PEM of the certificate every httptest TLS server in this
// process presents; write it to a file named by SSL_CERT_FILE for a child
// process to trust the fakes.
func CertPEM(s *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

// Pool is a certificate pool trusting s.
func Pool(s *httptest.Server) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.Certificate())
	return p
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
