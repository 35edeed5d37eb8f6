// Package config reads remediator's settings from the environment (app
// settings on Azure, environment variables on Lambda and locally). Every
// problem is reported at once, so a misconfigured deployment fails at start
// with one message that names each setting at fault.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Config is the whole of remediator's configuration. It holds no secrets.
type Config struct {
	// GraphBaseURL is the Graph endpoint; "" when GRAPH_BASE_URL is unset,
	// which local runs take as "start the embedded simulator".
	GraphBaseURL string
	// GraphAuth is how tokens are obtained: "none" for simulators.
	GraphAuth string
	// MaxConcurrency bounds Graph calls in flight.
	MaxConcurrency int
	// GraphWriteRate and GraphReadRate are the process-wide paces per
	// second.
	GraphWriteRate, GraphReadRate float64
	// MaxDevicesPerRun caps the devices of one request.
	MaxDevicesPerRun int
	// GraphCallTimeout bounds one Graph request.
	GraphCallTimeout time.Duration
	// LogLevel is the slog level (debug, info, warn, error).
	LogLevel slog.Level
	// Port is where `serve` listens locally.
	Port int

	// FunctionTimeout mirrors host.json functionTimeout: every invocation
	// ends before it.
	FunctionTimeout time.Duration
	// StorageAccountName is AzureWebJobsStorage__accountName (identity-
	// based storage); the connection string AzureWebJobsStorage is a
	// secret and is read where the store is opened, never kept here.
	StorageAccountName, StorageTableURI, StorageQueueURI string
	// RemediationQueue is the work queue of asynchronous runs; RunsTable
	// the table of runs, idempotency keys and cooldowns.
	RemediationQueue, RunsTable string
	// IdempotencyTTL is how long answers are kept for Idempotency-Key.
	IdempotencyTTL time.Duration
	// RunPageSize is the number of devices per page of GET runs/{id}.
	RunPageSize int
	// SyncBudget is the longest a mode auto run answers synchronously.
	SyncBudget time.Duration
	// HTTPResponseBudget bounds HTTP invocations below the 230 s front-end
	// limit.
	HTTPResponseBudget time.Duration
	// RemediationSchedule is the timer's NCRONTAB expression (read by the
	// host through %REMEDIATION_SCHEDULE%; checked here).
	RemediationSchedule string
	// ScheduledRequest is the request body the timer runs (from
	// SCHEDULED_REQUEST or the file SCHEDULED_REQUEST_FILE), nil if none.
	ScheduledRequest []byte
	// AlertDeviceDimension names the alert dimension or column holding
	// device ids.
	AlertDeviceDimension string
	// AlertScriptPolicyID is the script for alerts that name none.
	AlertScriptPolicyID string

	// GraphTenantID and GraphClientID name the app registration of
	// client-secret and keyvault modes.
	GraphTenantID, GraphClientID string
	// KeyVaultURL and CredentialSecret locate the app credential in
	// keyvault mode (secret <CredentialSecret>-<tenant> for other tenants).
	KeyVaultURL, CredentialSecret string
	// ManagedIdentityClientID selects a user-assigned managed identity.
	ManagedIdentityClientID string
	// AuthorityHost overrides Microsoft Entra ID's host.
	AuthorityHost string
	// KeyVaultCredential is how keyvault mode reaches the vault:
	// managed-identity or environment (AZURE_* app credential).
	KeyVaultCredential string

	// MaxFleetPercent refuses unconfirmed runs over this share of the
	// tenant's Windows devices (100 = off).
	MaxFleetPercent float64
	// AllowedScripts, when not empty, are the only script ids runs may use
	// (lower case); ScriptPins pins some of them to their
	// lastModifiedDateTime.
	AllowedScripts map[string]bool
	ScriptPins     map[string]time.Time
	// DeviceCooldown skips a device+script triggered this recently (0 =
	// off).
	DeviceCooldown time.Duration
}

// Intune's documented per-app limits: 200 writes and 2,000 requests per
// 20 seconds.
const (
	intuneWritesPerSecond = 10.0
	intuneReadsPerSecond  = 100.0
)

// Load reads the configuration through getenv (os.Getenv in production).
func Load(getenv func(string) string) (Config, error) {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}
	get := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if strings.HasPrefix(v, "@Microsoft.KeyVault(") {
			bad(name, "is an unresolved Key Vault reference (%s); grant the app's identity access to the vault or fix the reference", v)
			return ""
		}
		return v
	}
	intOf := func(name string, def, lo, hi int) int {
		v := get(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			bad(name, "%q must be a whole number from %d to %d", v, lo, hi)
			return def
		}
		return n
	}
	floatOf := func(name string, def, hi float64) float64 {
		v := get(name)
		if v == "" {
			return def
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > hi {
			bad(name, "%q must be a number above 0 and at most %g", v, hi)
			return def
		}
		return f
	}
	durOf := func(name string, def time.Duration) time.Duration {
		v := get(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			bad(name, "%q must be a positive duration such as \"30s\"", v)
			return def
		}
		return d
	}

	need := func(name, mode string) string {
		v := get(name)
		if !guidRE.MatchString(v) {
			bad(name, "%q must be a GUID; it is required with GRAPH_AUTH=%s", v, mode)
		}
		return v
	}

	c := Config{GraphBaseURL: strings.TrimSuffix(get("GRAPH_BASE_URL"), "/")}
	microsoft := true
	if c.GraphBaseURL != "" {
		u, err := url.Parse(c.GraphBaseURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("GRAPH_BASE_URL", "%q is not an http(s) URL", c.GraphBaseURL)
		} else {
			microsoft = isMicrosoftGraph(u.Hostname())
			if u.Scheme == "http" && microsoft {
				bad("GRAPH_BASE_URL", "Microsoft Graph is only reachable over https")
			}
		}
	}
	c.GraphAuth = get("GRAPH_AUTH")
	if c.GraphAuth == "" {
		c.GraphAuth = "none"
		if c.GraphBaseURL != "" && microsoft {
			c.GraphAuth = "managed-identity"
		}
	}
	switch c.GraphAuth {
	case "none":
		if c.GraphBaseURL != "" && microsoft {
			bad("GRAPH_AUTH", "\"none\" sends no token; it is only for simulators, not for %s", c.GraphBaseURL)
		}
	case "managed-identity":
		if getenv("AWS_LAMBDA_RUNTIME_API") != "" {
			bad("GRAPH_AUTH", "managed-identity is not available on AWS Lambda; use client-secret, or keyvault with KEY_VAULT_CREDENTIAL=environment")
		}
	case "client-secret":
		c.GraphTenantID, c.GraphClientID = need("GRAPH_TENANT_ID", c.GraphAuth), need("GRAPH_CLIENT_ID", c.GraphAuth)
		if getenv("GRAPH_CLIENT_SECRET") == "" {
			bad("GRAPH_CLIENT_SECRET", "is required with GRAPH_AUTH=client-secret")
		} else if strings.HasPrefix(getenv("GRAPH_CLIENT_SECRET"), "@Microsoft.KeyVault(") {
			bad("GRAPH_CLIENT_SECRET", "is an unresolved Key Vault reference; grant the app's identity access to the vault, or use GRAPH_AUTH=keyvault")
		}
	case "keyvault":
		c.GraphTenantID, c.GraphClientID = need("GRAPH_TENANT_ID", c.GraphAuth), need("GRAPH_CLIENT_ID", c.GraphAuth)
		c.KeyVaultURL = get("KEY_VAULT_URL")
		if u, err := url.Parse(c.KeyVaultURL); c.KeyVaultURL == "" || err != nil || u.Scheme != "https" || u.Host == "" {
			bad("KEY_VAULT_URL", "%q must be the vault's https URL, e.g. https://my-vault.vault.azure.net", c.KeyVaultURL)
		}
		c.KeyVaultCredential = get("KEY_VAULT_CREDENTIAL")
		switch c.KeyVaultCredential {
		case "":
			c.KeyVaultCredential = "managed-identity"
			if getenv("AWS_LAMBDA_RUNTIME_API") != "" {
				c.KeyVaultCredential = "environment"
			}
		case "managed-identity", "environment":
		default:
			bad("KEY_VAULT_CREDENTIAL", "%q must be managed-identity or environment", c.KeyVaultCredential)
		}
		if c.KeyVaultCredential == "environment" && (getenv("AZURE_TENANT_ID") == "" || getenv("AZURE_CLIENT_ID") == "" ||
			(getenv("AZURE_CLIENT_SECRET") == "" && getenv("AZURE_CLIENT_CERTIFICATE_PATH") == "")) {
			bad("KEY_VAULT_CREDENTIAL", "environment needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH) for reading Key Vault")
		}
		c.CredentialSecret = get("GRAPH_CREDENTIAL_SECRET")
		if !secretNameRE.MatchString(c.CredentialSecret) {
			bad("GRAPH_CREDENTIAL_SECRET", "%q must be a Key Vault secret name (letters, digits and dashes)", c.CredentialSecret)
		}
	default:
		bad("GRAPH_AUTH", "%q must be one of managed-identity, client-secret, keyvault, none", c.GraphAuth)
	}
	if c.KeyVaultCredential != "environment" {
		// AZURE_CLIENT_ID selects a user-assigned identity, except where it
		// is the app credential that reads Key Vault.
		c.ManagedIdentityClientID = get("AZURE_CLIENT_ID")
	}
	if c.ManagedIdentityClientID != "" && !guidRE.MatchString(c.ManagedIdentityClientID) {
		bad("AZURE_CLIENT_ID", "%q is not a client id (a GUID)", c.ManagedIdentityClientID)
	}
	c.AuthorityHost = get("AZURE_AUTHORITY_HOST")
	if u, err := url.Parse(c.AuthorityHost); c.AuthorityHost != "" && (err != nil || u.Scheme != "https") {
		bad("AZURE_AUTHORITY_HOST", "%q must be an https URL", c.AuthorityHost)
	}
	maxWrite, maxRead := intuneWritesPerSecond, intuneReadsPerSecond
	if !microsoft {
		maxWrite, maxRead = 100000, 100000 // a simulator may compress time
	}
	c.MaxConcurrency = intOf("MAX_CONCURRENCY", 8, 1, 64)
	c.GraphWriteRate = floatOf("GRAPH_WRITE_RATE", 8, maxWrite)
	c.GraphReadRate = floatOf("GRAPH_READ_RATE", 80, maxRead)
	c.MaxDevicesPerRun = intOf("MAX_DEVICES_PER_RUN", 5000, 1, 1000000)
	c.GraphCallTimeout = durOf("GRAPH_CALL_TIMEOUT", 30*time.Second)
	c.Port = intOf("PORT", 8080, 1, 65535)
	c.MaxFleetPercent = floatOf("MAX_FLEET_PERCENT", 100, 100)
	if v := get("ALLOWED_SCRIPT_POLICY_IDS"); v != "" {
		c.AllowedScripts = map[string]bool{}
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); !guidRE.MatchString(id) {
				bad("ALLOWED_SCRIPT_POLICY_IDS", "%q is not a script id (a GUID)", id)
			}
			c.AllowedScripts[strings.ToLower(id)] = true
		}
	}
	if v := get("ALLOWED_SCRIPT_PINS"); v != "" {
		c.ScriptPins = map[string]time.Time{}
		for _, pin := range strings.Split(v, ",") {
			id, at, ok := strings.Cut(strings.TrimSpace(pin), "=")
			t, err := time.Parse(time.RFC3339, at)
			if !ok || err != nil || !guidRE.MatchString(id) {
				bad("ALLOWED_SCRIPT_PINS", "%q must be <script id>=<lastModifiedDateTime, RFC 3339>", pin)
				continue
			}
			c.ScriptPins[strings.ToLower(id)] = t
		}
	}
	if v := get("DEVICE_COOLDOWN"); v == "0" {
		c.DeviceCooldown = 0
	} else {
		c.DeviceCooldown = durOf("DEVICE_COOLDOWN", 10*time.Minute)
	}
	c.FunctionTimeout = durOf("FUNCTION_TIMEOUT", 5*time.Minute)
	c.HTTPResponseBudget = durOf("HTTP_RESPONSE_BUDGET", 200*time.Second)
	if c.HTTPResponseBudget > 230*time.Second {
		bad("HTTP_RESPONSE_BUDGET", "%s is over the 230 s after which Azure's front end drops HTTP responses", c.HTTPResponseBudget)
	}
	c.StorageAccountName = get("AzureWebJobsStorage__accountName")
	c.StorageTableURI, c.StorageQueueURI = get("AzureWebJobsStorage__tableServiceUri"), get("AzureWebJobsStorage__queueServiceUri")
	c.RemediationQueue = get("REMEDIATION_QUEUE")
	if c.RemediationQueue == "" {
		c.RemediationQueue = "remediation-work"
	} else if !queueNameRE.MatchString(c.RemediationQueue) {
		bad("REMEDIATION_QUEUE", "%q is not a queue name (3-63 lower-case letters, digits and single hyphens)", c.RemediationQueue)
	}
	c.RunsTable = get("RUNS_TABLE")
	if c.RunsTable == "" {
		c.RunsTable = "remediatorruns"
	} else if !tableNameRE.MatchString(c.RunsTable) {
		bad("RUNS_TABLE", "%q is not a table name (3-63 letters and digits, starting with a letter)", c.RunsTable)
	}
	c.IdempotencyTTL = durOf("IDEMPOTENCY_TTL", 24*time.Hour)
	c.RunPageSize = intOf("RUN_PAGE_SIZE", 1000, 1, 5000)
	c.SyncBudget = durOf("SYNC_BUDGET", 90*time.Second)
	c.RemediationSchedule = get("REMEDIATION_SCHEDULE")
	if c.RemediationSchedule != "" {
		if n := len(strings.Fields(c.RemediationSchedule)); n != 5 && n != 6 {
			bad("REMEDIATION_SCHEDULE", "%q is not an NCRONTAB expression of 5 or 6 fields such as \"0 0 6 * * 1-5\"", c.RemediationSchedule)
		}
	}
	inline, file := get("SCHEDULED_REQUEST"), get("SCHEDULED_REQUEST_FILE")
	switch {
	case inline != "" && file != "":
		bad("SCHEDULED_REQUEST", "set either SCHEDULED_REQUEST or SCHEDULED_REQUEST_FILE, not both")
	case inline != "":
		c.ScheduledRequest = []byte(inline)
	case file != "":
		if root := get("FUNCTIONS_APP_ROOT_PATH"); root != "" && !filepath.IsAbs(file) {
			file = filepath.Join(root, file)
		}
		b, err := readFile(file)
		if err != nil {
			bad("SCHEDULED_REQUEST_FILE", "%v", err)
		}
		c.ScheduledRequest = b
	}
	if c.ScheduledRequest != nil && c.RemediationSchedule == "" && getenv("AWS_LAMBDA_RUNTIME_API") == "" {
		bad("REMEDIATION_SCHEDULE", "must be set when a scheduled request is configured (the schedule function reads it; on Lambda the EventBridge rule holds the schedule)")
	}
	c.AlertDeviceDimension = get("ALERT_DEVICE_DIMENSION")
	if c.AlertDeviceDimension == "" {
		c.AlertDeviceDimension = "DeviceId"
	}
	c.AlertScriptPolicyID = get("ALERT_SCRIPT_POLICY_ID")
	if c.AlertScriptPolicyID != "" && !guidRE.MatchString(c.AlertScriptPolicyID) {
		bad("ALERT_SCRIPT_POLICY_ID", "%q is not a GUID", c.AlertScriptPolicyID)
	}
	switch lvl := strings.ToLower(get("LOG_LEVEL")); lvl {
	case "", "info":
		c.LogLevel = slog.LevelInfo
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		bad("LOG_LEVEL", "%q must be debug, info, warn or error", lvl)
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("configuration: %w", errors.Join(errs...))
	}
	return c, nil
}

var secretNameRE = regexp.MustCompile(`^[0-9A-Za-z-]{1,90}$`)

var (
	queueNameRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)
	tableNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{2,62}$`)
)

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

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
