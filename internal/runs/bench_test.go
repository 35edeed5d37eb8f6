package runs_test

import (
	"context"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
	"github.com/remediator/remediator/internal/testing/procbench"
	"github.com/remediator/remediator/internal/testing/simgraph"
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
		b.ReportMetric(procbench.PeakRSSMB(), "peak_rss_MB")
	}
}

// BenchmarkAsyncRun100kSeparateSimulator is the same kind of run with the
// simulator in its own process (`handler simulate`), so the peak memory is
// remediator's alone: target resolution of a 190,000-device tenant to its
// ~129,000 eligible Windows devices, the submission, and every worker
// invocation.
//
//	go test -run '^$' -bench AsyncRun100kSeparate -benchtime 1x ./internal/runs
func BenchmarkAsyncRun100kSeparateSimulator(b *testing.B) {
	const (
		// 100× Intune's limit: two processes at 3,000 requests/s saturate
		// two cores, and the simulator then counts descheduled requests
		// in bursts (429s that a real tenant at 10/s never sees).
		limit     = 2000
		ceiling   = float64(limit) / 2
		writePace = 0.95 * ceiling
	)
	base, script := procbench.StartSimulator(b, "--devices", "190000", "--write-limit", strconv.Itoa(limit), "--window", "2s")
	gc := simgraph.New(base, 0)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	store := runs.NewMemoryStore()
	q := &testQueue{}
	engine := remediate.New(gc, pace.New(writePace, 900), remediate.Config{Concurrency: 16, MaxDevices: 1_000_000}, log)
	svc := runs.New(store, q, engine, runs.Options{}, log)
	plan, err := remediate.Validate(remediate.Request{Mode: "async",
		Targets: []remediate.Selector{{ScriptPolicyID: script, Filter: "operatingSystem eq 'Windows'"}}}, remediate.Limits{MaxDevices: 1_000_000})
	if err != nil {
		b.Fatal(err)
	}
	procbench.ResetPeak()
	b.ResetTimer()
	for range b.N {
		started := time.Now()
		p, err := engine.Prepare(context.Background(), plan)
		if err != nil {
			b.Fatalf("rejected: %v", err)
		}
		devices := p.Pending()
		s := p.Queue()
		if err := svc.Submit(context.Background(), s, "", ""); err != nil {
			b.Fatal(err)
		}
		id := s.RunID
		s, p = nil, nil // what a submitting invocation drops once it has answered
		queued := time.Now()
		for {
			m, ok := q.pop()
			if !ok {
				break
			}
			ctx, cancel := context.WithTimeout(context.Background(), 270*time.Second)
			if err := svc.Work(ctx, m); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
		elapsed := time.Since(queued)
		st, err := svc.Status(context.Background(), id, "", 0, false)
		if err != nil || !st.Done || st.Summary.Counts.Succeeded != devices {
			b.Fatalf("done=%v counts=%+v err=%v", st.Done, st.Summary.Counts, err)
		}
		b.ReportMetric(float64(devices), "devices")
		b.ReportMetric(float64(devices)/elapsed.Seconds(), "devices/s")
		b.ReportMetric(float64(devices)/elapsed.Seconds()/ceiling, "ratio_to_write_limit")
		b.ReportMetric(queued.Sub(started).Seconds(), "submit_s")
		b.ReportMetric(float64(store.Ops())/float64(devices), "storage_ops_per_device")
		b.ReportMetric(float64(gc.Calls())/float64(devices), "graph_calls_per_device")
		b.ReportMetric(float64(st.Summary.Throttling.ThrottledResponses), "throttled")
		b.ReportMetric(procbench.PeakRSSMB(), "peak_rss_MB")
	}
}
