// Package config reads remediator's settings from the environment (app
// settings on Azure, environment variables on Lambda and locally). The
// settings are one table (Settings: name, default, meaning, parser): Load
// runs it, and the settings table of docs/reference.md is generated from it. Every
// problem is reported at once, so a misconfigured deployment fails at start
// with one message that names each setting at fault.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/remediator/remediator/internal/app"
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
	// MaxListedDevices bounds the devices one run reads from device lists.
	MaxListedDevices int
	// MaxTargets, MaxDeviceNames and MaxGroupIDs bound a request's
	// selectors.
	MaxTargets, MaxDeviceNames, MaxGroupIDs int
	// MaxAnswerBytes bounds one answer's JSON.
	MaxAnswerBytes int
	// GraphCallTimeout bounds one Graph request.
	GraphCallTimeout time.Duration
	// GraphMaxResponseMB bounds one Graph answer, decompressed.
	GraphMaxResponseMB int
	// RetryAfterMax caps the Retry-After Graph sends.
	RetryAfterMax time.Duration
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
	// StorageCallTimeout bounds the storage calls of synchronous requests.
	StorageCallTimeout time.Duration
	// IdempotencyMemoryMB bounds the answers kept in memory (without run
	// storage).
	IdempotencyMemoryMB int
	// RunPageSize is the number of devices per page of GET runs/{id}.
	RunPageSize int
	// RunRetention is how long stored runs are kept; CleanupMaxOps bounds
	// the storage operations of one cleanup.
	RunRetention time.Duration
	// RunMaxDuration is the longest a run may go on (RUN_MAX_DURATION).
	RunMaxDuration time.Duration
	// FollowCache is how long follow=true results are reused;
	// FollowCacheMB bounds them.
	FollowCache   time.Duration
	FollowCacheMB int
	CleanupMaxOps int
	// RunQueuedChunks is how many chunks of one run are queued at a time.
	RunQueuedChunks int
	// SharedBudget keeps each tenant's Graph budget in run storage, shared
	// by every process (SHARED_BUDGET); BudgetProcesses is the most
	// processes that share it, whose share a process falls back to.
	SharedBudget    bool
	BudgetProcesses int
	// BudgetLeaseTerm and BudgetRenewEvery are a shared budget's lease
	// term and how often a busy process renews it.
	BudgetLeaseTerm, BudgetRenewEvery time.Duration
	// SyncBudget is the longest a mode auto run answers synchronously.
	SyncBudget time.Duration
	// HTTPResponseBudget bounds HTTP invocations below the 230 s front-end
	// limit.
	HTTPResponseBudget time.Duration
	// HTTPReadTimeout bounds reading one request (headers and body);
	// HTTPIdleTimeout closes idle keep-alive connections.
	HTTPReadTimeout, HTTPIdleTimeout time.Duration
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
	// AllowedTenants are the tenants a multi-tenant app registration acts
	// in (ALLOWED_TENANT_IDS, lower case); empty: a secret per tenant in
	// keyvault mode, or the app's own tenant only.
	AllowedTenants []string
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

	// CallerRate is the requests a minute each caller may make
	// (CALLER_RATE); 0 is no limit.
	CallerRate float64
	// CallerPolicy is what each caller may do (CALLER_POLICY); nil lets
	// every caller do everything.
	CallerPolicy app.CallerPolicy

	// PublicBaseURL is where callers reach the API (scheme and host), for
	// absolute Location URLs: PUBLIC_BASE_URL, else https://WEBSITE_HOSTNAME.
	PublicBaseURL string

	// StorageClientID is AzureWebJobsStorage__clientId: the user-assigned
	// identity of identity-based storage.
	StorageClientID string
	// DirectInvocation is DIRECT_INVOCATION: the caller a Lambda event
	// that is itself a request runs as ("schedule" or "invoke"), or ""
	// when such events are refused.
	DirectInvocation string
	// AuthEnabled is WEBSITE_AUTH_ENABLED: App Service Authentication is on,
	// so the platform sets (and strips callers' own) X-MS-CLIENT-PRINCIPAL*
	// headers, and they name the caller.
	AuthEnabled bool
	// UnderHost is true when the real Functions host started the process
	// (FUNCTIONS_CUSTOMHANDLER_WORKER_ID is set), not `make run`.
	UnderHost bool
}

// Intune's documented per-app limits: 200 writes and 2,000 requests per
// 20 seconds.
const (
	intuneWritesPerSecond = 10.0
	intuneReadsPerSecond  = 100.0
)

// Load reads the configuration through getenv (os.Getenv in production).
func Load(getenv func(string) string) (Config, error) {
	l := &loader{getenv: getenv, microsoft: true, lambda: getenv("AWS_LAMBDA_RUNTIME_API") != ""}
	for _, s := range Settings {
		if s.read == nil {
			continue
		}
		l.current = s.Name
		v := l.get(s.Name)
		if v == "" {
			v = s.Default
		}
		s.read(l, v)
	}
	if l.c.ScheduledRequest != nil && l.c.RemediationSchedule == "" && !l.lambda {
		l.bad("REMEDIATION_SCHEDULE", "must be set when a scheduled request is configured (the schedule function reads it; on Lambda the EventBridge rule holds the schedule)")
	}
	if l.c.RunRetention < l.c.RunMaxDuration {
		l.bad("RUN_RETENTION", "(%s) is shorter than RUN_MAX_DURATION (%s), the longest a run may go on: a run's account would be deleted while it may still run; raise RUN_RETENTION or lower RUN_MAX_DURATION",
			l.c.RunRetention, l.c.RunMaxDuration)
	}
	if len(l.errs) > 0 {
		return Config{}, fmt.Errorf("configuration: %w", errors.Join(l.errs...))
	}
	return l.c, nil
}
