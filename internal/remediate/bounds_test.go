package remediate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/testing/simgraph"
)

// endlessGraph is a hostile Graph whose device list never ends: every page
// holds 1,000 new eligible Windows devices and a nextLink to the next.
func endlessGraph(t *testing.T) (url string, pages *atomic.Int64) {
	t.Helper()
	pages = &atomic.Int64{}
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("page"))
		pages.Add(1)
		devs := make([]map[string]any, 1000)
		for i := range devs {
			devs[i] = map[string]any{"id": fmt.Sprintf("00000000-0000-4000-8000-%012d", n*1000+i), "deviceName": fmt.Sprintf("PC-%d", n*1000+i),
				"operatingSystem": "Windows", "joinType": "azureADJoined", "managementAgent": "mdm", "managementState": "managed",
				"lastSyncDateTime": time.Now().UTC().Format(time.RFC3339)}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"value": devs, "@odata.nextLink": fmt.Sprintf("%s/beta/deviceManagement/managedDevices?page=%d", srv.URL, n+1)})
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/beta", pages
}

// TestCapsApplyWhilePaging: a device list that never ends stops a real run
// as soon as its selectors pass MAX_DEVICES_PER_RUN, and any run (a dry
// run too) once it has read MAX_LISTED_DEVICES: memory is bounded by the
// settings, not by what Graph sends.
func TestCapsApplyWhilePaging(t *testing.T) {
	t.Parallel()
	base, pages := endlessGraph(t)
	gc := simgraph.New(base, 5*time.Second)
	e := New(gc, pace.New(1000, 100_000), Config{MaxDevices: 2500, MaxListed: 10_000}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	plan := targetPlan(t, sel("87654321-4321-4321-4321-ba9876543210", `"filter":"operatingSystem eq 'Windows'"`))
	plan.ValidateDevices = false

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := e.Complete(ctx, plan)
	require.Equal(t, StatusRejected, s.Status)
	assert.Equal(t, fault.TooManyDevices, s.Error.Code)
	assert.LessOrEqual(t, pages.Load(), int64(3), "resolving stopped at the cap")

	pages.Store(0)
	plan.DryRun = true
	s = e.Complete(ctx, plan)
	require.Equal(t, StatusRejected, s.Status)
	assert.Equal(t, fault.TargetResolutionFailed, s.Error.Code)
	require.NotEmpty(t, s.Error.Details)
	assert.Contains(t, s.Error.Details[0].Message, "MAX_LISTED_DEVICES")
	assert.LessOrEqual(t, pages.Load(), int64(11), "reading stopped at MAX_LISTED_DEVICES")
}

// slowCooldown answers only when its caller gives up, like storage that
// is slow or unreachable.
type slowCooldown struct{}

func (slowCooldown) Recent(ctx context.Context, _ string, _ time.Time) (map[string]time.Time, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (slowCooldown) Triggered(ctx context.Context, _ []CooldownKey, _ time.Time) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestSlowCooldownStoreIsBounded: a cooldown store that does not answer
// costs a run at most StoreTimeout per call, and a warning; the devices
// are triggered.
func TestSlowCooldownStoreIsBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 100, intunesim.Options{}, 1000)
	e := New(f.client, pace.New(1000, 1000), Config{Cooldown: slowCooldown{}, CooldownPeriod: time.Minute, StoreTimeout: 200 * time.Millisecond},
		slog.New(slog.NewJSONHandler(io.Discard, nil)))
	started := time.Now()
	s := e.Complete(context.Background(), f.plan(f.eligible(3), intune.ManagedDevices))
	assert.Less(t, time.Since(started), 3*time.Second)
	assert.Equal(t, 3, s.Counts.Succeeded)
	assert.True(t, slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, "DEVICE_COOLDOWN was not applied") }), "%v", s.Warnings)
	assert.True(t, slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, "cooldown store could not be written") }), "%v", s.Warnings)
}

// TestTenantsArePacedApart: a 429 pause of tenant A holds none of tenant
// B's triggers; A's own run triggers nothing until its pause ends.
func TestTenantsArePacedApart(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 200, intunesim.Options{}, 1000)
	const a, b = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	p := pace.New(1000, 1000)
	p.For(a).Pause(time.Hour)
	e := New(f.client, p, Config{}, slog.New(slog.NewJSONHandler(io.Discard, nil)))

	plan := f.plan(f.eligible(5), intune.ManagedDevices)
	plan.TenantID = b
	started := time.Now()
	s := e.Complete(context.Background(), plan)
	assert.Equal(t, 5, s.Counts.Succeeded, "B is not held by A's pause")
	assert.Less(t, time.Since(started), 5*time.Second)

	triggers := f.sim.Counters().Triggers
	plan.TenantID, plan.ValidateDevices = a, false // straight to the triggers
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s = e.Complete(ctx, plan)
	assert.Equal(t, 5, s.Counts.NotAttempted, "A waits for its pause")
	for _, d := range s.Devices {
		assert.Equal(t, ReasonThrottled, d.Reason, "a pause is named as such, not as a deadline")
		assert.Contains(t, d.Message, "Retry-After) until ", "%+v", d)
	}
	assert.Equal(t, triggers, f.sim.Counters().Triggers)
	assert.Greater(t, e.PausedFor(a), 59*time.Minute)
	assert.Zero(t, e.PausedFor(b))
}
