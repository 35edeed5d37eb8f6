package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/azure"
	"github.com/remediator/remediator/internal/httpapi"
	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

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
	{Name: "MAX_CONCURRENCY", Default: num(remediate.DefaultConcurrency), Meaning: "Graph calls in flight (1–64)",
		read: intIn(1, 64, func(c *Config, n int) { c.MaxConcurrency = n })},
	{Name: "GRAPH_WRITE_RATE", Default: "8", Meaning: "triggers per second for each tenant (and app registration): for the whole deployment when run storage is set (the shared budget, `SHARED_BUDGET`), else for each process; at most 10 against Microsoft Graph (Intune's 200 per 20 s per app and tenant)",
		read: rate(intuneWritesPerSecond, func(c *Config, f float64) { c.GraphWriteRate = f })},
	{Name: "GRAPH_READ_RATE", Default: "80", Meaning: "reads per second for each tenant, shared like `GRAPH_WRITE_RATE` (Intune allows 100); each `$batch` item counts",
		read: rate(intuneReadsPerSecond, func(c *Config, f float64) { c.GraphReadRate = f })},
	{Name: "SHARED_BUDGET", Default: "on", Meaning: "on: with run storage (`AzureWebJobsStorage`, also on Lambda), every process paces a tenant's writes and reads at its lease of one budget kept in the run table, so scale-out never multiplies the pace (leases judged on storage's clock; 2 storage operations per renewal, whatever the number of calls; a 429 pauses every process and halves the budget); off: each process paces alone",
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
	{Name: "BUDGET_LEASE_TERM", Default: dur(pace.DefaultLeaseTerm), Meaning: "how long a process's lease of a shared budget lasts unless renewed (2 s–1 min): a frozen or cut-off process stops using its share within it, and a process that never reached storage waits it before its outage share",
		read: durationIn(2*time.Second, time.Minute, func(c *Config, d time.Duration) { c.BudgetLeaseTerm = d })},
	{Name: "BUDGET_RENEW_EVERY", Default: dur(pace.DefaultRenewEvery), Meaning: "how often a busy process renews its lease (at most half the term): 2 storage operations each, so storage operations per call fall as calls grow",
		read: durationIn(500*time.Millisecond, 30*time.Second, func(c *Config, d time.Duration) { c.BudgetRenewEvery = d })},
	{Name: "MAX_DEVICES_PER_RUN", Default: "5000", Meaning: "devices per request, listed or resolved",
		read: intIn(1, 1000000, func(c *Config, n int) { c.MaxDevicesPerRun = n })},
	{Name: "MAX_LISTED_DEVICES", Default: num(remediate.DefaultMaxListed), Meaning: "devices one run may read from the tenant's device list and from groups' member pages (filters, names, groups, validation); a run past it is refused, so memory stays bounded whatever Graph sends",
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
	{Name: "GRAPH_CALL_TIMEOUT", Default: dur(intune.DefaultCallTimeout), Meaning: "one Graph request",
		read: duration(func(c *Config, d time.Duration) { c.GraphCallTimeout = d })},
	{Name: "RETRY_AFTER_MAX", Default: dur(remediate.DefaultMaxRetryAfter), Meaning: "the longest Retry-After honoured; a longer one (a day, a date in year 9999) is taken as this and counted in the summary's `throttling.retry_after_capped`",
		read: duration(func(c *Config, d time.Duration) { c.RetryAfterMax = d })},
	{Name: "GRAPH_MAX_RESPONSE_MB", Default: num(intune.DefaultMaxResponseBytes >> 20), Meaning: "the largest Graph answer read, after decompression (1–256); a page of 1,000 devices is about 0.5 MB",
		read: intIn(1, 256, func(c *Config, n int) { c.GraphMaxResponseMB = n })},
	{Name: "PORT", Default: "8080", Meaning: "where `handler serve` listens (127.0.0.1)",
		read: intIn(1, 65535, func(c *Config, n int) { c.Port = n })},
	{Name: "LOG_LEVEL", Default: "info", Meaning: "debug, info, warn, error; logs are JSON on stderr, one line per run", read: readLogLevel},
	{Name: "FUNCTION_TIMEOUT", Default: dur(runs.DefaultFunctionTimeout), Meaning: "mirror of `host.json` `functionTimeout`; every invocation ends before it",
		read: duration(func(c *Config, d time.Duration) { c.FunctionTimeout = d })},
	{Name: "HTTP_RESPONSE_BUDGET", Default: dur(azure.DefaultHTTPBudget), Meaning: "HTTP invocations answer before it (at most 230s)", read: readHTTPBudget},
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
	{Name: "IDEMPOTENCY_TTL", Default: dur(httpapi.DefaultIdempotencyTTL), Meaning: "how long answers are kept for `Idempotency-Key` and alert replays",
		read: duration(func(c *Config, d time.Duration) { c.IdempotencyTTL = d })},
	{Name: "STORAGE_CALL_TIMEOUT", Default: dur(remediate.DefaultStoreTimeout), Meaning: "each idempotency-key and cooldown look-up of a request, and each renewal of a shared Graph budget's lease: slow or unreachable storage costs a synchronous run at most this (a warning for the cooldown; a 503 for a keyed request; the outage share once the lease ends)",
		read: duration(func(c *Config, d time.Duration) { c.StorageCallTimeout = d })},
	{Name: "IDEMPOTENCY_MEMORY_MB", Default: "32", Meaning: "without run storage (Lambda, local): the most memory kept answers take (1–256); the oldest are evicted first, and a retry after its answer was evicted runs again",
		read: intIn(1, 256, func(c *Config, n int) { c.IdempotencyMemoryMB = n })},
	{Name: "RUN_PAGE_SIZE", Default: num(runs.DefaultPageSize), Meaning: "devices per page of a run's status (`GET /api/remediate/runs/{id}`; 1–5000)",
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
	{Name: "RUN_QUEUED_CHUNKS", Default: num(runs.DefaultQueuedChunks), Meaning: "chunks (of 200 devices) one asynchronous run keeps on the queue at a time (1–100); the next is queued as one finishes, so runs of other tenants, and small runs behind a big one, interleave",
		read: intIn(1, 100, func(c *Config, n int) { c.RunQueuedChunks = n })},
	{Name: "FOLLOW_CACHE", Default: dur(runs.DefaultFollowCache), Meaning: "how long the script results a `follow=true` read found for a page of a run are reused (`0` reads Intune on every poll): a flow polling with follow every few seconds reads each script's states once per period",
		read: func(l *loader, v string) {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				l.bad("FOLLOW_CACHE", "%q must be a duration such as \"30s\", or 0", v)
				return
			}
			l.c.FollowCache = d
		}},
	{Name: "FOLLOW_CACHE_MB", Default: num(runs.DefaultFollowCacheBytes >> 20), Meaning: "the most memory the reused follow-up results take (1–1024); the oldest pages go first",
		read: intIn(1, 1024, func(c *Config, n int) { c.FollowCacheMB = n })},
	{Name: "RUN_MAX_DURATION", Default: dur(runs.DefaultMaxRunDuration), DefaultDoc: "168h (7 days)", Meaning: "the longest an asynchronous run may go on; retention deletes a finished run after `RUN_RETENTION` and one still unfinished only after `RUN_RETENTION` + this, so no run is taken from under its workers",
		read: duration(func(c *Config, d time.Duration) { c.RunMaxDuration = d })},
	{Name: "RUN_RETENTION", Default: dur(runs.DefaultRetention), DefaultDoc: "720h (30 days)", Meaning: "stored runs are deleted this long after they were created (idempotency keys after `IDEMPOTENCY_TTL`, cooldown rows after `DEVICE_COOLDOWN`), by the hourly `cleanup` timer function",
		read: duration(func(c *Config, d time.Duration) { c.RunRetention = d })},
	{Name: "CLEANUP_MAX_OPS", Default: num(runs.DefaultCleanupMaxOps), Meaning: "storage operations one cleanup may make (6–100000); what is left waits for the next hour",
		read: intIn(6, 100000, func(c *Config, n int) { c.CleanupMaxOps = n })},
	{Name: "SYNC_BUDGET", Default: dur(app.DefaultSyncBudget), Meaning: "`mode: auto` answers synchronously only when the triggers are estimated to take less (Logic Apps and Power Automate drop calls after 120 s, but follow a 202)",
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

// num and dur write a default as its setting is written: the defaults are
// the constructors' own (remediate.DefaultConcurrency, ...), written once.
func num(n int) string { return strconv.Itoa(n) }

func dur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
