package remediate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/remediator/remediator/internal/fault"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/testing/procbench"
	"github.com/remediator/remediator/internal/testing/simgraph"
)

// targetPlan builds a plan from a request body with targets.
func targetPlan(t *testing.T, body string) Plan {
	t.Helper()
	req, err := Decode(strings.NewReader(body))
	require.NoError(t, err)
	p, err := Validate(req, Limits{})
	require.NoError(t, err)
	return p
}

func sel(script string, fields string) string {
	return `{"targets":[{"script_policy_id":"` + script + `",` + fields + `}]}`
}

// eligibleIDs is the tenant's Windows devices remediations can run on.
func (f *fixture) eligibleIDs(pred func(intunesim.Device) bool) []string {
	var ids []string
	for _, d := range f.tenant.Devices {
		if d.OperatingSystem == "Windows" && d.JoinType != "azureADRegistered" && (pred == nil || pred(d)) {
			ids = append(ids, d.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

func summaryIDs(s *Summary, outcome Outcome) []string {
	var ids []string
	for _, d := range s.Devices {
		if d.Outcome == outcome {
			ids = append(ids, d.DeviceID)
		}
	}
	slices.Sort(ids)
	return ids
}

func TestFilterSelector(t *testing.T) {
	f := newFixture(t, 400, intunesim.Options{}, 5000)
	want := f.eligibleIDs(nil)
	for name, filter := range map[string]string{
		"honoured filter":               "operatingSystem eq 'Windows'",
		"filter Intune ignores":         "userId eq 'nobody'",
		"ne that Intune reads as eq":    "operatingSystem ne 'Windows'",
		"unsupported clause inside and": "operatingSystem eq 'Windows' and skuFamily eq 'Enterprise'",
	} {
		t.Run(name, func(t *testing.T) {
			f.sim.Reset()
			p := targetPlan(t, sel(f.script, `"filter":"`+filter+`"`))
			p.DryRun = true
			s := f.engine.Complete(context.Background(), p)
			checkAccounting(t, f, p, s)
			assert.Equal(t, want, summaryIDs(s, Planned), "only eligible Windows devices, whatever Intune did with the filter")
			assert.Equal(t, len(want), s.ResolvedDeviceCount)
			for _, d := range s.Devices {
				assert.NotEmpty(t, d.DeviceName)
			}
			if filter == "userId eq 'nobody'" {
				assert.True(t, slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, "left out") }), "%v", s.Warnings)
			}
			assert.Zero(t, f.sim.Counters().Writes)
		})
	}
	t.Run("filter Intune refuses", func(t *testing.T) {
		p := targetPlan(t, sel(f.script, `"filter":"operatingSystem in ('Windows')"`))
		s := f.engine.Complete(context.Background(), p)
		assert.Equal(t, StatusRejected, s.Status)
		assert.Equal(t, "targets[0].filter", s.Error.Details[0].Field)
		assert.Zero(t, f.sim.Counters().Triggers)
	})
}

func TestNameSelector(t *testing.T) {
	f := newFixture(t, 400, intunesim.Options{}, 5000)
	byName := map[string][]intunesim.Device{}
	for _, d := range f.tenant.Devices {
		if d.OperatingSystem == "Windows" && d.JoinType != "azureADRegistered" {
			byName[d.DeviceName] = append(byName[d.DeviceName], d)
		}
	}
	var unique, dup string
	for n, ds := range byName {
		if len(ds) == 1 && unique == "" {
			unique = n
		}
		if len(ds) == 2 && dup == "" {
			dup = n
		}
	}
	require.NotEmpty(t, dup, "the generated tenant has duplicate names")

	p := targetPlan(t, sel(f.script, fmt.Sprintf(`"device_names":[%q,%q]`, strings.ToLower(unique), "NO-SUCH-PC")))
	s := f.engine.Complete(context.Background(), p)
	require.Len(t, s.Devices, 2, "the resolved device and the name that matched nothing")
	assert.Equal(t, byName[unique][0].ID, s.Devices[0].DeviceID, "names match case-insensitively")
	assert.Equal(t, Succeeded, s.Devices[0].Outcome)
	assert.Equal(t, Skipped, s.Devices[1].Outcome)
	assert.Equal(t, ReasonNotFound, s.Devices[1].Reason)
	assert.Equal(t, "NO-SUCH-PC", s.Devices[1].DeviceName)
	assert.Equal(t, 2, s.Counts.Total)

	s = f.engine.Complete(context.Background(), targetPlan(t, sel(f.script, fmt.Sprintf(`"device_names":[%q]`, dup))))
	assert.Equal(t, StatusRejected, s.Status, "duplicates are an error by default")
	assert.Contains(t, s.Error.Details[0].Message, byName[dup][0].ID)
	assert.Contains(t, s.Error.Details[0].Message, byName[dup][1].ID)
	assert.Contains(t, s.Error.Details[0].Message, "last sync")

	f.sim.Reset()
	p = targetPlan(t, sel(f.script, fmt.Sprintf(`"device_names":[%q],"on_duplicate_name":"most_recent"`, dup)))
	p.DryRun = true
	s = f.engine.Complete(context.Background(), p)
	newest := slices.MaxFunc(byName[dup], func(a, b intunesim.Device) int { return a.LastSyncDateTime.Compare(b.LastSyncDateTime) })
	assert.Equal(t, []string{newest.ID}, summaryIDs(s, Planned))

	p = targetPlan(t, sel(f.script, fmt.Sprintf(`"device_names":[%q],"on_duplicate_name":"all"`, dup)))
	p.DryRun = true
	s = f.engine.Complete(context.Background(), p)
	assert.Len(t, summaryIDs(s, Planned), 2)

	// Many names: one read of the Windows devices instead of a query each.
	var names []string
	for n := range byName {
		if len(names) < 30 && len(byName[n]) == 1 {
			names = append(names, fmt.Sprintf("%q", n))
		}
	}
	f.sim.Reset()
	p = targetPlan(t, sel(f.script, `"device_names":[`+strings.Join(names, ",")+`]`))
	p.DryRun = true
	s = f.engine.Complete(context.Background(), p)
	assert.Equal(t, 30, s.Counts.Planned)
	assert.Equal(t, 2, f.sim.Counters().Reads, "the script and one page of Windows devices")
}

func TestGroupSelectorAndExclusions(t *testing.T) {
	f := newFixture(t, 400, intunesim.Options{}, 5000)
	g := f.tenant.Groups[0]
	inGroup := map[string]bool{}
	for _, m := range g.Members {
		inGroup[strings.ToLower(m)] = true
	}
	want := f.eligibleIDs(func(d intunesim.Device) bool { return inGroup[strings.ToLower(d.AzureADDeviceID)] })
	exclude := want[0]
	p := targetPlan(t, sel(f.script, fmt.Sprintf(`"group_ids":[%q],"exclude_device_ids":[%q]`, g.ID, exclude)))
	s := f.engine.Complete(context.Background(), p)
	checkAccounting(t, f, p, s)
	assert.Equal(t, want[1:], summaryIDs(s, Succeeded))
	assert.Zero(t, f.sim.TriggerCount(exclude, f.script))
	assert.True(t, slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, "group members are not") }))

	s = f.engine.Complete(context.Background(), targetPlan(t, sel(f.script, `"group_ids":["00000000-0000-4000-8000-00000000000a"]`)))
	assert.Equal(t, StatusRejected, s.Status)
	assert.Equal(t, "targets[0].group_ids[0]", s.Error.Details[0].Field)
}

func TestStaleDevicesAreSkipped(t *testing.T) {
	f := newFixture(t, 400, intunesim.Options{}, 5000)
	// The generator's sync times are relative to 2026-11-01.
	within := time.Since(time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC))
	p := targetPlan(t, sel(f.script, fmt.Sprintf(`"filter":"operatingSystem eq 'Windows'","last_sync_within":%q`, within.Round(time.Hour).String())))
	p.DryRun = true
	s := f.engine.Complete(context.Background(), p)
	checkAccounting(t, f, p, s)
	cut := time.Now().Add(-within.Round(time.Hour))
	stale := f.eligibleIDs(func(d intunesim.Device) bool { return d.LastSyncDateTime.Before(cut) })
	require.NotEmpty(t, stale)
	var skipped []string
	for _, d := range s.Devices {
		if d.Reason == ReasonStale {
			skipped = append(skipped, d.DeviceID)
			assert.Equal(t, Skipped, d.Outcome)
		}
	}
	slices.Sort(skipped)
	assert.Equal(t, stale, skipped)
	assert.Equal(t, len(f.eligibleIDs(nil))-len(stale), s.ResolvedDeviceCount)
}

func TestScriptChecks(t *testing.T) {
	f := newFixture(t, 200, intunesim.Options{}, 5000)
	installer := f.tenant.Scripts[len(f.tenant.Scripts)-1]
	devs := f.eligible(2)
	run := func(script string, cfg func(*Config)) *Summary {
		f.sim.Reset()
		e := *f.engine
		cfgCopy := e.cfg
		cfg(&cfgCopy)
		e.cfg = cfgCopy
		p := f.plan(devs, intune.ManagedDevices)
		for i := range p.Items {
			p.Items[i].ScriptPolicyID = script
		}
		return e.Complete(context.Background(), p)
	}
	none := func(*Config) {}

	s := run("11111111-2222-4333-8444-555555555555", none)
	assert.Equal(t, "rejected", answer(s))
	assert.Equal(t, fault.ScriptInvalid, s.Error.Code)
	assert.Contains(t, s.Error.Details[0].Message, "no remediation script")

	s = run(installer.ID, none)
	assert.Equal(t, "rejected", answer(s))
	assert.Contains(t, s.Error.Details[0].Message, "managedInstallerScript")

	s = run(f.script, func(c *Config) { c.AllowedScripts = map[string]bool{"00000000-0000-4000-8000-000000000001": true} })
	assert.Equal(t, "rejected", answer(s))
	assert.Equal(t, fault.ScriptNotAllowed, s.Error.Code)
	assert.Zero(t, f.sim.Counters().Requests, "refused before any Graph call")

	sc := f.tenant.RemediationScript()
	s = run(f.script, func(c *Config) {
		c.AllowedScripts = map[string]bool{strings.ToLower(sc.ID): true}
		c.ScriptPins = map[string]time.Time{strings.ToLower(sc.ID): sc.LastModifiedDateTime.Add(-time.Hour)}
	})
	assert.Equal(t, "rejected", answer(s))
	assert.Equal(t, fault.ScriptChanged, s.Error.Code)
	assert.Zero(t, f.sim.Counters().Triggers)

	s = run(f.script, func(c *Config) {
		c.ScriptPins = map[string]time.Time{strings.ToLower(sc.ID): sc.LastModifiedDateTime}
	})
	assert.Equal(t, "ok", answer(s))
	require.Len(t, s.Scripts, 1)
	assert.Equal(t, sc.DisplayName, s.Scripts[0].DisplayName)
	assert.Equal(t, sc.Version, s.Scripts[0].Version)
	for _, d := range s.Devices {
		assert.Equal(t, Succeeded, d.Outcome, "for its own run %s", s.Status)
		assert.Equal(t, 1, f.sim.TriggerCount(d.DeviceID, sc.ID))
	}
}

func TestFleetPercentNeedsConfirmation(t *testing.T) {
	f := newFixture(t, 300, intunesim.Options{WriteLimit: 100000}, 5000)
	f.engine.cfg.MaxFleetPercent = 20
	body := sel(f.script, `"filter":"operatingSystem eq 'Windows'"`)

	dry := targetPlan(t, body)
	dry.DryRun = true
	s := f.engine.Complete(context.Background(), dry)
	n := s.ResolvedDeviceCount
	assert.Equal(t, len(f.eligibleIDs(nil)), n)
	assert.True(t, slices.ContainsFunc(s.Warnings, func(w string) bool {
		return strings.Contains(w, fmt.Sprintf(`"confirm_device_count": %d`, n))
	}), "the dry run says what to confirm: %v", s.Warnings)

	s = f.engine.Complete(context.Background(), targetPlan(t, body))
	assert.Equal(t, "rejected", answer(s))
	assert.Equal(t, fault.ConfirmationRequired, s.Error.Code)
	assert.Zero(t, f.sim.Counters().Triggers)

	wrong := targetPlan(t, body[:len(body)-1]+fmt.Sprintf(`,"confirm_device_count":%d}`, n-1))
	assert.Equal(t, "rejected", answer(f.engine.Complete(context.Background(), wrong)), "the count must be exact")

	ok := targetPlan(t, body[:len(body)-1]+fmt.Sprintf(`,"confirm_device_count":%d}`, n))
	s = f.engine.Complete(context.Background(), ok)
	assert.Equal(t, "ok", answer(s))
	assert.Equal(t, n, s.Counts.Succeeded)
}

func TestCooldown(t *testing.T) {
	f := newFixture(t, 200, intunesim.Options{}, 5000)
	f.engine.cfg.Cooldown, f.engine.cfg.CooldownPeriod = NewMemoryCooldown(time.Hour), 10*time.Minute
	p := f.plan(f.eligible(4), intune.ManagedDevices)
	s := f.engine.Complete(context.Background(), p)
	assert.Equal(t, 4, s.Counts.Succeeded)
	p2 := f.plan(f.eligible(6), intune.ManagedDevices)
	s = f.engine.Complete(context.Background(), p2)
	require.Len(t, s.Devices, 6)
	assert.Equal(t, 2, s.Counts.Succeeded)
	assert.Equal(t, 4, s.Counts.Skipped)
	for _, d := range s.Devices[:4] {
		assert.Equal(t, ReasonCooldown, d.Reason)
		assert.Equal(t, 1, f.sim.TriggerCount(d.DeviceID, f.script), "not triggered again")
	}
	assert.Equal(t, StatusSucceeded, s.Status, "a cooldown skip is not a failure")
}

// BenchmarkResolveFilter100k resolves a filter that Intune ignores over a
// 100,000-device tenant in a dry run (every device comes back and is
// re-checked) and reports pages fetched, time, and the process's peak
// memory during the run, simulator included, next to the simulator's own
// resident memory before it.
//
//	go test -run '^$' -bench ResolveFilter100k -benchtime 1x ./internal/remediate
func BenchmarkResolveFilter100k(b *testing.B) {
	f := newFixture(b, 100000, intunesim.Options{ReadLimit: 1 << 30}, 5000)
	p := Plan{DryRun: true, ValidateDevices: true, Targets: []Selection{{Selector: Selector{ScriptPolicyID: f.script, Filter: "userId eq 'ignored'"}, Field: "targets[0]"}}}
	var resolved int
	var elapsed time.Duration
	procbench.ResetPeak()
	baseline := procbench.RSSMB()
	b.ResetTimer()
	for range b.N {
		f.sim.Reset()
		started := time.Now()
		s := f.engine.Complete(context.Background(), p)
		elapsed = time.Since(started)
		resolved = s.ResolvedDeviceCount
	}
	b.StopTimer()
	pages := 0
	for _, r := range f.sim.Records() {
		if r.Path == "/beta/deviceManagement/managedDevices" {
			pages++
		}
	}
	b.ReportMetric(float64(resolved), "devices_resolved")
	b.ReportMetric(float64(pages), "pages")
	b.ReportMetric(elapsed.Seconds(), "seconds")
	b.ReportMetric(procbench.PeakRSSMB(), "peak_rss_MB")
	b.ReportMetric(baseline, "simulator_rss_MB")
}

// BenchmarkResolveFilter100kSeparateSimulator is the same resolution with
// the simulator in its own process (`handler simulate`), so the peak
// memory reported is remediator's alone.
//
//	go test -run '^$' -bench ResolveFilter100kSeparate -benchtime 1x ./internal/remediate
func BenchmarkResolveFilter100kSeparateSimulator(b *testing.B) {
	base, script := procbench.StartSimulator(b, "--devices", "100000", "--write-limit", "1000000")
	gc := simgraph.New(base, 0)
	eng := New(gc, pace.New(5000, 1e6), Config{}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	p := Plan{DryRun: true, ValidateDevices: true, Targets: []Selection{{Selector: Selector{ScriptPolicyID: script, Filter: "userId eq 'ignored'"}, Field: "targets[0]"}}}
	procbench.ResetPeak()
	b.ResetTimer()
	started := time.Now()
	s := eng.Complete(context.Background(), p)
	elapsed := time.Since(started)
	b.StopTimer()
	if s.ResolvedDeviceCount == 0 {
		b.Fatalf("nothing resolved: %+v", s.Error)
	}
	b.ReportMetric(float64(s.ResolvedDeviceCount), "devices_resolved")
	b.ReportMetric(float64(gc.Calls()), "graph_calls")
	b.ReportMetric(elapsed.Seconds(), "seconds")
	b.ReportMetric(procbench.PeakRSSMB(), "peak_rss_MB")
}
