package credential

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets/fake"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/testing/azurefake"
)

const (
	tenant  = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	tenant2 = "5f1c2a3b-4d5e-4f60-8172-93a4b5c6d7e8"
	client  = "0b5c4f1e-2d3a-4b5c-8d6e-7f8091a2b3c4"
	secret  = "s3cr3t-value-never-logged"
)

// vault is the azsecrets SDK's own in-process fake, serving secrets.
type vault struct {
	mu      sync.Mutex
	secrets map[string]azsecrets.Secret
	reads   map[string]int
	fail    int // status to fail every read with, 0 for none
}

func (v *vault) set(name string, s azsecrets.Secret) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.secrets[name] = s
}

func (v *vault) client(t *testing.T) *azsecrets.Client {
	t.Helper()
	srv := fake.Server{GetSecret: func(_ context.Context, name, _ string, _ *azsecrets.GetSecretOptions) (resp azfake.Responder[azsecrets.GetSecretResponse], errResp azfake.ErrorResponder) {
		v.mu.Lock()
		defer v.mu.Unlock()
		v.reads[name]++
		s, ok := v.secrets[name]
		switch {
		case v.fail != 0:
			errResp.SetResponseError(v.fail, "ServiceUnavailable")
		case !ok:
			errResp.SetResponseError(http.StatusNotFound, "SecretNotFound")
		default:
			resp.SetResponse(http.StatusOK, azsecrets.GetSecretResponse{Secret: s}, nil)
		}
		return
	}}
	c, err := azsecrets.NewClient("https://remediator-test.vault.azure.net", &azfake.TokenCredential{}, &azsecrets.ClientOptions{
		ClientOptions: azcore.ClientOptions{Transport: fake.NewServerTransport(&srv), Retry: policy.RetryOptions{MaxRetries: -1}}})
	require.NoError(t, err)
	return c
}

func str(s string) *string { return &s }

func setup(t *testing.T) (*Source, *vault, *azurefake.Entra, *strings.Builder) {
	t.Helper()
	entra := azurefake.NewEntra()
	t.Cleanup(entra.Close)
	v := &vault{secrets: map[string]azsecrets.Secret{}, reads: map[string]int{}}
	logs := &strings.Builder{}
	src := New(Config{
		Mode: "keyvault", Scope: "https://graph.microsoft.com/.default", TenantID: tenant, ClientID: client,
		Vault: v.client(t), VaultURL: "https://remediator-test.vault.azure.net", SecretName: "graph-app",
		Options: azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: entra.URL}, Transport: entra.Client(),
			Retry: policy.RetryOptions{MaxRetries: -1}},
		DisableInstanceDiscovery: true,
	}, slog.New(slog.NewJSONHandler(logs, nil)))
	return src, v, entra, logs
}

func TestClientSecretFromKeyVaultIsCached(t *testing.T) {
	src, v, entra, logs := setup(t)
	v.set("graph-app", azsecrets.Secret{Value: str(secret)})
	entra.Register(azurefake.App{Tenant: tenant, ClientID: client, Secret: secret})

	ctx, err := src.Prepare(context.Background(), "")
	require.NoError(t, err)
	tok, gen, err := src.Token(ctx)
	require.NoError(t, err)
	_, ok := entra.Valid(tok)
	assert.True(t, ok)
	assert.NotZero(t, gen)
	for range 5 {
		_, _, err := src.Token(ctx)
		require.NoError(t, err)
	}
	assert.Equal(t, 1, v.reads["graph-app"], "warm calls make no Key Vault call")
	reqs := entra.Requests()
	require.Len(t, reqs, 1, "the token is cached too")
	assert.Equal(t, "secret", reqs[0].Kind)
	assert.Contains(t, reqs[0].Scope, "https://graph.microsoft.com/.default")
	assert.NotContains(t, logs.String(), secret)
	assert.NotContains(t, logs.String(), tok)
}

func TestCertificateForms(t *testing.T) {
	pemData, err := os.ReadFile("testdata/app.pem")
	require.NoError(t, err)
	pfx, err := os.ReadFile("testdata/app.pfx")
	require.NoError(t, err)
	for name, s := range map[string]azsecrets.Secret{
		"PEM":                                {Value: str(string(pemData)), ContentType: str("application/x-pem-file")},
		"PEM without content type":           {Value: str(string(pemData))},
		"PKCS#12 of a Key Vault certificate": {Value: str(base64.StdEncoding.EncodeToString(pfx)), ContentType: str("application/x-pkcs12")},
	} {
		t.Run(name, func(t *testing.T) {
			src, v, entra, _ := setup(t)
			v.set("graph-app", s)
			entra.Register(azurefake.App{Tenant: tenant, ClientID: client, Certificate: true})
			_, _, err := src.Token(context.Background())
			require.NoError(t, err)
			require.Len(t, entra.Requests(), 1)
			assert.Equal(t, "assertion", entra.Requests()[0].Kind, "a signed client assertion, not a secret")
		})
	}
	t.Run("PKCS#12 that is not base64", func(t *testing.T) {
		src, v, _, _ := setup(t)
		v.set("graph-app", azsecrets.Secret{Value: str("%%%"), ContentType: str("application/x-pkcs12")})
		_, _, err := src.Token(context.Background())
		var ce *fault.Error
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, fault.BadCredential, ce.Code)
	})
}

func TestMultiTenant(t *testing.T) {
	src, v, entra, _ := setup(t)
	v.set("graph-app", azsecrets.Secret{Value: str(secret)})
	v.set("graph-app-"+tenant2, azsecrets.Secret{Value: str("other-secret"), Tags: map[string]*string{"client_id": str("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")}})
	entra.Register(azurefake.App{Tenant: tenant, ClientID: client, Secret: secret})
	entra.Register(azurefake.App{Tenant: tenant2, ClientID: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", Secret: "other-secret"})

	ctx, err := src.Prepare(context.Background(), tenant2)
	require.NoError(t, err)
	assert.Equal(t, tenant2, TenantFrom(ctx))
	tok, _, err := src.Token(ctx)
	require.NoError(t, err)
	who, _ := entra.Valid(tok)
	assert.Equal(t, tenant2+"|9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", who, "the tenant's own secret and client id (from the secret's tag)")

	ctx, err = src.Prepare(context.Background(), strings.ToUpper(tenant))
	require.NoError(t, err, "naming the default tenant is the default tenant")
	tok, _, err = src.Token(ctx)
	require.NoError(t, err)
	who, _ = entra.Valid(tok)
	assert.Equal(t, tenant+"|"+client, who)

	_, err = src.Prepare(context.Background(), "00000000-0000-4000-8000-000000000000")
	var ce *fault.Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, fault.UnknownTenant, ce.Code)
	assert.Contains(t, ce.Message, `"graph-app-00000000-0000-4000-8000-000000000000"`)
}

func TestKeyVaultProblems(t *testing.T) {
	t.Run("down", func(t *testing.T) {
		src, v, _, _ := setup(t)
		v.set("graph-app", azsecrets.Secret{Value: str(secret)})
		v.fail = 503
		_, err := src.Prepare(context.Background(), "")
		var ce *fault.Error
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, fault.KeyVaultUnavailable, ce.Code)
		assert.Greater(t, ce.RetryAfter.Seconds(), 0.0)
		assert.Contains(t, ce.Message, "https://remediator-test.vault.azure.net")
		assert.Contains(t, ce.Message, `"graph-app"`)
		assert.NotContains(t, ce.Message, secret)
	})
	t.Run("secret missing", func(t *testing.T) {
		src, _, _, _ := setup(t)
		_, err := src.Prepare(context.Background(), "")
		var ce *fault.Error
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, fault.KeyVaultUnavailable, ce.Code)
		assert.Contains(t, ce.Message, "does not exist")
	})
	t.Run("token service down", func(t *testing.T) {
		src, v, entra, _ := setup(t)
		v.set("graph-app", azsecrets.Secret{Value: str(secret)})
		entra.Register(azurefake.App{Tenant: tenant, ClientID: client, Secret: secret})
		entra.SetDown(true)
		_, err := src.Prepare(context.Background(), "")
		var ce *fault.Error
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, fault.TokenUnavailable, ce.Code)
		assert.NotContains(t, ce.Message, secret)
	})
}

func TestRotationRereadsOnce(t *testing.T) {
	src, v, entra, _ := setup(t)
	v.set("graph-app", azsecrets.Secret{Value: str(secret)})
	entra.Register(azurefake.App{Tenant: tenant, ClientID: client, Secret: secret})
	ctx := context.Background()
	old, gen, err := src.Token(ctx)
	require.NoError(t, err)

	// The secret rotates: Entra revokes the old tokens, Key Vault has the new secret.
	entra.Register(azurefake.App{Tenant: tenant, ClientID: client, Secret: "rotated"})
	v.set("graph-app", azsecrets.Secret{Value: str("rotated")})
	_, ok := entra.Valid(old)
	require.False(t, ok)

	src.Invalidate(ctx, gen)
	src.Invalidate(ctx, gen) // a second 401 of the same generation changes nothing
	tok, gen2, err := src.Token(ctx)
	require.NoError(t, err)
	_, ok = entra.Valid(tok)
	assert.True(t, ok)
	assert.NotEqual(t, gen, gen2)
	src.Invalidate(ctx, gen) // stale: the current credential stays
	_, _, err = src.Token(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, v.reads["graph-app"], "one re-read, not one per 401")
}

func TestSingleCredentialModes(t *testing.T) {
	src := New(Config{Mode: "managed-identity", Scope: "https://graph.microsoft.com/.default", Credential: &azfake.TokenCredential{}},
		slog.New(slog.NewJSONHandler(io.Discard, nil)))
	ctx, err := src.Prepare(context.Background(), "")
	require.NoError(t, err)
	tok, _, err := src.Token(ctx)
	require.NoError(t, err)
	assert.Equal(t, "fake_token", tok)
	_, err = src.Prepare(context.Background(), tenant2)
	var ce *fault.Error
	require.True(t, errors.As(err, &ce))
	assert.Equal(t, fault.UnknownTenant, ce.Code, "other tenants need keyvault mode")
}

func TestScopeAndHosts(t *testing.T) {
	assert.Equal(t, "https://graph.microsoft.com/.default", scopeFor("https://graph.microsoft.com/beta"))
	assert.Equal(t, "https://graph.microsoft.us/.default", scopeFor("https://graph.microsoft.us/beta"))
	assert.Equal(t, "https://graph.microsoft.com/.default", scopeFor("http://127.0.0.1:8081/beta"))
	assert.True(t, isVaultHost("my-vault.vault.azure.net"))
	assert.False(t, isVaultHost("127.0.0.1"))
	assert.True(t, isEntraHost("https://login.microsoftonline.com/"))
	assert.False(t, isEntraHost("https://127.0.0.1:4443"))
}

func TestSlowKeyVaultStopsAtTheCallersDeadline(t *testing.T) {
	src, v, _, _ := setup(t)
	v.set("graph-app", azsecrets.Secret{Value: str(secret)})
	slow := New(Config{Mode: "keyvault", Scope: src.cfg.Scope, TenantID: tenant, ClientID: client, SecretName: "graph-app",
		VaultURL: src.cfg.VaultURL, Vault: slowVault{}}, src.log)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := slow.Prepare(ctx, "")
	var ce *fault.Error
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, []fault.Code{fault.KeyVaultUnavailable, fault.BadCredential}, ce.Code)
	assert.Contains(t, ce.Message, `"graph-app"`)
}

// slowVault answers only when the caller gives up.
type slowVault struct{}

func (slowVault) GetSecret(ctx context.Context, _, _ string, _ *azsecrets.GetSecretOptions) (azsecrets.GetSecretResponse, error) {
	select {
	case <-ctx.Done():
		return azsecrets.GetSecretResponse{}, ctx.Err()
	case <-time.After(time.Minute):
		return azsecrets.GetSecretResponse{}, errors.New("too late")
	}
}

// gatedVault holds reads of one secret until released, and counts reads.
type gatedVault struct {
	SecretGetter
	slow    string
	release chan struct{}
	mu      sync.Mutex
	reads   map[string]int
}

func (g *gatedVault) GetSecret(ctx context.Context, name, version string, o *azsecrets.GetSecretOptions) (azsecrets.GetSecretResponse, error) {
	g.mu.Lock()
	g.reads[name]++
	g.mu.Unlock()
	if name == g.slow {
		select {
		case <-g.release:
		case <-ctx.Done():
			return azsecrets.GetSecretResponse{}, ctx.Err()
		}
	}
	return g.SecretGetter.GetSecret(ctx, name, version, o)
}

// TestNoLockAcrossTheVault: a slow Key Vault read for one tenant does not
// delay another tenant; concurrent first requests for one tenant share one
// read; a lasting 401 re-reads the vault once, not once per device.
func TestNoLockAcrossTheVault(t *testing.T) {
	t.Parallel()
	src, v, entra, _ := setup(t)
	v.set("graph-app", azsecrets.Secret{Value: str(secret)})
	v.set("graph-app-"+tenant2, azsecrets.Secret{Value: str("other-secret")})
	entra.Register(azurefake.App{Tenant: tenant, ClientID: client, Secret: secret})
	entra.Register(azurefake.App{Tenant: tenant2, ClientID: client, Secret: "other-secret"})
	g := &gatedVault{SecretGetter: src.cfg.Vault, slow: "graph-app-" + tenant2, release: make(chan struct{}), reads: map[string]int{}}
	src.cfg.Vault = g

	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			_, err := src.Prepare(context.Background(), tenant2) // waits for the gated read
			assert.NoError(t, err)
		})
	}
	require.Eventually(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.reads["graph-app-"+tenant2] == 1 }, 5*time.Second, 5*time.Millisecond)
	started := time.Now()
	ctx, err := src.Prepare(context.Background(), "")
	require.NoError(t, err, "the default tenant does not wait for tenant2's vault read")
	assert.Less(t, time.Since(started), time.Second)
	close(g.release)
	wg.Wait()
	assert.Equal(t, 1, g.reads["graph-app-"+tenant2], "five concurrent first requests, one vault read")

	// A lasting 401: every device invalidates the generation it used.
	for range 6 {
		_, gen, err := src.Token(ctx)
		require.NoError(t, err)
		src.Invalidate(ctx, gen)
	}
	assert.Equal(t, 2, g.reads["graph-app"], "the first read and one re-read, not one per device")
}

// TestMultiTenantApp: with ALLOWED_TENANT_IDS, the app's one credential
// (from Key Vault here) gets tokens in each allowed tenant, read once;
// a tenant outside the list is refused before any token is asked for.
func TestMultiTenantApp(t *testing.T) {
	t.Parallel()
	src, v, entra, _ := setup(t)
	src.cfg.AllowedTenants = []string{tenant2}
	v.set("graph-app", azsecrets.Secret{Value: str(secret)})
	for _, tn := range []string{tenant, tenant2} {
		entra.Register(azurefake.App{Tenant: tn, ClientID: client, Secret: secret}) // consented in both
	}
	for tn, want := range map[string]string{"": tenant, tenant2: tenant2, strings.ToUpper(tenant2): tenant2} {
		ctx, err := src.Prepare(context.Background(), tn)
		require.NoError(t, err, tn)
		tok, _, err := src.Token(ctx)
		require.NoError(t, err)
		who, ok := entra.Valid(tok)
		require.True(t, ok)
		assert.Equal(t, want+"|"+client, who, "a token of tenant %q", tn)
	}
	assert.Equal(t, 1, v.reads["graph-app"], "one credential for every tenant")
	assert.Zero(t, v.reads["graph-app-"+tenant2], "no secret per tenant")

	before := len(entra.Requests())
	_, err := src.Prepare(context.Background(), "00000000-0000-4000-8000-000000000000")
	var ce *fault.Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, fault.UnknownTenant, ce.Code)
	assert.Contains(t, ce.Message, "ALLOWED_TENANT_IDS")
	assert.Len(t, entra.Requests(), before, "no token asked for")
}
