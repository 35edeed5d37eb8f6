package runs_test

import (
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

// BenchmarkRollout rolls a script out to 20,000 devices in three waves
// (1%, 10%, 100%) with the devices' reports compressed to 300 ms and the
// gate read every 100 ms: script=good fails on 1% of the devices and
// passes both gates; script=bad fails on 30% and is halted after the
// first wave. It reports the Graph reads the gates cost per device of the
// run, the time from the report that met a gate's condition to its
// decision, and the devices triggered after a gate halted (must be 0).
func BenchmarkRollout(b *testing.B) {
	for _, tc := range []struct {
		name    string
		failure float64
	}{{"good", 0.01}, {"bad", 0.3}} {
		b.Run("script="+tc.name, func(b *testing.B) {
			const devices, delay = 20_000, 300 * time.Millisecond
			script := intunesim.Generate(7, intunesim.GenerateOptions{Devices: 2 * devices}).RemediationScript().ID
			store := runs.NewMemoryStore()
			f := newFixture(b, store, 2*devices, intunesim.Options{RunStateDelay: delay,
				ScriptFailure: map[string]float64{strings.ToLower(script): tc.failure}}, runs.Options{})
			log := slog.New(slog.NewJSONHandler(io.Discard, nil))
			f.engine = remediate.New(f.client, pace.New(100_000, 100_000), remediate.Config{Concurrency: 16}, log)
			f.svc = runs.New(store, f.queue, f.engine, runs.Options{}, log)
			gate := remediate.Gate{MinReported: 0.8, MinSuccess: 0.95, Wait: time.Minute, Poll: 100 * time.Millisecond}
			for range b.N {
				plan := remediate.Plan{Mode: remediate.ModeAsync, Rollout: &remediate.RolloutPlan{
					Waves: []remediate.Wave{{Percent: 1}, {Percent: 10}, {Percent: 100}}, Gate: gate}}
				for _, d := range f.eligibleDevices()[:devices] {
					plan.Items = append(plan.Items, remediate.Item{Collection: intune.ManagedDevices, DeviceID: d.ID, ScriptPolicyID: f.script})
				}
				f.sim.Reset()
				s, _ := f.submitPlan(b, plan)
				f.drain(b, 270*time.Second)
				devs, st := f.allPages(b, s.RunID, false)
				ro := st.Summary.Rollout

				// Graph reads of the gates: the run-state pages.
				reads, after := 0, 0
				var halted time.Time
				for _, w := range ro.Waves {
					if w.Decision == remediate.GateHalt {
						halted = w.DecidedAt
					}
				}
				for _, r := range f.sim.Records() {
					switch {
					case r.Method == "GET" && strings.Contains(r.Path, "/deviceRunStates"):
						reads++
					case r.Method == "POST" && strings.HasSuffix(r.Path, "/initiateOnDemandProactiveRemediation") && !halted.IsZero() && r.Time.After(halted):
						after++
					}
				}
				// Decision latency: from the report that met the gate's
				// condition (reports come delay after their triggers) to
				// the decision, over the gates decided.
				var latency []float64
				from := 0
				for _, w := range ro.Waves {
					if w.Decision == "" {
						break
					}
					var reports []time.Time
					for _, d := range devs[from:w.Devices] { // every device was eligible: the run's rows are in wave order from 0
						if d.Outcome == remediate.Succeeded {
							reports = append(reports, d.TriggeredAt.Add(delay))
						}
					}
					slices.SortFunc(reports, func(a, b time.Time) int { return a.Compare(b) })
					if k := int(math.Ceil(gate.MinReported*float64(len(reports)))) - 1; k >= 0 && k < len(reports) {
						if w.Decision == remediate.GateHalt {
							k = 0 // a halt can come with the first failures
						}
						latency = append(latency, w.DecidedAt.Sub(reports[k]).Seconds())
					}
					from = w.Devices
				}
				b.ReportMetric(float64(reads)/float64(devices), "gate_reads_per_device")
				b.ReportMetric(slices.Max(append(latency, 0)), "decision_latency_s")
				b.ReportMetric(float64(after), "triggered_after_halt")
				b.ReportMetric(float64(st.Summary.Counts.Succeeded), "devices_triggered")
				if after > 0 {
					b.Errorf("%d devices triggered after the gate halted", after)
				}
			}
		})
	}
}
