package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/replay"
)

// failingStore is a replay store whose Finish fails for answers over
// maxBody bytes (as a table over its entity limit would) or always.
type failingStore struct {
	*replay.Memory
	mu       sync.Mutex
	maxBody  int
	finishes int
}

func (f *failingStore) Finish(ctx context.Context, key string, s replay.Stored) error {
	f.mu.Lock()
	f.finishes++
	f.mu.Unlock()
	if len(s.Body) > f.maxBody {
		return errors.New("EntityTooLarge")
	}
	return f.Memory.Finish(ctx, key, s)
}

// TestAnswersNotKeptAreNeverSilent: when an answer cannot be kept for its
// Idempotency-Key, a retry never triggers the devices again unless nothing
// was triggered.
func TestAnswersNotKeptAreNeverSilent(t *testing.T) {
	t.Parallel()
	gc, sim, tenant := simulated(t, 200)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	engine := remediate.New(gc, pace.New(1000, 1000), remediate.Config{}, log)
	store := &failingStore{Memory: replay.NewMemory(), maxBody: 2000}
	h := New(app.New(engine, app.Options{}, log), Options{Replays: store}, log).Handler()
	body := listed(tenant, 30, "")

	// The full answer is too large to keep: its short form is kept, and a
	// retry replays that, triggering nothing.
	status, hdr, out := call(h, "POST", "/api/remediate", body, "Idempotency-Key", "k1")
	require.Equal(t, 200, status, "%s", out)
	assert.Empty(t, hdr.Get("Idempotency-Kept"))
	assert.Len(t, decode[remediate.Summary](t, out).Devices, 30, "the caller's own answer is whole")
	triggers := sim.Counters().Triggers
	require.Equal(t, 30, triggers)
	status, hdr, out = call(h, "POST", "/api/remediate", body, "Idempotency-Key", "k1")
	require.Equal(t, 200, status, "%s", out)
	assert.Equal(t, "true", hdr.Get("Idempotent-Replayed"))
	short := decode[remediate.Summary](t, out)
	assert.Equal(t, 30, short.Counts.Succeeded)
	assert.Empty(t, short.Devices)
	assert.Equal(t, 30, short.OmittedDevices)
	assert.Contains(t, short.Warnings[len(short.Warnings)-1], "could not be kept")
	assert.Equal(t, triggers, sim.Counters().Triggers, "a retry triggers nothing")

	// Nothing can be kept: the answer says so.
	store.maxBody = 10
	status, hdr, out = call(h, "POST", "/api/remediate", body, "Idempotency-Key", "k2")
	require.Equal(t, 200, status, "%s", out)
	assert.Equal(t, "false", hdr.Get("Idempotency-Kept"))
	assert.Contains(t, string(out), "could not be kept for its Idempotency-Key")
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, "POST", "https://app.example/api/remediate", strings.NewReader(body))
	req.Header.Set("Idempotency-Key", "k2")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	assert.Equal(t, 409, rec.Code, "the key stays held: a retry is told to wait, never run again at once")
	assert.Equal(t, 60, sim.Counters().Triggers)

	// A refusal triggered nothing: its key is released and a retry runs.
	status, hdr, _ = call(h, "POST", "/api/remediate", `{"managed_devices":[]}`, "Idempotency-Key", "k3")
	require.Equal(t, 400, status)
	assert.Empty(t, hdr.Get("Idempotency-Kept"))
	store.maxBody = 1 << 20
	status, hdr, _ = call(h, "POST", "/api/remediate", `{"managed_devices":[]}`, "Idempotency-Key", "k3")
	assert.Equal(t, 400, status)
	assert.Empty(t, hdr.Get("Idempotent-Replayed"), "answered anew")
}

// TestCallerRate: with CALLER_RATE, a caller past its rate gets 429 with
// Retry-After, and nothing is run for it; other callers are not held.
func TestCallerRate(t *testing.T) {
	t.Parallel()
	api, sim, tenant := newAPI(t, app.Options{})
	api.opts.Caller = func(r *http.Request) app.Caller { return app.Caller{ID: r.Header.Get("X-Test-Caller")} }
	api.rate = newCallerRate(6) // a burst of 6, then one every 10 s
	h := api.Handler()
	body := listed(tenant, 1, `,"dry_run":true`)
	for i := range 6 {
		status, _, out := call(h, "POST", "/api/remediate", body, "X-Test-Caller", "a")
		require.Equal(t, 200, status, "request %d: %s", i, out)
	}
	reads := sim.Counters().Requests
	status, hdr, out := call(h, "POST", "/api/remediate", body, "X-Test-Caller", "a")
	assert.Equal(t, 429, status, "%s", out)
	assert.Contains(t, string(out), "too_many_requests")
	assert.Equal(t, "10", hdr.Get("Retry-After"))
	assert.Equal(t, reads, sim.Counters().Requests, "nothing read for a refused request")
	status, _, _ = call(h, "GET", "/api/runs/0123456789abcdef01234567", "", "X-Test-Caller", "a")
	assert.Equal(t, 429, status, "every route counts")
	status, _, _ = call(h, "POST", "/api/remediate", body, "X-Test-Caller", "b")
	assert.Equal(t, 200, status, "another caller has its own allowance")

	// The bucket refills at the rate and never grows past its burst.
	r := newCallerRate(60)
	now := time.Now()
	for range 10 {
		ok, _ := r.allow("c", now)
		require.True(t, ok)
	}
	ok, wait := r.allow("c", now)
	assert.False(t, ok)
	assert.Equal(t, time.Second, wait)
	ok, _ = r.allow("c", now.Add(time.Second))
	assert.True(t, ok)
	ok, _ = r.allow("c", now.Add(time.Hour))
	assert.True(t, ok)
	for range 9 {
		ok, _ = r.allow("c", now.Add(time.Hour))
		require.True(t, ok)
	}
	ok, _ = r.allow("c", now.Add(time.Hour))
	assert.False(t, ok, "an hour idle refills ten, not 3,600")
	assert.Nil(t, newCallerRate(0), "0 is off")
}
