// Package credential gets remediator's Microsoft Graph tokens: from the
// Function's managed identity, from an app registration's client secret,
// or from an app credential (client secret or certificate) that the managed
// identity reads from Key Vault, per tenant for multi-tenant runs.
//
// Credentials are resolved once per process and tenant and cached: warm
// invocations make no Key Vault call. When Graph answers 401 the cached
// credential is dropped once and the secret re-read (rotation); a second
// 401 is a failure, never a loop. No secret or token value ever appears in
// an error or a log line.
package credential

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/remediator/remediator/internal/fault"
)

// SecretGetter reads a Key Vault secret; *azsecrets.Client implements it.
type SecretGetter interface {
	GetSecret(ctx context.Context, name, version string, options *azsecrets.GetSecretOptions) (azsecrets.GetSecretResponse, error)
}

// Config configures a Source.
type Config struct {
	// Mode is managed-identity, client-secret or keyvault.
	Mode string
	// Scope is the token scope, e.g. https://graph.microsoft.com/.default.
	Scope string
	// TenantID is the default tenant; ClientID the app registration.
	TenantID, ClientID string
	// Credential is the token credential of managed-identity and
	// client-secret modes, and the one that reads Key Vault in keyvault
	// mode.
	Credential azcore.TokenCredential
	// Vault reads secrets in keyvault mode; VaultURL and SecretName name
	// them in messages.
	Vault      SecretGetter
	VaultURL   string
	SecretName string
	// Options configure the client credentials built from Key Vault
	// secrets (authority host, transport).
	Options azcore.ClientOptions
	// DisableInstanceDiscovery is set for authorities that are not
	// Microsoft Entra ID's public hosts (tests, private clouds).
	DisableInstanceDiscovery bool
	// AllowedTenants, when set, make the app registration multi-tenant
	// (ALLOWED_TENANT_IDS): its one credential gets tokens in each of
	// these tenants (azidentity's AdditionallyAllowedTenants and a
	// per-request tenant), instead of a secret per tenant. Any other
	// tenant is unknown_tenant.
	AllowedTenants []string
}

// Source hands out Graph tokens per tenant. It is safe for concurrent use.
type Source struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	entries map[string]*entry // by lower-case tenant id; "" is the default tenant
	gen     uint64
	// reread is when each tenant's credential was last dropped after a
	// 401: a lasting 401 re-reads the vault once per MinReread, not once
	// per device.
	reread map[string]time.Time
}

// MinReread is the shortest time between two re-reads of one tenant's
// credential after 401s.
const MinReread = 30 * time.Second

// entry is one tenant's credential, resolved once: callers that arrive
// while it is being resolved wait for it (ready), and nobody holds the
// Source's lock across the vault or the token service.
type entry struct {
	ready chan struct{}
	cred  azcore.TokenCredential
	err   error
	gen   uint64
}

// New returns a Source.
func New(cfg Config, log *slog.Logger) *Source {
	return &Source{cfg: cfg, log: log, entries: map[string]*entry{}, reread: map[string]time.Time{}}
}

type tenantKey struct{}

// WithTenant returns ctx carrying the tenant a run acts in ("" for the
// default tenant).
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// TenantFrom returns the tenant WithTenant stored, or "".
func TenantFrom(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}

// Prepare makes sure a token can be had for tenant before a run starts,
// and returns ctx carrying the tenant. Its errors are *fault.Error.
func (s *Source) Prepare(ctx context.Context, tenant string) (context.Context, error) {
	ctx = WithTenant(ctx, tenant)
	if _, _, err := s.Token(ctx); err != nil {
		return ctx, err
	}
	return ctx, nil
}

// Token returns a Graph token for the context's tenant and the generation
// of the credential that produced it (for Invalidate).
func (s *Source) Token(ctx context.Context) (string, uint64, error) {
	tenant := TenantFrom(ctx)
	e, err := s.credential(ctx, tenant)
	if err != nil {
		return "", 0, err
	}
	opts := policy.TokenRequestOptions{Scopes: []string{s.cfg.Scope}}
	if s.multiTenant() {
		opts.TenantID = s.keyOf(tenant) // "" is the app's home tenant
	}
	tok, err := e.cred.GetToken(ctx, opts)
	if err != nil {
		return "", 0, &fault.Error{Code: fault.TokenUnavailable, RetryAfter: 30 * time.Second,
			Message: fmt.Sprintf("no Graph token for tenant %s: %s", s.tenantName(tenant), firstLine(err))}
	}
	return tok.Token, e.gen, nil
}

// Invalidate drops the context's tenant's credential if it is still the one
// of generation gen, so that many calls failing with 401 at once cause one
// re-read.
func (s *Source) Invalidate(ctx context.Context, gen uint64) {
	key := s.keyOf(TenantFrom(ctx))
	if s.multiTenant() {
		key = "" // the one credential
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok || e.gen != gen || time.Since(s.reread[key]) < MinReread {
		return
	}
	delete(s.entries, key)
	s.reread[key] = time.Now()
	s.log.Info("graph credential invalidated after 401; it is re-read on next use", "tenant", s.tenantName(key))
}

// multiTenant reports whether one multi-tenant app credential serves the
// allowed tenants.
func (s *Source) multiTenant() bool { return len(s.cfg.AllowedTenants) > 0 }

// keyOf is the cache key of tenant: lower case, "" for the default tenant.
func (s *Source) keyOf(tenant string) string {
	key := strings.ToLower(tenant)
	if key != "" && strings.EqualFold(key, s.cfg.TenantID) {
		key = ""
	}
	return key
}

// credential returns the cached credential for tenant, resolving it the
// first time. Concurrent first calls for one tenant share one resolution;
// other tenants never wait for it. A failed resolution is not cached.
func (s *Source) credential(ctx context.Context, tenant string) (*entry, error) {
	key := s.keyOf(tenant)
	switch {
	case s.multiTenant() && key != "" && !slices.Contains(s.cfg.AllowedTenants, key):
		return nil, &fault.Error{Code: fault.UnknownTenant,
			Message: fmt.Sprintf("tenant %s is not in ALLOWED_TENANT_IDS; nothing was triggered", tenant)}
	case s.multiTenant():
		key = "" // one credential serves every allowed tenant
	case s.cfg.Mode != "keyvault" && key != "":
		return nil, &fault.Error{Code: fault.UnknownTenant,
			Message: fmt.Sprintf("tenant %s is not this app's tenant; runs in other tenants need GRAPH_AUTH=keyvault with a secret per tenant, or ALLOWED_TENANT_IDS for a multi-tenant app registration", tenant)}
	}
	s.mu.Lock()
	e, ok := s.entries[key]
	if !ok {
		e = &entry{ready: make(chan struct{})}
		s.entries[key] = e
		go s.resolve(key, e)
	}
	s.mu.Unlock()
	select {
	case <-e.ready:
		return e, e.err
	case <-ctx.Done():
		return nil, &fault.Error{Code: fault.KeyVaultUnavailable, RetryAfter: 60 * time.Second,
			Message: fmt.Sprintf("the Graph credential of tenant %s could not be read in time from Key Vault %s, secret %q (%s); nothing was triggered",
				s.tenantName(key), s.cfg.VaultURL, s.secretName(key), ctx.Err())}
	}
}

// resolveTimeout bounds one resolution of a credential (the vault read),
// which outlives the request that started it: others may wait for it.
const resolveTimeout = 30 * time.Second

// resolve reads tenant key's credential into e, with no lock held, and
// releases its waiters. A failure is not kept: the next call tries again.
func (s *Source) resolve(key string, e *entry) {
	cred, err := s.cfg.Credential, error(nil)
	if s.cfg.Mode == "keyvault" {
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		cred, err = s.fromVault(ctx, key)
		cancel()
	}
	s.mu.Lock()
	s.gen++
	e.cred, e.err, e.gen = cred, err, s.gen
	if err != nil && s.entries[key] == e {
		delete(s.entries, key)
	}
	s.mu.Unlock()
	close(e.ready)
}

// secretName is the Key Vault secret of tenant key.
func (s *Source) secretName(key string) string {
	if key == "" {
		return s.cfg.SecretName
	}
	return s.cfg.SecretName + "-" + key
}

// fromVault reads the app credential of tenant (default: "") from Key
// Vault: secret GRAPH_CREDENTIAL_SECRET, or GRAPH_CREDENTIAL_SECRET-<tenant>.
func (s *Source) fromVault(ctx context.Context, tenant string) (azcore.TokenCredential, error) {
	name, tenantID := s.cfg.SecretName, s.cfg.TenantID
	if tenant != "" {
		name, tenantID = s.cfg.SecretName+"-"+tenant, tenant
	}
	resp, err := s.cfg.Vault.GetSecret(ctx, name, "", nil)
	if err != nil {
		var re *azcore.ResponseError
		notFound := errors.As(err, &re) && re.StatusCode == http.StatusNotFound
		if notFound && tenant != "" {
			return nil, &fault.Error{Code: fault.UnknownTenant,
				Message: fmt.Sprintf("no credential for tenant %s: Key Vault %s has no secret %q", tenant, s.cfg.VaultURL, name)}
		}
		what := "could not be read"
		if notFound {
			what = "does not exist"
		} else if re != nil {
			what = fmt.Sprintf("could not be read (%d %s)", re.StatusCode, re.ErrorCode)
		}
		return nil, &fault.Error{Code: fault.KeyVaultUnavailable, RetryAfter: 60 * time.Second,
			Message: fmt.Sprintf("the Graph credential in Key Vault %s, secret %q, %s; nothing was triggered", s.cfg.VaultURL, name, what)}
	}
	clientID := s.cfg.ClientID
	if v := resp.Tags["client_id"]; v != nil && *v != "" {
		clientID = *v
	}
	cred, err := s.build(tenantID, clientID, resp.Secret)
	if err != nil {
		return nil, &fault.Error{Code: fault.BadCredential, RetryAfter: 60 * time.Second,
			Message: fmt.Sprintf("the secret %q in Key Vault %s is not a usable credential: %v", name, s.cfg.VaultURL, err)}
	}
	s.log.Info("graph credential read from Key Vault", "vault", s.cfg.VaultURL, "secret", name, "tenant", s.tenantName(tenant))
	return cred, nil
}

// build makes a client credential from a secret: a client secret, a PEM
// certificate with its key, or the base64 PKCS#12 that backs a Key Vault
// certificate (content type application/x-pkcs12).
func (s *Source) build(tenantID, clientID string, sec azsecrets.Secret) (azcore.TokenCredential, error) {
	if sec.Value == nil || *sec.Value == "" {
		return nil, errors.New("it is empty")
	}
	value, contentType := *sec.Value, ""
	if sec.ContentType != nil {
		contentType = strings.ToLower(*sec.ContentType)
	}
	var data []byte
	switch {
	case contentType == "application/x-pkcs12":
		raw, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			return nil, errors.New("content type application/x-pkcs12 but the value is not base64")
		}
		data = raw
	case contentType == "application/x-pem-file" || strings.Contains(value, "-----BEGIN"):
		data = []byte(value)
	}
	if data == nil {
		return azidentity.NewClientSecretCredential(tenantID, clientID, value, &azidentity.ClientSecretCredentialOptions{
			ClientOptions: s.cfg.Options, DisableInstanceDiscovery: s.cfg.DisableInstanceDiscovery, AdditionallyAllowedTenants: s.cfg.AllowedTenants})
	}
	certs, key, err := parseCertificate(data)
	if err != nil {
		return nil, err
	}
	return azidentity.NewClientCertificateCredential(tenantID, clientID, certs, key, &azidentity.ClientCertificateCredentialOptions{
		ClientOptions: s.cfg.Options, DisableInstanceDiscovery: s.cfg.DisableInstanceDiscovery, AdditionallyAllowedTenants: s.cfg.AllowedTenants})
}

func parseCertificate(data []byte) ([]*x509.Certificate, crypto.PrivateKey, error) {
	certs, key, err := azidentity.ParseCertificates(data, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate: %w", err)
	}
	if key == nil || len(certs) == 0 {
		return nil, nil, errors.New("certificate: a certificate and its private key are both needed")
	}
	return certs, key, nil
}

func (s *Source) tenantName(tenant string) string {
	if tenant == "" {
		if s.cfg.TenantID != "" {
			return s.cfg.TenantID + " (default)"
		}
		return "(default)"
	}
	return tenant
}

// firstLine keeps the first line of an identity error: azidentity's later
// lines hold troubleshooting links and raw responses.
func firstLine(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return strings.TrimSpace(msg)
}
