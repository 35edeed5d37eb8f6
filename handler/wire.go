package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/remediator/remediator/internal/alert"
	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/awslambda"
	"github.com/remediator/remediator/internal/azstore"
	"github.com/remediator/remediator/internal/azure"
	"github.com/remediator/remediator/internal/config"
	"github.com/remediator/remediator/internal/credential"
	"github.com/remediator/remediator/internal/graph"
	"github.com/remediator/remediator/internal/httpapi"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/replay"
	"github.com/remediator/remediator/internal/runs"
)

// deps is what build wires.
type deps struct {
	api   *httpapi.API
	svc   *app.Service
	graph *graph.Client
	// runs is the asynchronous side, nil when runs are synchronous only.
	runs *runs.Service
	// storageOps counts the requests made to Azure Storage (nil without).
	storageOps func() int64
}

// build wires the credentials, the Graph client, the pacer, the engine, the
// run store and the HTTP API. Secrets (the client secret, the storage
// connection string) are read from getenv here and handed on, never stored
// in the configuration.
func build(ctx context.Context, cfg config.Config, getenv func(string) string, log *slog.Logger, runtime string) (deps, error) {
	gc, creds, err := openGraph(cfg, getenv, log)
	if err != nil {
		return deps{}, err
	}
	st, err := openStorage(ctx, cfg, getenv, log, runtime)
	if err != nil {
		return deps{}, err
	}
	ecfg := engineConfig(cfg, creds)
	hopts := apiOptions(cfg, runtime)
	pacer := pace.New(cfg.GraphWriteRate, cfg.GraphReadRate)
	if st.durable != nil {
		ecfg.Cooldown, hopts.Replays = st.durable, st.durable
		if cfg.SharedBudget {
			pacer.WithShared(pace.SharedOptions{Store: st.durable, Scope: budgetScope(cfg), DefaultTenant: cfg.GraphTenantID,
				Processes: cfg.BudgetProcesses, CallTimeout: cfg.StorageCallTimeout, Term: cfg.BudgetLeaseTerm, Renew: cfg.BudgetRenewEvery})
		}
	} else {
		hopts.Replays = replay.NewMemoryBounded(int64(cfg.IdempotencyMemoryMB) << 20)
	}
	engine := remediate.New(gc, pacer, ecfg, log)
	d := deps{graph: gc}
	if st.durable != nil {
		d.storageOps = st.durable.Ops
	}
	opts := app.Options{
		Limits:         remediate.Limits{MaxDevices: cfg.MaxDevicesPerRun, MaxTargets: cfg.MaxTargets, MaxDeviceNames: cfg.MaxDeviceNames, MaxGroupIDs: cfg.MaxGroupIDs},
		Alerts:         alert.Settings{DeviceDimension: cfg.AlertDeviceDimension, ScriptPolicyID: cfg.AlertScriptPolicyID},
		SyncBudget:     cfg.SyncBudget,
		MaxAnswerBytes: cfg.MaxAnswerBytes,
		Policy:         cfg.CallerPolicy,
	}
	if st.store != nil {
		d.runs = runs.New(st.store, st.queue, engine, runs.Options{ClaimLease: cfg.FunctionTimeout, PageSize: cfg.RunPageSize,
			Retention: cfg.RunRetention, MaxRunDuration: cfg.RunMaxDuration, FollowCache: followCache(cfg.FollowCache), FollowCacheBytes: cfg.FollowCacheMB << 20, CooldownPeriod: cfg.DeviceCooldown, CleanupMaxOps: cfg.CleanupMaxOps, QueuedChunks: cfg.RunQueuedChunks}, log)
		opts.Runs = d.runs
		if st.local != nil {
			st.local.Start(ctx, d.runs)
		}
	}
	d.svc = app.New(engine, opts, log)
	d.api = httpapi.New(d.svc, hopts, log)
	return d, nil
}

// openGraph builds the Graph client and, unless GRAPH_AUTH is none (a
// simulator), the credential source its tokens and the engine's tenants
// come from.
func openGraph(cfg config.Config, getenv func(string) string, log *slog.Logger) (*graph.Client, remediate.Credentials, error) {
	gcfg := graph.Config{BaseURL: cfg.GraphBaseURL, CallTimeout: cfg.GraphCallTimeout, MaxResponseBytes: int64(cfg.GraphMaxResponseMB) << 20}
	var creds remediate.Credentials // an interface holding no nil pointer: none without auth
	if cfg.GraphAuth != "none" {
		src, err := credential.Open(credential.Settings{
			Mode: cfg.GraphAuth, GraphBaseURL: cfg.GraphBaseURL,
			TenantID: cfg.GraphTenantID, ClientID: cfg.GraphClientID, ClientSecret: getenv("GRAPH_CLIENT_SECRET"),
			ManagedIdentityClientID: cfg.ManagedIdentityClientID,
			VaultURL:                cfg.KeyVaultURL, SecretName: cfg.CredentialSecret,
			AuthorityHost: cfg.AuthorityHost, VaultCredential: cfg.KeyVaultCredential, AllowedTenants: cfg.AllowedTenants,
		}, log)
		if err != nil {
			return nil, nil, err
		}
		gcfg.Tokens, creds = src, src
	}
	gc, err := graph.New(gcfg)
	return gc, creds, err
}

// engineConfig is the engine's configuration (its cooldown store in memory
// until run storage replaces it).
func engineConfig(cfg config.Config, creds remediate.Credentials) remediate.Config {
	return remediate.Config{
		Credentials:     creds,
		Concurrency:     cfg.MaxConcurrency,
		MaxDevices:      cfg.MaxDevicesPerRun,
		MaxListed:       cfg.MaxListedDevices,
		MaxFleetPercent: cfg.MaxFleetPercent,
		AllowedScripts:  cfg.AllowedScripts,
		ScriptPins:      cfg.ScriptPins,
		Cooldown:        remediate.NewMemoryCooldown(max(cfg.DeviceCooldown, time.Minute)),
		CooldownPeriod:  cfg.DeviceCooldown,
		StoreTimeout:    cfg.StorageCallTimeout,
		Retry:           remediate.RetryPolicy{MaxRetryAfter: cfg.RetryAfterMax},
	}
}

// apiOptions is the HTTP API's configuration, with the runtime's way of
// telling callers apart (replays come with the storage).
func apiOptions(cfg config.Config, runtime string) httpapi.Options {
	hopts := httpapi.Options{IdempotencyTTL: cfg.IdempotencyTTL, StoreTimeout: cfg.StorageCallTimeout, PublicBaseURL: cfg.PublicBaseURL,
		MaxAnswerBytes: cfg.MaxAnswerBytes, CallerRate: cfg.CallerRate}
	switch runtime {
	case runtimeAzure:
		id := azure.Identity{AuthEnabled: cfg.AuthEnabled}
		hopts.Audit, hopts.Caller = id.Audit, id.Caller
	case runtimeLambda:
		hopts.Audit, hopts.Caller = awslambda.Audit, awslambda.Caller
	}
	return hopts
}

// budgetScope names the app registration whose Graph budget the
// deployment spends (Intune counts per app and tenant): the client id, or
// the managed identity's.
func budgetScope(cfg config.Config) string {
	return cmp.Or(cfg.GraphClientID, cfg.ManagedIdentityClientID, "managed-identity")
}

// storage is where runs, keys and cooldowns are kept.
type storage struct {
	store   runs.Store
	queue   runs.Queue
	durable *azstore.Store    // nil without Azure Storage
	local   *runs.MemoryQueue // in-process workers (local runtime)
}

// openStorage opens Azure Storage when AzureWebJobsStorage (or its
// identity-based form) is set. Without it, local runs (serve, demo, and
// make run, which plays the host without one) keep runs in memory; under
// the real Functions host runs stay synchronous: a run kept in memory would
// be lost when the host recycles the worker.
func openStorage(ctx context.Context, cfg config.Config, getenv func(string) string, log *slog.Logger, runtime string) (storage, error) {
	conn := getenv("AzureWebJobsStorage")
	// On Lambda (no managed identity there) only a connection string: the
	// store keeps idempotency keys, cooldowns and the shared Graph budget;
	// runs stay synchronous, as Lambda has no queue trigger of ours.
	if conn != "" || (runtime != runtimeLambda && cfg.StorageAccountName != "") {
		acfg := azstore.Config{ConnectionString: conn, AccountName: cfg.StorageAccountName,
			TableServiceURI: cfg.StorageTableURI, QueueServiceURI: cfg.StorageQueueURI,
			Table: cfg.RunsTable, Queue: cfg.RemediationQueue}
		if conn == "" {
			var mi *azidentity.ManagedIdentityCredentialOptions
			if id := cfg.StorageClientID; id != "" {
				mi = &azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(id)}
			}
			cred, err := azidentity.NewManagedIdentityCredential(mi)
			if err != nil {
				return storage{}, fmt.Errorf("storage: managed identity for AzureWebJobsStorage__accountName: %w", err)
			}
			acfg.Credential = cred
		}
		st, q, err := azstore.New(acfg)
		if err != nil {
			return storage{}, fmt.Errorf("storage: %w", err)
		}
		// Storage that cannot be reached at start-up is not a reason to
		// exit (under the host that is a crash loop, and synchronous
		// requests would be down too): asynchronous work is refused with 503
		// until the table and queues can be made. Start-up waits for it three
		// seconds at most.
		octx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := st.Ensure(octx); err != nil {
			log.Warn("run storage unreachable at start-up: synchronous runs are served, asynchronous runs refused with 503 until it answers",
				"table", cfg.RunsTable, "queue", cfg.RemediationQueue, "error", err.Error())
			go ensureLater(ctx, st, log)
		} else {
			log.Info("run storage ready", "table", cfg.RunsTable, "queue", cfg.RemediationQueue)
		}
		if runtime == runtimeLambda {
			return storage{durable: st}, nil
		}
		return storage{store: st, queue: q, durable: st}, nil
	}
	switch {
	case runtime == runtimeLocal, runtime == runtimeAzure && !cfg.UnderHost: // make run plays the host without one
		q := runs.NewMemoryQueue(2, log)
		return storage{store: runs.NewMemoryStore(), queue: q, local: q}, nil
	case runtime == runtimeAzure:
		log.Warn("AzureWebJobsStorage is not set: asynchronous runs are off (mode async is refused, auto runs synchronously); an in-memory store would lose runs when the host recycles the worker")
	}
	return storage{}, nil
}

// ensureLater retries creating the run table and queues until storage
// answers or ctx ends.
func ensureLater(ctx context.Context, st *azstore.Store, log *slog.Logger) {
	for wait := time.Second; ; wait = min(2*wait, 15*time.Second) {
		if pace.Sleep(ctx, wait) != nil {
			return
		}
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := st.Ensure(octx)
		cancel()
		if err == nil {
			log.Info("run storage reachable: asynchronous runs are accepted again")
			return
		}
	}
}

// followCache is FOLLOW_CACHE as runs.Options takes it (negative: off).
func followCache(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
