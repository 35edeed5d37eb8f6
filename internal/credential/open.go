package credential

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// Settings are the deployment's choices, from configuration.
type Settings struct {
	Mode         string // managed-identity, client-secret, keyvault
	GraphBaseURL string
	// TenantID and ClientID name the app registration (client-secret and
	// keyvault modes).
	TenantID, ClientID string
	// ClientSecret is used to build the credential and not kept.
	ClientSecret string
	// ManagedIdentityClientID selects a user-assigned identity.
	ManagedIdentityClientID string
	// VaultURL and SecretName locate the credential in keyvault mode.
	VaultURL, SecretName string
	// AuthorityHost overrides Microsoft Entra ID's host (sovereign clouds,
	// tests); "" is the public cloud.
	AuthorityHost string
	// VaultCredential is how keyvault mode reaches Key Vault:
	// "managed-identity" (default, Azure) or "environment" (an app
	// credential in AZURE_TENANT_ID, AZURE_CLIENT_ID and
	// AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH: AWS Lambda).
	VaultCredential string
	// AllowedTenants make the app registration multi-tenant
	// (ALLOWED_TENANT_IDS, lower case).
	AllowedTenants []string
}

// Open builds the Source a deployment's settings describe.
func Open(s Settings, log *slog.Logger) (*Source, error) {
	cfg := Config{Mode: s.Mode, Scope: scopeFor(s.GraphBaseURL), TenantID: s.TenantID, ClientID: s.ClientID,
		VaultURL: s.VaultURL, SecretName: s.SecretName, AllowedTenants: s.AllowedTenants}
	if s.AuthorityHost != "" {
		cfg.Options.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: s.AuthorityHost}
		cfg.DisableInstanceDiscovery = !isEntraHost(s.AuthorityHost)
	}
	var err error
	switch s.Mode {
	case "client-secret":
		cfg.Credential, err = azidentity.NewClientSecretCredential(s.TenantID, s.ClientID, s.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: cfg.Options, DisableInstanceDiscovery: cfg.DisableInstanceDiscovery,
				AdditionallyAllowedTenants: s.AllowedTenants})
	case "keyvault":
		if s.VaultCredential == "environment" {
			cfg.Credential, err = azidentity.NewEnvironmentCredential(&azidentity.EnvironmentCredentialOptions{
				ClientOptions: cfg.Options, DisableInstanceDiscovery: cfg.DisableInstanceDiscovery})
			break
		}
		cfg.Credential, err = managedIdentity(s.ManagedIdentityClientID)
	case "managed-identity":
		cfg.Credential, err = managedIdentity(s.ManagedIdentityClientID)
	default:
		return nil, fmt.Errorf("credential: unknown mode %q", s.Mode)
	}
	if err != nil {
		return nil, fmt.Errorf("credential: %s: %s", s.Mode, firstLine(err))
	}
	if s.Mode == "keyvault" {
		u, err := url.Parse(s.VaultURL)
		if err != nil {
			return nil, fmt.Errorf("credential: KEY_VAULT_URL: %w", err)
		}
		client, err := azsecrets.NewClient(s.VaultURL, cfg.Credential, &azsecrets.ClientOptions{
			// A request waits for the vault: two quick retries, then the
			// caller gets 503 with Retry-After and sends again later
			// (azcore's default backs off for about six seconds).
			ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: time.Second}},
			// Key Vault's challenge names vault.azure.net; only a vault
			// elsewhere (a test double) skips the check.
			DisableChallengeResourceVerification: !isVaultHost(u.Hostname()),
		})
		if err != nil {
			return nil, fmt.Errorf("credential: Key Vault client: %w", err)
		}
		cfg.Vault = client
	}
	return New(cfg, log), nil
}

func managedIdentity(clientID string) (azcore.TokenCredential, error) {
	opts := &azidentity.ManagedIdentityCredentialOptions{}
	if clientID != "" {
		opts.ID = azidentity.ClientID(clientID)
	}
	return azidentity.NewManagedIdentityCredential(opts)
}

// scopeFor is the token scope of the Graph cloud at base.
func scopeFor(base string) string {
	if u, err := url.Parse(base); err == nil {
		switch h := strings.ToLower(u.Hostname()); h {
		case "graph.microsoft.us", "dod-graph.microsoft.us", "microsoftgraph.chinacloudapi.cn":
			return "https://" + h + "/.default"
		}
	}
	return "https://graph.microsoft.com/.default"
}

func isEntraHost(authority string) bool {
	u, err := url.Parse(authority)
	if err != nil {
		return false
	}
	switch strings.ToLower(u.Hostname()) {
	case "login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn", "login.partner.microsoftonline.cn":
		return true
	}
	return false
}

func isVaultHost(host string) bool {
	host = strings.ToLower(host)
	for _, suffix := range []string{".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net", ".managedhsm.azure.net"} {
		if strings.HasSuffix(host, suffix) {
			return true
		}
	}
	return false
}
