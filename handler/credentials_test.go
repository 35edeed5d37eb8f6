package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/testing/azurefake"
)

const (
	homeTenant  = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	otherTenant = "5f1c2a3b-4d5e-4f60-8172-93a4b5c6d7e8"
	appID       = "0b5c4f1e-2d3a-4b5c-8d6e-7f8091a2b3c4"
	appSecret   = "app-secret-value-1"
)

// TestKeyVaultCredentialsEndToEnd runs the built binary as on Azure with
// GRAPH_AUTH=keyvault: it gets a managed-identity token from a fake App
// Service identity endpoint, reads the app's secret from a fake Key Vault
// (TLS, 401 challenge), gets a Graph token from a fake Entra ID, and
// triggers devices on the simulator, which accepts only tokens Entra issued.
func TestKeyVaultCredentialsEndToEnd(t *testing.T) {
	t.Parallel()
	entra := azurefake.NewEntra()
	t.Cleanup(entra.Close)
	kv := azurefake.NewKeyVault(homeTenant)
	t.Cleanup(kv.Close)
	mi := azurefake.NewManagedIdentity()
	t.Cleanup(mi.Close)
	certFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(certFile, azurefake.CertPEM(entra.Server), 0o600))

	kv.Set("graph-app", azurefake.Secret{Value: appSecret})
	entra.Register(azurefake.App{Tenant: homeTenant, ClientID: appID, Secret: appSecret})
	kv.Set("graph-app-"+otherTenant, azurefake.Secret{Value: "other-tenant-secret"})
	entra.Register(azurefake.App{Tenant: otherTenant, ClientID: appID, Secret: "other-tenant-secret"})

	f := newTenant(t, 300, intunesim.Options{Authorize: func(token string) (string, bool) { return entra.Valid(token) }})
	w := startWorker(t, "GRAPH_BASE_URL="+f.sim.URL, "GRAPH_AUTH=keyvault", "GRAPH_WRITE_RATE=2000", "GRAPH_READ_RATE=100000",
		"GRAPH_TENANT_ID="+homeTenant, "GRAPH_CLIENT_ID="+appID, "KEY_VAULT_URL="+kv.URL, "GRAPH_CREDENTIAL_SECRET=graph-app",
		"IDENTITY_ENDPOINT="+mi.Endpoint(), "IDENTITY_HEADER="+mi.Header, "AZURE_AUTHORITY_HOST="+entra.URL, "SSL_CERT_FILE="+certFile)

	post := func(devs []intunesim.Device, extra string) (int, []byte, string) {
		resp, b := hostPost(t, w.url+"/api/remediate", f.request(devs, extra))
		return resp.StatusCode, b, resp.Header.Get("Retry-After")
	}

	status, b, _ := post(f.eligible(0, 5), "")
	require.Equal(t, 200, status, "%s\n%s", b, w.logs.String())
	assert.Equal(t, 5, summaryOf(t, b).Counts.Succeeded)
	assert.Equal(t, 1, kv.Reads("graph-app"))
	assert.GreaterOrEqual(t, mi.Calls(), 1, "Key Vault was read with the managed identity")
	for _, r := range f.sim.Records() {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		who, ok := entra.Valid(tok)
		assert.True(t, ok, "every Graph request carries a live token")
		assert.Equal(t, homeTenant+"|"+appID, who)
	}

	status, _, _ = post(f.eligible(5, 5), "")
	require.Equal(t, 200, status)
	assert.Equal(t, 1, kv.Reads("graph-app"), "a warm worker makes no Key Vault call")

	// Rotation: Entra revokes the old secret's tokens and Key Vault holds the new one.
	entra.Register(azurefake.App{Tenant: homeTenant, ClientID: appID, Secret: "app-secret-value-2"})
	kv.Set("graph-app", azurefake.Secret{Value: "app-secret-value-2"})
	status, b, _ = post(f.eligible(10, 5), "")
	require.Equal(t, 200, status, "%s", b)
	assert.Equal(t, 5, summaryOf(t, b).Counts.Succeeded)
	assert.Equal(t, 2, kv.Reads("graph-app"), "the 401 made one re-read")

	// Another tenant, by its own secret.
	status, b, _ = post(f.eligible(15, 2), `,"tenant_id":"`+otherTenant+`"`)
	require.Equal(t, 200, status, "%s", b)
	assert.Equal(t, 1, kv.Reads("graph-app-"+otherTenant))

	triggers := f.sim.Counters().Triggers
	status, b, _ = post(f.eligible(20, 2), `,"tenant_id":"00000000-0000-4000-8000-000000000000"`)
	assert.Equal(t, 403, status)
	assert.Contains(t, string(b), "unknown_tenant")

	// Key Vault down for a tenant not yet cached: 503, nothing triggered.
	kv.SetDown(true)
	status, b, retry := post(f.eligible(22, 2), `,"tenant_id":"9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"`)
	assert.Equal(t, 503, status)
	assert.NotEmpty(t, retry)
	var e struct {
		Error struct{ Code, Message string }
	}
	require.NoError(t, json.Unmarshal(b, &e))
	assert.Contains(t, e.Error.Message, kv.URL)
	assert.Contains(t, e.Error.Message, "graph-app-9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a")
	assert.Equal(t, triggers, f.sim.Counters().Triggers, "nothing was triggered")

	logs := w.logs.String()
	for _, secret := range []string{appSecret, "app-secret-value-2", "other-tenant-secret", "graph-token-", "mi-token-"} {
		assert.NotContains(t, logs, secret, "no secret or token in the logs")
	}
}

// TestClientSecretMode runs the binary with GRAPH_AUTH=client-secret.
func TestClientSecretMode(t *testing.T) {
	t.Parallel()
	entra, certFile := fakeEntra(t)
	entra.Register(azurefake.App{Tenant: homeTenant, ClientID: appID, Secret: appSecret})
	f := newTenant(t, 200, intunesim.Options{Authorize: func(token string) (string, bool) { return entra.Valid(token) }})
	w := startWorker(t, "GRAPH_BASE_URL="+f.sim.URL, "GRAPH_AUTH=client-secret", "GRAPH_WRITE_RATE=2000",
		"GRAPH_TENANT_ID="+homeTenant, "GRAPH_CLIENT_ID="+appID, "GRAPH_CLIENT_SECRET="+appSecret,
		"AZURE_AUTHORITY_HOST="+entra.URL, "SSL_CERT_FILE="+certFile)
	resp, b := hostPost(t, w.url+"/api/remediate", f.request(f.eligible(0, 3), ""))
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	assert.Equal(t, 3, summaryOf(t, b).Counts.Succeeded)

	// The secret changes under a running worker and Entra revokes its
	// token: each device's trigger gets a 401, the credential is resolved
	// once more (in this mode: the same secret), the retry gets a 401 too,
	// and that stands. Two requests per device, never a loop.
	entra.Register(azurefake.App{Tenant: homeTenant, ClientID: appID, Secret: "changed"})
	f.sim.Reset()
	devs := f.eligible(3, 2)
	resp, b = hostPost(t, w.url+"/api/remediate", f.request(devs, `,"validate_device_exists":false`))
	assert.Equal(t, 424, resp.StatusCode, "%s", b)
	for _, d := range summaryOf(t, b).Devices {
		assert.Equal(t, "failed", string(d.Outcome))
		assert.Equal(t, 401, d.HTTPStatus)
		assert.Equal(t, "InvalidAuthenticationToken", d.ErrorCode)
		assert.Equal(t, 2, d.Attempts, "the retry after the 401 is an attempt of the one retry loop, counted as the requests are")
	}
	assert.Len(t, f.sim.Records(), 4)
	assert.Zero(t, f.sim.Counters().Triggers)
	assert.NotContains(t, w.logs.String(), appSecret)
}

// TestMultiTenantAppMode: with ALLOWED_TENANT_IDS, the app's one client
// secret gets tokens in each allowed tenant, through the built binary; a
// tenant outside the list is a 403 and nothing is sent.
func TestMultiTenantAppMode(t *testing.T) {
	t.Parallel()
	entra, certFile := fakeEntra(t)
	for _, tn := range []string{homeTenant, otherTenant} {
		entra.Register(azurefake.App{Tenant: tn, ClientID: appID, Secret: appSecret}) // consented in both
	}
	f := newTenant(t, 200, intunesim.Options{Authorize: func(token string) (string, bool) { return entra.Valid(token) }})
	w := startWorker(t, "GRAPH_BASE_URL="+f.sim.URL, "GRAPH_AUTH=client-secret", "GRAPH_WRITE_RATE=2000",
		"GRAPH_TENANT_ID="+homeTenant, "GRAPH_CLIENT_ID="+appID, "GRAPH_CLIENT_SECRET="+appSecret, "ALLOWED_TENANT_IDS="+otherTenant,
		"AZURE_AUTHORITY_HOST="+entra.URL, "SSL_CERT_FILE="+certFile)
	resp, b := hostPost(t, w.url+"/api/remediate", f.request(f.eligible(0, 2), `,"tenant_id":"`+otherTenant+`"`))
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	for _, r := range f.sim.Records() {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		who, ok := entra.Valid(tok)
		assert.True(t, ok)
		assert.Equal(t, otherTenant+"|"+appID, who, "a token of the request's tenant")
	}
	f.sim.Reset()
	resp, b = hostPost(t, w.url+"/api/remediate", f.request(f.eligible(2, 1), `,"tenant_id":"00000000-0000-4000-8000-000000000000"`))
	assert.Equal(t, 403, resp.StatusCode, "%s", b)
	assert.Contains(t, string(b), "unknown_tenant")
	assert.Empty(t, f.sim.Records(), "nothing sent")
	assert.NotContains(t, w.logs.String(), appSecret)
}

// fakeEntra starts a fake Entra ID and writes its TLS certificate where
// the binary will trust it (SSL_CERT_FILE).
func fakeEntra(t testing.TB) (*azurefake.Entra, string) {
	t.Helper()
	entra := azurefake.NewEntra()
	t.Cleanup(entra.Close)
	certFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(certFile, azurefake.CertPEM(entra.Server), 0o600))
	return entra, certFile
}
