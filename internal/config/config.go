// Package config reads remediator's settings from the environment (app
// settings on Azure, environment variables on Lambda and locally). The
// settings are one table (Settings: name, default, meaning, parser): Load
// runs it, and the settings table of docs/reference.md is generated from it. Every
// problem is reported at once, so a misconfigured deployment fails at start
// with one message that names each setting at fault.
package config

import (
	"encoding/json"
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

	"github.com/remediator/remediator/internal/intune"
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
	CallerPolicy CallerPolicy

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

// DefaultFunctionTimeout is FUNCTION_TIMEOUT's default, host.json's
// functionTimeout: the one place the five minutes are written.
const DefaultFunctionTimeout = 5 * time.Minute

// Intune's documented per-app limits: 200 writes and 2,000 requests per
// 20 seconds.
const (
	intuneWritesPerSecond = 10.0
	intuneReadsPerSecond  = 100.0
)

// CallerPolicy maps callers to what they may do: "function-key" (every
// holder of a function key), "principal:<object id>" (App Service
// Authentication), "iam:<ARN>" (Lambda with IAM auth), or "*" for any
// caller not listed. A caller matching no entry may do nothing.
type CallerPolicy map[string]CallerRule

// CallerRule limits one caller. An empty list, or one holding "*",
// allows any value.
type CallerRule struct {
	// Scripts are the script ids the caller may run.
	Scripts []string `json:"scripts"`
	// Tenants are the tenant ids the caller may act in ("default" for the
	// deployment's own tenant).
	Tenants []string `json:"tenants"`
	// MaxDevices caps the caller's runs below MAX_DEVICES_PER_RUN; 0 is
	// the deployment's cap.
	MaxDevices int `json:"max_devices"`
}

func readCallerPolicy(l *loader, v string) {
	if v == "" {
		return
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	var p CallerPolicy
	if err := dec.Decode(&p); err != nil {
		l.bad("CALLER_POLICY", "is not a policy such as {\"function-key\":{\"scripts\":[\"<id>\"],\"max_devices\":50}}: %v", err)
		return
	}
	for caller, r := range p {
		for _, id := range r.Scripts {
			if id != "*" && !intune.IsGUID(id) {
				l.bad("CALLER_POLICY", "%s: script %q is not a GUID", caller, id)
			}
		}
		for _, id := range r.Tenants {
			if id != "*" && id != "default" && !intune.IsGUID(id) {
				l.bad("CALLER_POLICY", "%s: tenant %q is not a GUID or default", caller, id)
			}
		}
		if r.MaxDevices < 0 {
			l.bad("CALLER_POLICY", "%s: max_devices must not be negative", caller)
		}
	}
	l.c.CallerPolicy = p
}

// Setting is one environment variable: its name, its default as written
// in the environment ("" for none), what the README says of its default
// when that is not a plain value, its meaning, and how Load reads it.
type Setting struct {
	Name       string
	Default    string
	DefaultDoc string
	Meaning    string
	// read sets the value v (the default when unset) in l.c; nil for
	// settings read where they are used (secrets, the runtime's own).
	read func(l *loader, v string)
}

// loader is the state of one Load.
type loader struct {
	c      Config
	getenv func(string) string
	errs   []error
	// current is the setting being read: parsers report problems under it.
	current string
	// microsoft is true when Graph is Microsoft's (not a simulator).
	microsoft bool
	lambda    bool
}

func (l *loader) bad(name, format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
}

// get reads a setting, refusing an unresolved Key Vault reference.
func (l *loader) get(name string) string {
	v := strings.TrimSpace(l.getenv(name))
	if strings.HasPrefix(v, "@Microsoft.KeyVault(") {
		l.bad(name, "is an unresolved Key Vault reference (%s); grant the app's identity access to the vault or fix the reference", v)
		return ""
	}
	return v
}

// Parsers for the table's common kinds.

func intIn(lo, hi int, set func(*Config, int)) func(*loader, string) {
	return func(l *loader, v string) {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			l.bad(l.current, "%q must be a whole number from %d to %d", v, lo, hi)
			return
		}
		set(&l.c, n)
	}
}

func duration(set func(*Config, time.Duration)) func(*loader, string) {
	return func(l *loader, v string) {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			l.bad(l.current, "%q must be a positive duration such as \"30s\"", v)
			return
		}
		set(&l.c, d)
	}
}

func text(set func(*Config, string)) func(*loader, string) {
	return func(l *loader, v string) { set(&l.c, v) }
}

// number reads a number above 0 and at most hi.
func number(hi float64, set func(*Config, float64)) func(*loader, string) {
	return func(l *loader, v string) {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > hi {
			l.bad(l.current, "%q must be a number above 0 and at most %g", v, hi)
			return
		}
		set(&l.c, f)
	}
}

// rate reads a pace per second, capped at Intune's limit against
// Microsoft Graph (a simulator may compress time).
func rate(limit float64, set func(*Config, float64)) func(*loader, string) {
	return func(l *loader, v string) {
		hi := limit
		if !l.microsoft {
			hi = 100000
		}
		number(hi, set)(l, v)
	}
}

// need reads a GUID required by the credential mode.
func need(set func(*Config, string)) func(*loader, string) {
	return func(l *loader, v string) {
		if l.c.GraphAuth != "client-secret" && l.c.GraphAuth != "keyvault" {
			return
		}
		if !intune.IsGUID(v) {
			l.bad(l.current, "%q must be a GUID; it is required with GRAPH_AUTH=%s", v, l.c.GraphAuth)
		}
		set(&l.c, v)
	}
}

// Settings is every setting remediator reads, in the order Load reads them
// (a setting may depend on those before it).
var Settings = []Setting{
	{Name: "GRAPH_BASE_URL", DefaultDoc: "`https://graph.microsoft.com/beta` under the Functions host and on Lambda; for `handler serve`, unset starts the embedded simulator",
		Meaning: "Graph endpoint", read: readGraphBaseURL},
	{Name: "GRAPH_AUTH", DefaultDoc: "`managed-identity` for Microsoft Graph, `none` for simulators",
		Meaning: "how tokens are obtained: managed-identity, client-secret, keyvault, or none (simulators only)", read: readGraphAuth},
	{Name: "GRAPH_TENANT_ID", Meaning: "the app registration's tenant (client-secret and keyvault modes)",
		read: need(func(c *Config, v string) { c.GraphTenantID = v })},
	{Name: "GRAPH_CLIENT_ID", Meaning: "the app registration's client id (client-secret and keyvault modes)",
		read: need(func(c *Config, v string) { c.GraphClientID = v })},
	{Name: "GRAPH_CLIENT_SECRET", Meaning: "client-secret mode: the secret; read once where the credential is built, never kept or logged",
		read: readClientSecret},
	{Name: "KEY_VAULT_URL", Meaning: "keyvault mode: the vault's https URL", read: readKeyVaultURL},
	{Name: "KEY_VAULT_CREDENTIAL", DefaultDoc: "`managed-identity`; `environment` on Lambda",
		Meaning: "how keyvault mode reads the vault: managed-identity, or environment (`AZURE_*` app credential)", read: readKeyVaultCredential},
	{Name: "GRAPH_CREDENTIAL_SECRET", Meaning: "keyvault mode: the secret's name (`<name>-<tenant>` for other tenants)", read: readCredentialSecret},
	{Name: "ALLOWED_TENANT_IDS", Meaning: "comma list: a **multi-tenant app registration** (consented in each of these tenants) whose one credential — `GRAPH_CLIENT_SECRET`, or the Key Vault secret `GRAPH_CREDENTIAL_SECRET` — gets tokens in each of them; a request's `tenant_id` outside the list is refused with 403 `unknown_tenant`. Unset: a secret per tenant in keyvault mode",
		read: readAllowedTenants},
	{Name: "AZURE_CLIENT_ID", Meaning: "user-assigned managed identity to use", read: readManagedIdentity},
	{Name: "AZURE_AUTHORITY_HOST", DefaultDoc: "public cloud", Meaning: "Microsoft Entra ID host for sovereign clouds", read: readAuthorityHost},
	{Name: "MAX_CONCURRENCY", Default: "8", Meaning: "Graph calls in flight (1–64)",
		read: intIn(1, 64, func(c *Config, n int) { c.MaxConcurrency = n })},
	{Name: "GRAPH_WRITE_RATE", Default: "8", Meaning: "triggers per second for each tenant (and app registration): for the whole deployment when run storage is set (the shared budget, `SHARED_BUDGET`), else for each process; at most 10 against Microsoft Graph (Intune's 200 per 20 s per app and tenant)",
		read: rate(intuneWritesPerSecond, func(c *Config, f float64) { c.GraphWriteRate = f })},
	{Name: "GRAPH_READ_RATE", Default: "80", Meaning: "reads per second for each tenant, shared like `GRAPH_WRITE_RATE` (Intune allows 100); each `$batch` item counts",
		read: rate(intuneReadsPerSecond, func(c *Config, f float64) { c.GraphReadRate = f })},
	{Name: "SHARED_BUDGET", Default: "on", Meaning: "on: with run storage (`AzureWebJobsStorage`, also on Lambda), every process takes a tenant's write and read tokens from one budget kept in the run table, so scale-out never multiplies the pace (positions fall due on storage's clock; 2 storage operations per claim, a claim per second or so of a busy process's calls; a 429 pauses every process); off: each process paces alone",
		read: func(l *loader, v string) {
			switch strings.ToLower(v) {
			case "on":
				l.c.SharedBudget = true
			case "off":
			default:
				l.bad(l.current, "%q must be on or off", v)
			}
		}},
	{Name: "BUDGET_PROCESSES", Default: "40", Meaning: "the most processes that may share a tenant's budget at once (the plan's maximum instance count; 1–1000): a process that cannot reach the shared budget, and never saw how many processes used it, paces itself at 1/this of the rates (else at the rates over the processes it last saw), so even every process cut off at once stays under them, and says so in the summary's `warnings`",
		read: intIn(1, 1000, func(c *Config, n int) { c.BudgetProcesses = n })},
	{Name: "MAX_DEVICES_PER_RUN", Default: "5000", Meaning: "devices per request, listed or resolved",
		read: intIn(1, 1000000, func(c *Config, n int) { c.MaxDevicesPerRun = n })},
	{Name: "MAX_LISTED_DEVICES", Default: "250000", Meaning: "devices one run may read from the tenant's device list and from groups' member pages (filters, names, groups, validation); a run past it is refused, so memory stays bounded whatever Graph sends",
		read: intIn(1000, 5000000, func(c *Config, n int) { c.MaxListedDevices = n })},
	{Name: "MAX_TARGETS", Default: "20", Meaning: "targets one request may hold (1–1000); past it, 400 naming the target",
		read: intIn(1, 1000, func(c *Config, n int) { c.MaxTargets = n })},
	{Name: "MAX_DEVICE_NAMES", Default: "1000", Meaning: "device names one request may hold over all its targets (1–100000; each name up to 20 is a Graph read); past it, 400 naming the target",
		read: intIn(1, 100000, func(c *Config, n int) { c.MaxDeviceNames = n })},
	{Name: "MAX_GROUP_IDS", Default: "20", Meaning: "groups one request may hold over all its targets (1–1000; each costs its member pages, counted in `MAX_LISTED_DEVICES`); past it, 400 naming the target",
		read: intIn(1, 1000, func(c *Config, n int) { c.MaxGroupIDs = n })},
	{Name: "MAX_ANSWER_BYTES", Default: "4194304", DefaultDoc: "4194304 (4 MiB)", Meaning: "the largest answer (65536–104857600): a larger summary leaves out the devices that succeeded (counted in `omitted_devices`); a synchronous run with more devices than an answer can list (this / 256) goes to workers, or is refused with 422 `answer_too_large` where there is no run storage (Lambda answers at most 6 MB)",
		read: intIn(65536, 100<<20, func(c *Config, n int) { c.MaxAnswerBytes = n })},
	{Name: "MAX_FLEET_PERCENT", Default: "100", DefaultDoc: "100 (off)", Meaning: "share of the tenant's Windows devices a run may trigger without `confirm_device_count`",
		read: number(100, func(c *Config, f float64) { c.MaxFleetPercent = f })},
	{Name: "ALLOWED_SCRIPT_POLICY_IDS", Meaning: "comma list: the only scripts runs may use", read: readAllowedScripts},
	{Name: "ALLOWED_SCRIPT_PINS", Meaning: "comma list of `<script id>=<lastModifiedDateTime>`", read: readScriptPins},
	{Name: "DEVICE_COOLDOWN", Default: "10m", Meaning: "skip a device triggered with the same script this recently; `0` is off", read: readCooldown},
	{Name: "GRAPH_CALL_TIMEOUT", Default: "30s", Meaning: "one Graph request",
		read: duration(func(c *Config, d time.Duration) { c.GraphCallTimeout = d })},
	{Name: "RETRY_AFTER_MAX", Default: "5m", Meaning: "the longest Retry-After honoured; a longer one (a day, a date in year 9999) is taken as this and counted in the summary's `throttling.retry_after_capped`",
		read: duration(func(c *Config, d time.Duration) { c.RetryAfterMax = d })},
	{Name: "GRAPH_MAX_RESPONSE_MB", Default: "16", Meaning: "the largest Graph answer read, after decompression (1–256); a page of 1,000 devices is about 0.5 MB",
		read: intIn(1, 256, func(c *Config, n int) { c.GraphMaxResponseMB = n })},
	{Name: "PORT", Default: "8080", Meaning: "where `handler serve` listens (127.0.0.1)",
		read: intIn(1, 65535, func(c *Config, n int) { c.Port = n })},
	{Name: "LOG_LEVEL", Default: "info", Meaning: "debug, info, warn, error; logs are JSON on stderr, one line per run", read: readLogLevel},
	{Name: "FUNCTION_TIMEOUT", Default: "5m", Meaning: "mirror of `host.json` `functionTimeout`; every invocation ends before it",
		read: duration(func(c *Config, d time.Duration) { c.FunctionTimeout = d })},
	{Name: "HTTP_RESPONSE_BUDGET", Default: "200s", Meaning: "HTTP invocations answer before it (at most 230s)", read: readHTTPBudget},
	{Name: "HTTP_READ_TIMEOUT", Default: "30s", Meaning: "reading one request, headers and body: a body trickled byte by byte cannot hold a connection open",
		read: duration(func(c *Config, d time.Duration) { c.HTTPReadTimeout = d })},
	{Name: "HTTP_IDLE_TIMEOUT", Default: "2m", Meaning: "idle keep-alive connections are closed after it",
		read: duration(func(c *Config, d time.Duration) { c.HTTPIdleTimeout = d })},
	{Name: "REMEDIATION_SCHEDULE", Meaning: "the timer's NCRONTAB expression, e.g. `0 0 6 * * 1-5`; required with a scheduled request", read: readSchedule},
	{Name: "DIRECT_INVOCATION", Default: "off", Meaning: "Lambda: what an event that is itself a remediation request is (anyone with `lambda:InvokeFunction` can send one): `off` refuses it; `schedule` runs it as caller `schedule` (an EventBridge Scheduler schedule's input arrives so), `invoke` as caller `invoke`, each under its rule in `CALLER_POLICY`",
		read: func(l *loader, v string) {
			switch strings.TrimSpace(v) {
			case "", "off":
			case "schedule", "invoke":
				l.c.DirectInvocation = strings.TrimSpace(v)
			default:
				l.bad("DIRECT_INVOCATION", "is %q: use off, schedule or invoke", v)
			}
		}},
	{Name: "SCHEDULED_REQUEST", Meaning: "the request the timer runs, inline JSON (checked at start-up)", read: readScheduledRequest},
	{Name: "SCHEDULED_REQUEST_FILE", Meaning: "the same from a file, relative to the app root", read: readScheduledRequestFile},
	{Name: "ALERT_DEVICE_DIMENSION", Default: "DeviceId", Meaning: "alert dimension or result column holding Intune device ids",
		read: text(func(c *Config, v string) { c.AlertDeviceDimension = v })},
	{Name: "ALERT_SCRIPT_POLICY_ID", Meaning: "script for alerts that name none", read: readAlertScript},
	{Name: "AzureWebJobsStorage", Meaning: "storage for asynchronous runs, idempotency keys and cooldowns (connection string; `UseDevelopmentStorage=true` is Azurite); a secret: read where the store is opened, never kept or logged"},
	{Name: "AzureWebJobsStorage__accountName", Meaning: "identity-based storage instead of the connection string",
		read: text(func(c *Config, v string) { c.StorageAccountName = v })},
	{Name: "AzureWebJobsStorage__clientId", Meaning: "the user-assigned identity of identity-based storage",
		read: text(func(c *Config, v string) { c.StorageClientID = v })},
	{Name: "AzureWebJobsStorage__tableServiceUri", Meaning: "identity-based storage: the table endpoint, when not the account's default",
		read: text(func(c *Config, v string) { c.StorageTableURI = v })},
	{Name: "AzureWebJobsStorage__queueServiceUri", Meaning: "identity-based storage: the queue endpoint, when not the account's default",
		read: text(func(c *Config, v string) { c.StorageQueueURI = v })},
	{Name: "REMEDIATION_QUEUE", Default: "remediation-work", Meaning: "the work queue (also named in the `worker` and `poison` bindings: set it as an app setting)",
		read: readQueueName},
	{Name: "RUNS_TABLE", Default: "remediatorruns", Meaning: "the table of runs, idempotency keys and cooldowns", read: readTableName},
	{Name: "IDEMPOTENCY_TTL", Default: "24h", Meaning: "how long answers are kept for `Idempotency-Key` and alert replays",
		read: duration(func(c *Config, d time.Duration) { c.IdempotencyTTL = d })},
	{Name: "STORAGE_CALL_TIMEOUT", Default: "2s", Meaning: "each idempotency-key and cooldown look-up of a request, and each claim on the shared Graph budget: slow or unreachable storage costs a synchronous run at most this (a warning for the cooldown; a 503 for a keyed request; the local share after two failed claims)",
		read: duration(func(c *Config, d time.Duration) { c.StorageCallTimeout = d })},
	{Name: "IDEMPOTENCY_MEMORY_MB", Default: "32", Meaning: "without run storage (Lambda, local): the most memory kept answers take (1–256); the oldest are evicted first, and a retry after its answer was evicted runs again",
		read: intIn(1, 256, func(c *Config, n int) { c.IdempotencyMemoryMB = n })},
	{Name: "RUN_PAGE_SIZE", Default: "1000", Meaning: "devices per page of a run's status (`GET /api/remediate/runs/{id}`; 1–5000)",
		read: intIn(1, 5000, func(c *Config, n int) { c.RunPageSize = n })},
	{Name: "CALLER_POLICY", Meaning: "what each caller may do, as JSON: `{\"function-key\":{\"scripts\":[\"<id>\"],\"tenants\":[\"default\"],\"max_devices\":50},\"principal:<object id>\":{…},\"*\":{…}}`; callers are `key:<first 12 hex digits of the key's SHA-256>` (one function key; keys without a rule of their own use `function-key`), `principal:<object id>` with its grants `role:<app role>` and `group:<object id>` (App Service Authentication), `iam:<ARN>` (Lambda; an assumed role as its role's ARN), `schedule` and `invoke` (Lambda, `DIRECT_INVOCATION`); a caller matching several rules may do what any of them allows; a request outside its caller's rules is refused with 403 `caller_not_allowed` before anything is read. Unset: every caller may do everything",
		read: readCallerPolicy},
	{Name: "CALLER_RATE", Default: "0", DefaultDoc: "0 (off)", Meaning: "requests a minute each caller may make (a burst of up to ten); past it, 429 `too_many_requests` with `Retry-After`, so one caller's loop cannot spend the tenant's shared Graph budget",
		read: func(l *loader, v string) {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || n < 0 || n > 100000 {
				l.bad("CALLER_RATE", "%q must be requests a minute from 0 (off) to 100000", v)
				return
			}
			l.c.CallerRate = n
		}},
	{Name: "PUBLIC_BASE_URL", DefaultDoc: "`https://$WEBSITE_HOSTNAME` on Azure; the loopback host locally",
		Meaning: "the scheme and host callers reach the API at (a custom domain, a gateway), for absolute `Location` and status URLs", read: readPublicBaseURL},
	{Name: "RUN_QUEUED_CHUNKS", Default: "2", Meaning: "chunks (of 200 devices) one asynchronous run keeps on the queue at a time (1–100); the next is queued as one finishes, so runs of other tenants, and small runs behind a big one, interleave",
		read: intIn(1, 100, func(c *Config, n int) { c.RunQueuedChunks = n })},
	{Name: "FOLLOW_CACHE", Default: "30s", Meaning: "how long the script results a `follow=true` read found for a page of a run are reused (`0` reads Intune on every poll): a flow polling with follow every few seconds reads each script's states once per period",
		read: func(l *loader, v string) {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				l.bad("FOLLOW_CACHE", "%q must be a duration such as \"30s\", or 0", v)
				return
			}
			l.c.FollowCache = d
		}},
	{Name: "FOLLOW_CACHE_MB", Default: "16", Meaning: "the most memory the reused follow-up results take (1–1024); the oldest pages go first",
		read: intIn(1, 1024, func(c *Config, n int) { c.FollowCacheMB = n })},
	{Name: "RUN_MAX_DURATION", Default: "168h", DefaultDoc: "168h (7 days)", Meaning: "the longest an asynchronous run may go on; retention deletes a finished run after `RUN_RETENTION` and one still unfinished only after `RUN_RETENTION` + this, so no run is taken from under its workers",
		read: duration(func(c *Config, d time.Duration) { c.RunMaxDuration = d })},
	{Name: "RUN_RETENTION", Default: "720h", DefaultDoc: "720h (30 days)", Meaning: "stored runs are deleted this long after they were created (idempotency keys after `IDEMPOTENCY_TTL`, cooldown rows after `DEVICE_COOLDOWN`), by the hourly `cleanup` timer function",
		read: duration(func(c *Config, d time.Duration) { c.RunRetention = d })},
	{Name: "CLEANUP_MAX_OPS", Default: "2000", Meaning: "storage operations one cleanup may make (6–100000); what is left waits for the next hour",
		read: intIn(6, 100000, func(c *Config, n int) { c.CleanupMaxOps = n })},
	{Name: "SYNC_BUDGET", Default: "90s", Meaning: "`mode: auto` answers synchronously only when the triggers are estimated to take less (Logic Apps and Power Automate drop calls after 120 s, but follow a 202)",
		read: duration(func(c *Config, d time.Duration) { c.SyncBudget = d })},
	{Name: "WEBSITE_HOSTNAME", Meaning: "set by Azure: the app's host name; `Location` and status URLs are `https://` it, never taken from a request's headers",
		read: func(l *loader, v string) {
			if v != "" && l.c.PublicBaseURL == "" {
				l.c.PublicBaseURL = "https://" + v
			}
		}},
	{Name: "WEBSITE_AUTH_ENABLED", Meaning: "set by Azure when App Service Authentication is on (`True`): only then do the `X-MS-CLIENT-PRINCIPAL*` headers name the caller (the Functions host trusts them on the same condition); otherwise each function key is its own caller and those headers are ignored",
		read: text(func(c *Config, v string) { c.AuthEnabled = strings.EqualFold(strings.TrimSpace(v), "true") })},
	{Name: "FUNCTIONS_CUSTOMHANDLER_PORT", Meaning: "set by the Functions host: serve the custom-handler protocol on this port"},
	{Name: "FUNCTIONS_CUSTOMHANDLER_WORKER_ID", Meaning: "set by the Functions host (not by `make run`): asynchronous runs need storage there",
		read: text(func(c *Config, v string) { c.UnderHost = v != "" })},
	{Name: "FUNCTIONS_APP_ROOT_PATH", Meaning: "set by the Functions host: where `SCHEDULED_REQUEST_FILE` is found"},
	{Name: "AWS_LAMBDA_RUNTIME_API", Meaning: "set by Lambda: run the Lambda runtime loop"},
	{Name: "GOMEMLIMIT", Meaning: "Go's soft memory limit, e.g. `120MiB` on small plans (see [scaling.md](scaling.md#performance))"},
}

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

// Markdown is the settings table of docs/reference.md, generated from Settings.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| setting | default | meaning |\n|---|---|---|\n")
	for _, s := range Settings {
		def := s.DefaultDoc
		if def == "" && s.Default != "" {
			def = s.Default
		}
		if def == "" {
			def = "—"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", s.Name, def, s.Meaning)
	}
	return b.String()
}
