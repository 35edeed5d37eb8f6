package runs_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

// BenchmarkAsyncRun100k runs 100,000 devices asynchronously: submitted in
// one request, worked chunk by chunk by sequential worker invocations (one
// Functions instance, batchSize 1) against the simulator with Intune's
// write limit scaled up 300× (200 per 20 s → 6,000 per 2 s) and the engine
// paced at 95% of it. Storage is the in-memory store counting the requests
// Azure Tables would serve.
func BenchmarkAsyncRun100k(b *testing.B) {
	const (
		devices   = 100_000
		limit     = 6000
		window    = 2 * time.Second
		ceiling   = float64(limit) / 2
		writePace = 0.95 * ceiling
	)
	store := runs.NewMemoryStore()
	f := newFixture(b, store, 2*devices+10_000, intunesim.Options{WriteLimit: limit, TenantWriteLimit: limit, ReadLimit: 1_000_000,
		TenantReadLimit: 1_000_000, Window: window}, runs.Options{})
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	f.engine = remediate.New(f.client, pace.New(writePace, 100_000), remediate.Config{Concurrency: 16}, log)
	f.svc = runs.New(store, f.queue, f.engine, runs.Options{}, log)
	debug.FreeOSMemory()
	b.ResetTimer()
	for range b.N {
		started := time.Now()
		ops0, calls0 := store.Ops(), f.client.Calls()
		s, pending := f.submitN(b, devices)
		invocations := 0
		for {
			m, ok := f.queue.pop()
			if !ok {
				break
			}
			invocations++
			ctx, cancel := context.WithTimeout(context.Background(), 270*time.Second)
			if err := f.svc.Work(ctx, m); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
		elapsed := time.Since(started)
		devs, st := f.allPages(b, s.RunID, false)
		lost := 0
		for _, d := range devs {
			if d.Outcome != remediate.Succeeded || f.sim.TriggerCount(d.DeviceID, d.ScriptPolicyID) != 1 {
				lost++
			}
		}
		lost += len(pending) - len(devs)
		if !st.Done || lost > 0 {
			b.Fatalf("done=%v lost=%d", st.Done, lost)
		}
		rate := devices / elapsed.Seconds()
		b.ReportMetric(rate, "devices/s")
		b.ReportMetric(rate/ceiling, "ratio_to_write_limit")
		b.ReportMetric(float64(store.Ops()-ops0)/devices, "storage_ops_per_device")
		b.ReportMetric(float64(f.client.Calls()-calls0)/devices, "graph_calls_per_device")
		b.ReportMetric(float64(invocations), "worker_invocations")
		b.ReportMetric(float64(st.Summary.Throttling.ThrottledResponses), "throttled")
		b.ReportMetric(peakRSSMB(), "peak_rss_MB")
	}
}

// peakRSSMB is the process's peak resident memory (VmHWM) in MB,
// simulator included.
func peakRSSMB() float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}
