package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

// asyncAPI is the API over the simulator with in-process workers, the
// engine paced at 20 triggers/s.
func asyncAPI(t *testing.T, budget time.Duration) (*API, *intunesim.Tenant, *runs.MemoryQueue) {
	t.Helper()
	gc, _, tenant := simulated(t, 300)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	engine := remediate.New(gc, pace.New(20, 1000), remediate.Config{}, log)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	q := runs.NewMemoryQueue(1, log)
	svc := runs.New(runs.NewMemoryStore(), q, engine, runs.Options{}, log)
	q.Start(ctx, svc)
	return New(engine, Options{Runs: svc, SyncBudget: budget}, log), tenant, q
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

func TestModeAutoChoosesByEstimate(t *testing.T) {
	api, tenant, q := asyncAPI(t, 1500*time.Millisecond)
	ctx := WithCall(context.Background(), Call{BaseURL: "https://app.example"})

	// 20 devices at 20/s: one second, under the budget: answered at once.
	res := api.Remediate(ctx, strings.NewReader(listed(tenant, 20, "")))
	require.Equal(t, 200, res.Status, "%+v", res.Body)
	assert.Equal(t, 20, res.Body.(*remediate.Summary).Counts.Total)

	// 60 devices: three seconds, over it: 202, and the run finishes on a worker.
	res = api.Remediate(ctx, strings.NewReader(listed(tenant, 60, "")))
	require.Equal(t, 202, res.Status, "%+v", res.Body)
	acc := res.Body.(Accepted)
	assert.Equal(t, "https://app.example/api/runs/"+acc.RunID, res.Headers["Location"])
	assert.Equal(t, acc.StatusURL, res.Headers["Location"])
	q.Wait()
	res = api.Run(ctx, acc.RunID, 0, false)
	require.Equal(t, 200, res.Status, "%+v", res.Body)
	page := res.Body.(RunPage)
	assert.Equal(t, 60, page.Counts.Total)
	assert.Equal(t, 60, page.Counts.Succeeded)

	// mode sync overrides the estimate; the key travels in Location only.
	ctx = WithCall(context.Background(), Call{BaseURL: "https://app.example", Code: "s3cr3t"})
	res = api.Remediate(ctx, strings.NewReader(listed(tenant, 1, `,"mode":"async","dry_run":true`)))
	assert.Equal(t, 200, res.Status, "dry runs answer at once")
	res = api.Remediate(ctx, strings.NewReader(listed(tenant, 2, `,"mode":"async"`)))
	require.Equal(t, 202, res.Status)
	assert.True(t, strings.HasSuffix(res.Headers["Location"], "?code=s3cr3t"))
	body, _ := json.Marshal(res.Body)
	assert.NotContains(t, string(body), "s3cr3t", "a function key never goes into a body")

	// With an idempotency key, the kept answer holds no function key; the
	// replay's Location carries the replaying caller's.
	replays := NewMemoryReplays()
	api.opts.Replays = replays
	ctx = WithCall(ctx, Call{BaseURL: "https://app.example", Code: "s3cr3t", IdempotencyKey: "k"})
	first := api.Remediate(ctx, strings.NewReader(listed(tenant, 2, `,"mode":"async"`)))
	require.Equal(t, 202, first.Status)
	for _, e := range replays.entries {
		require.NotNil(t, e.stored)
		assert.NotContains(t, e.stored.Headers["Location"], "s3cr3t")
		assert.NotContains(t, string(e.stored.Body), "s3cr3t")
	}
	ctx = WithCall(ctx, Call{BaseURL: "https://app.example", Code: "other", IdempotencyKey: "k"})
	again := api.Remediate(ctx, strings.NewReader(listed(tenant, 2, `,"mode":"async"`)))
	assert.Equal(t, 202, again.Status)
	assert.Equal(t, "true", again.Headers["Idempotent-Replayed"])
	assert.Equal(t, strings.Replace(first.Headers["Location"], "s3cr3t", "other", 1), again.Headers["Location"])
	q.Wait()
}
