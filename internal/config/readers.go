package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/intune"
)

func readGraphBaseURL(l *loader, v string) {
	l.c.GraphBaseURL = strings.TrimSuffix(v, "/")
	if v == "" {
		return
	}
	u, err := url.Parse(l.c.GraphBaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		l.bad("GRAPH_BASE_URL", "%q is not an http(s) URL", l.c.GraphBaseURL)
		return
	}
	l.microsoft = isMicrosoftGraph(u.Hostname())
	if u.Scheme == "http" && l.microsoft {
		l.bad("GRAPH_BASE_URL", "Microsoft Graph is only reachable over https")
	}
}

func readGraphAuth(l *loader, v string) {
	if v == "" {
		v = "none"
		if l.c.GraphBaseURL != "" && l.microsoft {
			v = "managed-identity"
		}
	}
	l.c.GraphAuth = v
	switch v {
	case "none":
		if l.c.GraphBaseURL != "" && l.microsoft {
			l.bad("GRAPH_AUTH", "\"none\" sends no token; it is only for simulators, not for %s", l.c.GraphBaseURL)
		}
	case "managed-identity":
		if l.lambda {
			l.bad("GRAPH_AUTH", "managed-identity is not available on AWS Lambda; use client-secret, or keyvault with KEY_VAULT_CREDENTIAL=environment")
		}
	case "client-secret", "keyvault":
	default:
		l.bad("GRAPH_AUTH", "%q must be one of managed-identity, client-secret, keyvault, none", v)
	}
}

// readClientSecret checks the secret is there; its value is read where
// the credential is built and never kept in Config.
func readClientSecret(l *loader, _ string) {
	if l.c.GraphAuth != "client-secret" {
		return
	}
	switch raw := l.getenv("GRAPH_CLIENT_SECRET"); {
	case raw == "":
		l.bad("GRAPH_CLIENT_SECRET", "is required with GRAPH_AUTH=client-secret")
	case strings.HasPrefix(raw, "@Microsoft.KeyVault("):
		l.bad("GRAPH_CLIENT_SECRET", "is an unresolved Key Vault reference; grant the app's identity access to the vault, or use GRAPH_AUTH=keyvault")
	}
}

func readKeyVaultURL(l *loader, v string) {
	if l.c.GraphAuth != "keyvault" {
		return
	}
	l.c.KeyVaultURL = v
	if u, err := url.Parse(v); v == "" || err != nil || u.Scheme != "https" || u.Host == "" {
		l.bad("KEY_VAULT_URL", "%q must be the vault's https URL, e.g. https://my-vault.vault.azure.net", v)
	}
}

func readKeyVaultCredential(l *loader, v string) {
	if l.c.GraphAuth != "keyvault" {
		return
	}
	switch v {
	case "":
		v = "managed-identity"
		if l.lambda {
			v = "environment"
		}
	case "managed-identity", "environment":
	default:
		l.bad("KEY_VAULT_CREDENTIAL", "%q must be managed-identity or environment", v)
	}
	l.c.KeyVaultCredential = v
	if v == "environment" && (l.getenv("AZURE_TENANT_ID") == "" || l.getenv("AZURE_CLIENT_ID") == "" ||
		(l.getenv("AZURE_CLIENT_SECRET") == "" && l.getenv("AZURE_CLIENT_CERTIFICATE_PATH") == "")) {
		l.bad("KEY_VAULT_CREDENTIAL", "environment needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH) for reading Key Vault")
	}
}

func readCredentialSecret(l *loader, v string) {
	if l.c.GraphAuth != "keyvault" {
		return
	}
	l.c.CredentialSecret = v
	if !secretNameRE.MatchString(v) {
		l.bad("GRAPH_CREDENTIAL_SECRET", "%q must be a Key Vault secret name (letters, digits and dashes)", v)
	}
}

// readManagedIdentity: AZURE_CLIENT_ID selects a user-assigned identity,
// except where it is the app credential that reads Key Vault.
func readManagedIdentity(l *loader, v string) {
	if l.c.KeyVaultCredential == "environment" || v == "" {
		return
	}
	l.c.ManagedIdentityClientID = v
	if !intune.IsGUID(v) {
		l.bad("AZURE_CLIENT_ID", "%q is not a client id (a GUID)", v)
	}
}

func readAllowedTenants(l *loader, v string) {
	if v == "" {
		return
	}
	if l.c.GraphAuth != "client-secret" && l.c.GraphAuth != "keyvault" {
		l.bad("ALLOWED_TENANT_IDS", "needs GRAPH_AUTH=client-secret or keyvault: a multi-tenant app registration's credential")
		return
	}
	for _, id := range strings.Split(v, ",") {
		if id = strings.ToLower(strings.TrimSpace(id)); !intune.IsGUID(id) {
			l.bad("ALLOWED_TENANT_IDS", "%q is not a tenant id (a GUID)", id)
			continue
		}
		l.c.AllowedTenants = append(l.c.AllowedTenants, id)
	}
}

func readAuthorityHost(l *loader, v string) {
	l.c.AuthorityHost = v
	if u, err := url.Parse(v); v != "" && (err != nil || u.Scheme != "https") {
		l.bad("AZURE_AUTHORITY_HOST", "%q must be an https URL", v)
	}
}

func readAllowedScripts(l *loader, v string) {
	if v == "" {
		return
	}
	l.c.AllowedScripts = map[string]bool{}
	for _, id := range strings.Split(v, ",") {
		if id = strings.TrimSpace(id); !intune.IsGUID(id) {
			l.bad("ALLOWED_SCRIPT_POLICY_IDS", "%q is not a script id (a GUID)", id)
		}
		l.c.AllowedScripts[strings.ToLower(id)] = true
	}
}

func readScriptPins(l *loader, v string) {
	if v == "" {
		return
	}
	l.c.ScriptPins = map[string]time.Time{}
	for _, pin := range strings.Split(v, ",") {
		id, at, ok := strings.Cut(strings.TrimSpace(pin), "=")
		t, err := time.Parse(time.RFC3339, at)
		if !ok || err != nil || !intune.IsGUID(id) {
			l.bad("ALLOWED_SCRIPT_PINS", "%q must be <script id>=<lastModifiedDateTime, RFC 3339>", pin)
			continue
		}
		l.c.ScriptPins[strings.ToLower(id)] = t
	}
}

func readCooldown(l *loader, v string) {
	if v == "0" {
		return
	}
	duration(func(c *Config, d time.Duration) { c.DeviceCooldown = d })(l, v)
}

func readLogLevel(l *loader, v string) {
	switch lvl := strings.ToLower(v); lvl {
	case "info":
		l.c.LogLevel = slog.LevelInfo
	case "debug":
		l.c.LogLevel = slog.LevelDebug
	case "warn", "warning":
		l.c.LogLevel = slog.LevelWarn
	case "error":
		l.c.LogLevel = slog.LevelError
	default:
		l.bad("LOG_LEVEL", "%q must be debug, info, warn or error", lvl)
	}
}

func readHTTPBudget(l *loader, v string) {
	duration(func(c *Config, d time.Duration) { c.HTTPResponseBudget = d })(l, v)
	if l.c.HTTPResponseBudget > 230*time.Second {
		l.bad("HTTP_RESPONSE_BUDGET", "%s is over the 230 s after which Azure's front end drops HTTP responses", l.c.HTTPResponseBudget)
	}
}

func readSchedule(l *loader, v string) {
	l.c.RemediationSchedule = v
	if n := len(strings.Fields(v)); v != "" && n != 5 && n != 6 {
		l.bad("REMEDIATION_SCHEDULE", "%q is not an NCRONTAB expression of 5 or 6 fields such as \"0 0 6 * * 1-5\"", v)
	}
}

func readScheduledRequest(l *loader, v string) {
	if v != "" {
		l.c.ScheduledRequest = []byte(v)
	}
}

func readScheduledRequestFile(l *loader, file string) {
	switch {
	case file == "":
		return
	case l.c.ScheduledRequest != nil:
		l.bad("SCHEDULED_REQUEST", "set either SCHEDULED_REQUEST or SCHEDULED_REQUEST_FILE, not both")
		return
	}
	if root := l.get("FUNCTIONS_APP_ROOT_PATH"); root != "" && !filepath.IsAbs(file) {
		file = filepath.Join(root, file)
	}
	b, err := readFile(file)
	if err != nil {
		l.bad("SCHEDULED_REQUEST_FILE", "%v", err)
	}
	l.c.ScheduledRequest = b
}

func readPublicBaseURL(l *loader, v string) {
	if v == "" {
		return
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		l.bad("PUBLIC_BASE_URL", "%q must be a scheme and host such as https://remediation.contoso.com", v)
		return
	}
	l.c.PublicBaseURL = u.Scheme + "://" + u.Host
}

func readAlertScript(l *loader, v string) {
	l.c.AlertScriptPolicyID = v
	if v != "" && !intune.IsGUID(v) {
		l.bad("ALERT_SCRIPT_POLICY_ID", "%q is not a GUID", v)
	}
}

func readQueueName(l *loader, v string) {
	l.c.RemediationQueue = v
	if !queueNameRE.MatchString(v) {
		l.bad("REMEDIATION_QUEUE", "%q is not a queue name (3-63 lower-case letters, digits and single hyphens)", v)
	}
}

func readTableName(l *loader, v string) {
	l.c.RunsTable = v
	if !tableNameRE.MatchString(v) {
		l.bad("RUNS_TABLE", "%q is not a table name (3-63 letters and digits, starting with a letter)", v)
	}
}

var secretNameRE = regexp.MustCompile(`^[0-9A-Za-z-]{1,90}$`)

var (
	queueNameRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)
	tableNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{2,62}$`)
)

// readFile reads a deployed request file, refusing anything over 1 MiB.
func readFile(name string) ([]byte, error) {
	st, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if st.Size() > 1<<20 {
		return nil, fmt.Errorf("%s is over 1 MiB", name)
	}
	return os.ReadFile(name)
}

func isMicrosoftGraph(host string) bool {
	host = strings.ToLower(host)
	for _, h := range []string{"graph.microsoft.com", "graph.microsoft.us", "dod-graph.microsoft.us", "microsoftgraph.chinacloudapi.cn"} {
		if host == h {
			return true
		}
	}
	return false
}
