package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/replay"
	"github.com/remediator/remediator/internal/runs"
)

// asyncAPI is the API over the simulator with in-process workers, the
// engine paced at 20 triggers/s.
func asyncAPI(t *testing.T, budget time.Duration, replays replay.Store) (*API, *intunesim.Tenant, *runs.MemoryQueue) {
	t.Helper()
	return asyncAPIWith(t, budget, replays, nil)
}

// asyncAPIWith is asyncAPI with the application's options changed by set.
func asyncAPIWith(t *testing.T, budget time.Duration, replays replay.Store, set func(*app.Options)) (*API, *intunesim.Tenant, *runs.MemoryQueue) {
	t.Helper()
	gc, _, tenant := simulated(t, 300)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	engine := remediate.New(gc, pace.New(20, 1000), remediate.Config{}, log)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	q := runs.NewMemoryQueue(1, log)
	svc := runs.New(runs.NewMemoryStore(), q, engine, runs.Options{}, log)
	q.Start(ctx, svc)
	opts := app.Options{Runs: svc, SyncBudget: budget}
	if set != nil {
		set(&opts)
	}
	return New(app.New(engine, opts, log), Options{Replays: replays, PublicBaseURL: "https://app.example"}, log), tenant, q
}

func listed(tenant *intunesim.Tenant, n int, extra string) string {
	var items []string
	for _, d := range tenant.Windows(false) {
		if len(items) < n && !d.CoManaged && d.JoinType != "azureADRegistered" {
			items = append(items, target(d.ID, tenant.RemediationScript().ID))
		}
	}
	return `{"managed_devices":[` + strings.Join(items, ",") + `]` + extra + `}`
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(b, &v), "%s", b)
	return v
}

func TestModeAutoChoosesByEstimate(t *testing.T) {
	t.Parallel()
	replays := replay.NewMemory()
	api, tenant, q := asyncAPI(t, 1500*time.Millisecond, replays)
	h := api.Handler()

	// 20 devices at 20/s: one second, under the budget: answered at once.
	status, _, body := call(h, "POST", "/api/remediate", listed(tenant, 20, ""))
	require.Equal(t, 200, status, "%s", body)
	assert.Equal(t, 20, decode[remediate.Summary](t, body).Counts.Total)

	// 60 devices: three seconds, over it: 202, and the run finishes on a worker.
	status, hdr, body := call(h, "POST", "/api/remediate", listed(tenant, 60, ""))
	require.Equal(t, 202, status, "%s", body)
	acc := decode[Accepted](t, body)
	assert.Equal(t, "https://app.example/api/remediate/runs/"+acc.RunID, hdr.Get("Location"), "under the function that started it")
	assert.Equal(t, acc.StatusURL, hdr.Get("Location"))
	assert.Equal(t, 60, acc.Queued)
	q.Wait()
	status, _, body = call(h, "GET", "/api/remediate/runs/"+acc.RunID, "")
	require.Equal(t, 200, status, "%s", body)
	page := decode[remediate.Summary](t, body)
	assert.Equal(t, 60, page.Counts.Total)
	assert.Equal(t, 60, page.Counts.Succeeded)

	// Location never follows a request's forwarding headers: a caller could
	// point another caller's Location, with its key, at any host.
	status, hdr, _ = call(h, "POST", "/api/remediate?code=s3cr3t", listed(tenant, 2, `,"mode":"async"`),
		"X-Forwarded-Host", "attacker.invalid", "X-Forwarded-Proto", "http")
	require.Equal(t, 202, status)
	assert.True(t, strings.HasPrefix(hdr.Get("Location"), "https://app.example/api/remediate/runs/"), hdr.Get("Location"))

	// mode sync overrides the estimate; the key travels in Location only.
	status, _, _ = call(h, "POST", "/api/remediate?code=s3cr3t", listed(tenant, 1, `,"mode":"async","dry_run":true`))
	assert.Equal(t, 200, status, "dry runs answer at once")
	status, hdr, body = call(h, "POST", "/api/remediate?code=s3cr3t", listed(tenant, 2, `,"mode":"async"`))
	require.Equal(t, 202, status)
	assert.True(t, strings.HasSuffix(hdr.Get("Location"), "?code=s3cr3t"))
	assert.NotContains(t, string(body), "s3cr3t", "a function key never goes into a body")

	// With an idempotency key, the kept answer holds no function key; the
	// replay's Location carries the replaying caller's.
	req := listed(tenant, 2, `,"mode":"async"`)
	status, first, _ := call(h, "POST", "/api/remediate?code=s3cr3t", req, "Idempotency-Key", "k")
	require.Equal(t, 202, status)
	kept := replays.Kept()
	require.Len(t, kept, 1)
	for _, e := range kept {
		assert.NotContains(t, e.Headers["Location"], "s3cr3t")
		assert.NotContains(t, string(e.Body), "s3cr3t")
	}
	status, again, _ := call(h, "POST", "/api/remediate?code=other", req, "Idempotency-Key", "k")
	assert.Equal(t, 202, status)
	assert.Equal(t, "true", again.Get("Idempotent-Replayed"))
	assert.Equal(t, strings.Replace(first.Get("Location"), "s3cr3t", "other", 1), again.Get("Location"))
	q.Wait()
}

// TestCallersAreKeptApart: a run is visible only to the caller that
// submitted it, and idempotency keys are each caller's own: B replays
// nothing of A's and cannot block A's key.
func TestCallersAreKeptApart(t *testing.T) {
	t.Parallel()
	api, tenant, q := asyncAPI(t, time.Second, replay.NewMemory())
	api.opts.Caller = func(r *http.Request) app.Caller { return app.Caller{ID: r.Header.Get("X-Test-Caller")} }
	h := api.Handler()
	body := listed(tenant, 2, `,"mode":"async"`)

	status, _, out := call(h, "POST", "/api/remediate", body, "X-Test-Caller", "a", "Idempotency-Key", "k")
	require.Equal(t, 202, status, "%s", out)
	run := decode[Accepted](t, out).RunID
	q.Wait()
	status, _, _ = call(h, "GET", "/api/runs/"+run, "", "X-Test-Caller", "a")
	assert.Equal(t, 200, status, "the submitter reads its run")
	status, _, out = call(h, "GET", "/api/runs/"+run+"?follow=true", "", "X-Test-Caller", "b")
	assert.Equal(t, 404, status, "another caller does not: %s", out)
	assert.NotContains(t, string(out), tenant.RemediationScript().ID)

	status, hdr, out := call(h, "POST", "/api/remediate", body, "X-Test-Caller", "b", "Idempotency-Key", "k")
	require.Equal(t, 202, status)
	assert.Empty(t, hdr.Get("Idempotent-Replayed"), "B's key k is not A's")
	assert.NotEqual(t, run, decode[Accepted](t, out).RunID)
	status, hdr, _ = call(h, "POST", "/api/remediate", body, "X-Test-Caller", "a", "Idempotency-Key", "k")
	assert.Equal(t, 202, status)
	assert.Equal(t, "true", hdr.Get("Idempotent-Replayed"), "A still gets its own answer")
	q.Wait()
}

// TestCancelARun: POST .../runs/{id}/cancel under the function that
// started the run stops it for its caller only; the answer is the run's
// status, final once nothing is left (status cancelled, 200); again, the
// same; GET on the cancel route is a 405 naming POST; under CALLER_POLICY
// a caller with no rule may not cancel.
func TestCancelARun(t *testing.T) {
	t.Parallel()
	api, tenant, q := asyncAPI(t, time.Second, replay.NewMemory())
	api.opts.Caller = func(r *http.Request) app.Caller { return app.Caller{ID: r.Header.Get("X-Test-Caller")} }
	h := api.Handler()
	status, _, out := call(h, "POST", "/api/remediate", listed(tenant, 200, `,"mode":"async"`), "X-Test-Caller", "a")
	require.Equal(t, 202, status, "%s", out)
	acc := decode[Accepted](t, out)
	run := acc.RunID

	status, _, out = call(h, "POST", "/api/remediate/runs/"+run+"/cancel", "", "X-Test-Caller", "b")
	assert.Equal(t, 404, status, "another caller's run is not found: %s", out)
	status, hdr, _ := call(h, "GET", "/api/remediate/runs/"+run+"/cancel", "", "X-Test-Caller", "a")
	assert.Equal(t, 405, status)
	assert.Equal(t, "POST", hdr.Get("Allow"))

	status, hdr, out = call(h, "POST", "/api/remediate/runs/"+run+"/cancel", "", "X-Test-Caller", "a")
	require.Contains(t, []int{200, 202}, status, "%s", out)
	if status == 202 {
		assert.Equal(t, "https://app.example/api/remediate/runs/"+run, hdr.Get("Location"), "polled under the function that started it")
	}
	q.Wait()
	status, _, out = call(h, "POST", "/api/remediate/runs/"+run+"/cancel", "", "X-Test-Caller", "a")
	require.Equal(t, 200, status, "%s", out)
	s := decode[remediate.Summary](t, out)
	assert.Equal(t, remediate.StatusCancelled, s.Status)
	assert.Equal(t, acc.Queued, s.Counts.Total)
	assert.Positive(t, s.Counts.NotAttempted, "devices not yet triggered at the cancel were not")
	assert.Equal(t, s.Counts.Total, s.Counts.Succeeded+s.Counts.NotAttempted)

	// Resume, like cancel, is the caller's alone, and leaves a run that is
	// not halted as it is.
	status, _, out = call(h, "POST", "/api/remediate/runs/"+run+"/resume", "", "X-Test-Caller", "b")
	assert.Equal(t, 404, status, "%s", out)
	status, _, out = call(h, "POST", "/api/remediate/runs/"+run+"/resume", "", "X-Test-Caller", "a")
	require.Equal(t, 200, status, "%s", out)
	assert.Equal(t, remediate.StatusCancelled, decode[remediate.Summary](t, out).Status)

	policed, _, _ := asyncAPIWith(t, time.Second, replay.NewMemory(), func(o *app.Options) { o.Policy = app.CallerPolicy{"a": {}} })
	policed.opts.Caller = api.opts.Caller
	status, _, out = call(policed.Handler(), "POST", "/api/remediate/runs/"+run+"/cancel", "", "X-Test-Caller", "c")
	assert.Equal(t, 403, status, "no rule in CALLER_POLICY: %s", out)
	assert.Contains(t, string(out), "caller_not_allowed")
}
