package remediate

import (
	"context"
	"testing"
	"time"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/testing/procbench"
)

// BenchmarkRemediate2000 runs 2,000 devices against the simulator with
// Intune's write limit compressed tenfold (200 writes per 2 s, so the
// ceiling is 100 triggers/s) and 20 ms of latency per request, at a write
// pace of 98% of the ceiling. It reports the achieved rate against the
// ceiling, Graph calls per device and lost devices, then times the
// sequential GET-then-POST loop the Terraform action uses on 200 of the
// devices and reports the speedup.
//
//	go test -run '^$' -bench Remediate2000 -benchtime 1x ./internal/remediate
func BenchmarkRemediate2000(b *testing.B) {
	const (
		devices   = 2000
		window    = 2 * time.Second
		limit     = 200
		ceiling   = float64(limit) / 2 // per second
		latency   = 20 * time.Millisecond
		writePace = 0.98 * ceiling
	)
	f := newFixture(b, 3700, intunesim.Options{WriteLimit: limit, ReadLimit: 2000, Window: window, Latency: latency}, writePace)
	devs := f.eligible(devices)
	if len(devs) < devices {
		b.Fatalf("tenant has %d eligible devices", len(devs))
	}
	p := f.plan(devs, intune.ManagedDevices)
	var rate, callsPerDevice float64
	lost, throttled := 0, 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		f.sim.Reset()
		calls0 := f.client.Calls()
		b.StartTimer()
		started := time.Now()
		s := f.engine.Complete(context.Background(), p)
		elapsed := time.Since(started)
		rate = float64(devices) / elapsed.Seconds()
		callsPerDevice = float64(f.client.Calls()-calls0) / devices
		throttled += s.Throttling.ThrottledResponses
		for _, d := range s.Devices {
			if d.Outcome != Succeeded || f.sim.TriggerCount(d.DeviceID, f.script) != 1 {
				lost++
			}
		}
		if len(s.Devices) != devices {
			lost += devices - len(s.Devices)
		}
	}
	b.StopTimer()

	// The Terraform action's way: for each device, GET it, then POST.
	f.sim.Reset()
	started := time.Now()
	for _, d := range devs[:200] {
		if _, err := f.client.Devices(context.Background(), []string{d.ID}); err != nil {
			b.Fatal(err)
		}
		if _, err := f.client.Trigger(context.Background(), intune.ManagedDevices, d.ID, f.script); err != nil {
			b.Fatal(err)
		}
	}
	sequential := 200 / time.Since(started).Seconds()

	b.ReportMetric(rate, "devices/s")
	b.ReportMetric(rate/ceiling, "ratio_to_ceiling")
	b.ReportMetric(callsPerDevice, "graph_calls_per_device")
	b.ReportMetric(float64(lost), "lost_devices")
	b.ReportMetric(float64(throttled), "throttled")
	b.ReportMetric(sequential, "sequential_devices/s")
	b.ReportMetric(rate/sequential, "speedup_vs_sequential")
	b.ReportMetric(procbench.PeakRSSMB(), "peak_rss_MB")
}
