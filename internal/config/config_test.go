package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Load(env(nil))
	require.NoError(t, err)
	assert.Equal(t, Config{GraphAuth: "none", MaxConcurrency: 8, GraphWriteRate: 8, GraphReadRate: 80,
		MaxDevicesPerRun: 5000, MaxListedDevices: 250000, MaxTargets: 20, MaxDeviceNames: 1000, MaxGroupIDs: 20, MaxAnswerBytes: 4 << 20, GraphCallTimeout: 30 * time.Second, GraphMaxResponseMB: 16, RetryAfterMax: 5 * time.Minute, LogLevel: slog.LevelInfo, Port: 8080,
		FunctionTimeout: 5 * time.Minute, HTTPResponseBudget: 200 * time.Second, HTTPReadTimeout: 30 * time.Second, HTTPIdleTimeout: 2 * time.Minute, AlertDeviceDimension: "DeviceId",
		MaxFleetPercent: 100, DeviceCooldown: 10 * time.Minute,
		RemediationQueue: "remediation-work", RunsTable: "remediatorruns", IdempotencyTTL: 24 * time.Hour, IdempotencyMemoryMB: 32, StorageCallTimeout: 2 * time.Second, RunPageSize: 1000, RunRetention: 720 * time.Hour, RunMaxDuration: 168 * time.Hour, FollowCache: 30 * time.Second, FollowCacheMB: 16, CleanupMaxOps: 2000, RunQueuedChunks: 2, SharedBudget: true, BudgetProcesses: 40, BudgetLeaseTerm: 6 * time.Second, BudgetRenewEvery: 2 * time.Second,
		SyncBudget: 90 * time.Second}, c)
}

func TestStorageNames(t *testing.T) {
	_, err := Load(env(map[string]string{"REMEDIATION_QUEUE": "Work_Items", "RUNS_TABLE": "runs-table", "RUN_PAGE_SIZE": "0", "SHARED_BUDGET": "maybe", "BUDGET_PROCESSES": "0", "BUDGET_LEASE_TERM": "1h"}))
	require.Error(t, err)
	for _, field := range []string{"REMEDIATION_QUEUE", "RUNS_TABLE", "RUN_PAGE_SIZE", "SHARED_BUDGET", "BUDGET_PROCESSES", "BUDGET_LEASE_TERM"} {
		assert.Contains(t, err.Error(), field)
	}
	c, err := Load(env(map[string]string{"REMEDIATION_QUEUE": "tenant-a-work", "RUNS_TABLE": "runsA", "IDEMPOTENCY_TTL": "2h"}))
	require.NoError(t, err)
	assert.Equal(t, "tenant-a-work", c.RemediationQueue)
	assert.Equal(t, "runsA", c.RunsTable)
	assert.Equal(t, 2*time.Hour, c.IdempotencyTTL)
}

func TestSimulatorSettings(t *testing.T) {
	c, err := Load(env(map[string]string{"GRAPH_BASE_URL": "http://127.0.0.1:8081/beta/", "GRAPH_WRITE_RATE": "95",
		"MAX_CONCURRENCY": "16", "MAX_DEVICES_PER_RUN": "20000", "LOG_LEVEL": "debug", "GRAPH_CALL_TIMEOUT": "5s"}))
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:8081/beta", c.GraphBaseURL)
	assert.Equal(t, "none", c.GraphAuth)
	assert.Equal(t, 95.0, c.GraphWriteRate, "a simulator may compress time")
	assert.Equal(t, 16, c.MaxConcurrency)
	assert.Equal(t, 20000, c.MaxDevicesPerRun)
	assert.Equal(t, slog.LevelDebug, c.LogLevel)
	assert.Equal(t, 5*time.Second, c.GraphCallTimeout)
}

func TestEveryProblemReportedAtOnce(t *testing.T) {
	_, err := Load(env(map[string]string{
		"GRAPH_BASE_URL":      "https://graph.microsoft.com/beta",
		"GRAPH_AUTH":          "none",
		"GRAPH_WRITE_RATE":    "50",
		"MAX_CONCURRENCY":     "zero",
		"MAX_DEVICES_PER_RUN": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/x)",
		"LOG_LEVEL":           "loud",
	}))
	require.Error(t, err)
	for _, want := range []string{
		"GRAPH_AUTH: \"none\" sends no token",
		"GRAPH_WRITE_RATE: \"50\" must be a number above 0 and at most 10",
		"MAX_CONCURRENCY: \"zero\"",
		"MAX_DEVICES_PER_RUN: is an unresolved Key Vault reference",
		"LOG_LEVEL: \"loud\"",
	} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestBadValues(t *testing.T) {
	for name, kv := range map[string]map[string]string{
		"not a URL":                  {"GRAPH_BASE_URL": "graph"},
		"plain http to MS":           {"GRAPH_BASE_URL": "http://graph.microsoft.com/beta"},
		"unknown auth":               {"GRAPH_AUTH": "password"},
		"negative rate":              {"GRAPH_WRITE_RATE": "-1"},
		"zero timeout":               {"GRAPH_CALL_TIMEOUT": "0s"},
		"port out of range":          {"PORT": "70000"},
		"budget over 230s":           {"HTTP_RESPONSE_BUDGET": "5m"},
		"bad schedule":               {"REMEDIATION_SCHEDULE": "every day"},
		"both requests":              {"SCHEDULED_REQUEST": "{}", "SCHEDULED_REQUEST_FILE": "r.json", "REMEDIATION_SCHEDULE": "0 0 6 * * *"},
		"request no cron":            {"SCHEDULED_REQUEST": "{}"},
		"missing file":               {"SCHEDULED_REQUEST_FILE": "/nonexistent/r.json", "REMEDIATION_SCHEDULE": "0 0 6 * * *"},
		"alert script":               {"ALERT_SCRIPT_POLICY_ID": "abc"},
		"secret mode without secret": {"GRAPH_AUTH": "client-secret", "GRAPH_TENANT_ID": tenant, "GRAPH_CLIENT_ID": client},
		"secret mode without ids":    {"GRAPH_AUTH": "client-secret", "GRAPH_CLIENT_SECRET": "s"},
		"keyvault over http":         {"GRAPH_AUTH": "keyvault", "GRAPH_TENANT_ID": tenant, "GRAPH_CLIENT_ID": client, "KEY_VAULT_URL": "http://kv", "GRAPH_CREDENTIAL_SECRET": "graph"},
		"keyvault bad secret name":   {"GRAPH_AUTH": "keyvault", "GRAPH_TENANT_ID": tenant, "GRAPH_CLIENT_ID": client, "KEY_VAULT_URL": "https://kv.vault.azure.net", "GRAPH_CREDENTIAL_SECRET": "graph_secret"},
		"user-assigned id":           {"AZURE_CLIENT_ID": "me"},
		"authority over http":        {"AZURE_AUTHORITY_HOST": "http://login"},
		"fleet percent":              {"MAX_FLEET_PERCENT": "150"},
		"allowlist":                  {"ALLOWED_SCRIPT_POLICY_IDS": "abc"},
		"pin":                        {"ALLOWED_SCRIPT_PINS": client + "@yesterday"},
		"cooldown":                   {"DEVICE_COOLDOWN": "ten minutes"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(env(kv))
			assert.Error(t, err)
		})
	}
}

func TestScheduledRequestFromAFileUnderTheAppRoot(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nightly.json"), []byte(`{"dry_run":true}`), 0o600))
	c, err := Load(env(map[string]string{"SCHEDULED_REQUEST_FILE": "nightly.json", "FUNCTIONS_APP_ROOT_PATH": dir,
		"REMEDIATION_SCHEDULE": "0 0 6 * * 1-5", "ALERT_DEVICE_DIMENSION": "IntuneDeviceId"}))
	require.NoError(t, err)
	assert.JSONEq(t, `{"dry_run":true}`, string(c.ScheduledRequest))
	assert.Equal(t, "IntuneDeviceId", c.AlertDeviceDimension)
}

const (
	tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	client = "0b5c4f1e-2d3a-4b5c-8d6e-7f8091a2b3c4"
)

func TestCredentialModes(t *testing.T) {
	c, err := Load(env(map[string]string{"GRAPH_BASE_URL": "https://graph.microsoft.com/beta"}))
	require.NoError(t, err)
	assert.Equal(t, "managed-identity", c.GraphAuth, "the default against Microsoft Graph")

	c, err = Load(env(map[string]string{"GRAPH_BASE_URL": "https://graph.microsoft.com/beta", "GRAPH_AUTH": "keyvault",
		"GRAPH_TENANT_ID": tenant, "GRAPH_CLIENT_ID": client, "KEY_VAULT_URL": "https://kv.vault.azure.net", "GRAPH_CREDENTIAL_SECRET": "graph-app",
		"AZURE_CLIENT_ID": client}))
	require.NoError(t, err)
	assert.Equal(t, "https://kv.vault.azure.net", c.KeyVaultURL)
	assert.Equal(t, "graph-app", c.CredentialSecret)
	assert.Equal(t, client, c.ManagedIdentityClientID)

	c, err = Load(env(map[string]string{"GRAPH_AUTH": "client-secret", "GRAPH_TENANT_ID": tenant, "GRAPH_CLIENT_ID": client,
		"GRAPH_CLIENT_SECRET": "very-secret-value"}))
	require.NoError(t, err)
	assert.NotContains(t, fmt.Sprintf("%+v", c), "very-secret-value", "the configuration holds no secret")

	_, err = Load(env(map[string]string{"GRAPH_AUTH": "client-secret", "GRAPH_TENANT_ID": tenant, "GRAPH_CLIENT_ID": client,
		"GRAPH_CLIENT_SECRET": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/s)"}))
	assert.ErrorContains(t, err, "unresolved Key Vault reference")
}

func TestSafetySettings(t *testing.T) {
	c, err := Load(env(map[string]string{"MAX_FLEET_PERCENT": "25", "ALLOWED_SCRIPT_POLICY_IDS": client + ", " + tenant,
		"ALLOWED_SCRIPT_PINS": client + "=2026-10-01T08:00:00Z", "DEVICE_COOLDOWN": "0"}))
	require.NoError(t, err)
	assert.Equal(t, 25.0, c.MaxFleetPercent)
	assert.Equal(t, map[string]bool{client: true, tenant: true}, c.AllowedScripts)
	assert.Equal(t, map[string]time.Time{client: time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC)}, c.ScriptPins)
	assert.Zero(t, c.DeviceCooldown, "0 turns the cooldown off")
}

func TestLambdaSettings(t *testing.T) {
	_, err := Load(env(map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "GRAPH_BASE_URL": "https://graph.microsoft.com/beta"}))
	assert.ErrorContains(t, err, "managed-identity is not available on AWS Lambda")

	kv := map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "GRAPH_BASE_URL": "https://graph.microsoft.com/beta",
		"GRAPH_AUTH": "keyvault", "GRAPH_TENANT_ID": tenant, "GRAPH_CLIENT_ID": client, "KEY_VAULT_URL": "https://kv.vault.azure.net",
		"GRAPH_CREDENTIAL_SECRET": "graph-app", "SCHEDULED_REQUEST": "{}"}
	_, err = Load(env(kv))
	assert.ErrorContains(t, err, "environment needs AZURE_TENANT_ID", "Key Vault is read with an app credential on Lambda")
	kv["AZURE_TENANT_ID"], kv["AZURE_CLIENT_ID"], kv["AZURE_CLIENT_SECRET"] = tenant, client, "kv-reader-secret"
	c, err := Load(env(kv))
	require.NoError(t, err, "no REMEDIATION_SCHEDULE on Lambda: EventBridge holds the schedule")
	assert.Equal(t, "environment", c.KeyVaultCredential)
	assert.Empty(t, c.ManagedIdentityClientID, "AZURE_CLIENT_ID is the Key Vault reader here, not an identity")
}

// TestPublicBaseURL: Location URLs come from configuration only:
// PUBLIC_BASE_URL, else the host name Azure sets.
func TestPublicBaseURL(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{"WEBSITE_HOSTNAME": "remediator-prod.azurewebsites.net"}))
	require.NoError(t, err)
	assert.Equal(t, "https://remediator-prod.azurewebsites.net", c.PublicBaseURL)
	c, err = Load(env(map[string]string{"WEBSITE_HOSTNAME": "remediator-prod.azurewebsites.net", "PUBLIC_BASE_URL": "https://remediation.contoso.com/"}))
	require.NoError(t, err)
	assert.Equal(t, "https://remediation.contoso.com", c.PublicBaseURL, "a custom domain wins")
	_, err = Load(env(map[string]string{"PUBLIC_BASE_URL": "https://contoso.com/api?x=1"}))
	assert.ErrorContains(t, err, "PUBLIC_BASE_URL")
}

// TestCallerPolicySetting: CALLER_POLICY is read as JSON with unknown
// members, non-GUID scripts and tenants refused at start-up.
func TestCallerPolicySetting(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{"CALLER_POLICY": `{"function-key":{"scripts":["87654321-4321-4321-4321-ba9876543210"],"tenants":["default"],"max_devices":5},"*":{}}`}))
	require.NoError(t, err)
	assert.Equal(t, 5, c.CallerPolicy["function-key"].MaxDevices)
	assert.Contains(t, c.CallerPolicy, "*")
	for _, bad := range []string{`{"function-key":{"script":["x"]}}`, `{"function-key":{"scripts":["x"]}}`, `{"a":{"tenants":["contoso"]}}`, `[]`} {
		_, err := Load(env(map[string]string{"CALLER_POLICY": bad}))
		assert.ErrorContains(t, err, "CALLER_POLICY", bad)
	}
}

// TestRetentionOutlastsRuns: a RUN_RETENTION shorter than the longest a run
// may go on is a start-up error that names both.
func TestRetentionOutlastsRuns(t *testing.T) {
	_, err := Load(env(map[string]string{"RUN_RETENTION": "24h"}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "RUN_RETENTION")
	assert.Contains(t, err.Error(), "24h0m0s")
	assert.Contains(t, err.Error(), "RUN_MAX_DURATION (168h0m0s)")
	_, err = Load(env(map[string]string{"RUN_RETENTION": "24h", "RUN_MAX_DURATION": "12h"}))
	assert.NoError(t, err)
}
