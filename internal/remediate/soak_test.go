package remediate

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/testing/procbench"
	"github.com/remediator/remediator/internal/testing/simgraph"
)

// BenchmarkSoak pushes 10,000 devices through 5% random faults — 429s
// without Retry-After, 503, 504, 500, connections dropped before and after
// the trigger took effect, answers slower than the call timeout — with a
// deadline that cuts the run. It fails if a device is missing or listed
// twice, if counts do not add up, if a device was triggered more often
// than its summary admits, or if memory grows past 300 MB. Run it with
// `make soak`.
func BenchmarkSoak(b *testing.B) {
	const devices = 10000
	tenant := intunesim.Generate(404, intunesim.GenerateOptions{Devices: 18000})
	sim, err := intunesim.Start(intunesim.New(tenant, intunesim.Options{
		WriteLimit: 1 << 30, ReadLimit: 1 << 30, Window: time.Second, RetryAfter: intunesim.RetryAfterNone,
		FaultRate: 0.05, FaultSeed: 11,
		FaultKinds: []intunesim.FaultKind{intunesim.FaultThrottle, intunesim.Fault503, intunesim.Fault504, intunesim.Fault500,
			intunesim.FaultDropBefore, intunesim.FaultDropAfter, intunesim.FaultLatency},
	}), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sim.Close() }()
	gc := simgraph.New(sim.URL, 500*time.Millisecond)
	eng := New(gc, pace.New(1500, 1e6), Config{Concurrency: 32, Retry: RetryPolicy{BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond},
		Headroom: 500 * time.Millisecond}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	var items []Item
	for _, d := range tenant.Devices {
		if d.OperatingSystem == "Windows" && d.JoinType != "azureADRegistered" && !d.CoManaged && len(items) < devices {
			items = append(items, Item{Collection: intune.ManagedDevices, DeviceID: d.ID, ScriptPolicyID: tenant.RemediationScript().ID})
		}
	}
	if len(items) < devices {
		b.Fatalf("only %d eligible devices", len(items))
	}
	p := Plan{Items: items, ValidateDevices: true, IgnorePartialFailures: true, Invoke: 6 * time.Second}
	procbench.ResetPeak()
	b.ResetTimer()
	s := eng.Complete(context.Background(), p)
	b.StopTimer()

	if len(s.Devices) != devices {
		b.Fatalf("%d devices in the summary, want %d", len(s.Devices), devices)
	}
	seen := map[string]bool{}
	duplicates := 0
	for i, d := range s.Devices {
		if d.DeviceID != items[i].DeviceID || seen[d.DeviceID] {
			b.Fatalf("device %d is %s", i, d.DeviceID)
		}
		seen[d.DeviceID] = true
		n := sim.TriggerCount(d.DeviceID, d.ScriptPolicyID)
		switch {
		case n > 1 && d.Attempts < n:
			b.Fatalf("%s triggered %d times in %d attempts", d.DeviceID, n, d.Attempts)
		case n > 1:
			duplicates++ // a retried 503/504/lost answer, admitted by attempts > 1
		case n == 1 && d.Outcome != Succeeded && d.Reason != ReasonOutcomeUnknown:
			b.Fatalf("%s took effect but is %s/%s", d.DeviceID, d.Outcome, d.Reason)
		case n == 0 && d.Outcome == Succeeded:
			b.Fatalf("%s succeeded without a trigger", d.DeviceID)
		}
	}
	c := s.Counts
	if c.Total != c.Succeeded+c.Failed+c.Skipped+c.NotAttempted+c.Planned {
		b.Fatalf("counts do not add up: %+v", c)
	}
	if c.NotAttempted == 0 {
		b.Fatal("the deadline did not cut the run")
	}
	if peak := procbench.PeakRSSMB(); peak > 300 {
		b.Fatalf("peak memory %.0f MB", peak)
	}
	b.ReportMetric(float64(c.Succeeded), "succeeded")
	b.ReportMetric(float64(c.Failed), "failed")
	b.ReportMetric(float64(c.NotAttempted), "not_attempted")
	b.ReportMetric(float64(duplicates), "possible_duplicates")
	b.ReportMetric(float64(s.Throttling.ThrottledResponses), "throttled")
	b.ReportMetric(procbench.PeakRSSMB(), "peak_rss_MB")
}

func TestGraphUnreachable(t *testing.T) {
	gc := simgraph.New("http://127.0.0.1:1/beta", time.Second)
	eng := New(gc, pace.New(1000, 1000), Config{Retry: RetryPolicy{BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond}}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	p := Plan{Items: []Item{{Collection: intune.ManagedDevices, DeviceID: dev1, ScriptPolicyID: script}, {Collection: intune.ManagedDevices, DeviceID: dev2, ScriptPolicyID: script}}}
	s := eng.Complete(context.Background(), p)
	if answer(s) != "failures" || s.Counts.Failed != 2 {
		t.Fatalf("answer %s, counts %+v", answer(s), s.Counts)
	}
	for _, d := range s.Devices {
		if d.Reason != ReasonOutcomeUnknown || d.Attempts != 3 || d.Message == "" {
			t.Errorf("%+v", d)
		}
	}
	// A script that cannot be read is not an invalid script: the run is
	// refused as graph_unavailable, to be sent again.
	p.ValidateDevices = true
	s = eng.Complete(context.Background(), p)
	if answer(s) != "rejected" || s.Error == nil || s.Error.Code != fault.GraphUnavailable || s.Devices[0].Reason != ReasonRunRejected {
		t.Fatalf("answer %s, %+v, %+v", answer(s), s.Error, s.Devices[0])
	}
}
