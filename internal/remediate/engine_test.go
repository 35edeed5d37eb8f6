package remediate

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/testing/simgraph"
)

type fixture struct {
	engine *Engine
	sim    *intunesim.Running
	tenant *intunesim.Tenant
	client *simgraph.Client
	script string
}

func newFixture(t testing.TB, devices int, simOpts intunesim.Options, writesPerSecond float64) *fixture {
	t.Helper()
	return newFixtureFor(t, intunesim.Generate(77, intunesim.GenerateOptions{Devices: devices}), simOpts, writesPerSecond)
}

// newFixtureFor is newFixture over a tenant of the test's own.
func newFixtureFor(t testing.TB, tenant *intunesim.Tenant, simOpts intunesim.Options, writesPerSecond float64) *fixture {
	t.Helper()
	sim, err := intunesim.Start(intunesim.New(tenant, simOpts), "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sim.Close() })
	gc := simgraph.New(sim.URL, time.Second)
	cfg := Config{Concurrency: 8, Retry: RetryPolicy{BackoffBase: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}, Headroom: 100 * time.Millisecond}
	eng := New(gc, pace.New(writesPerSecond, 100000), cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	return &fixture{engine: eng, sim: sim, tenant: tenant, client: gc, script: tenant.RemediationScript().ID}
}

// eligible returns n Windows devices that can run remediations and are not
// co-managed.
func (f *fixture) eligible(n int) []intunesim.Device {
	var out []intunesim.Device
	for _, d := range f.tenant.Windows(false) {
		if !d.CoManaged && d.JoinType != "azureADRegistered" && len(out) < n {
			out = append(out, d)
		}
	}
	return out
}

func (f *fixture) plan(devs []intunesim.Device, coll intune.Collection) Plan {
	p := Plan{ValidateDevices: true}
	for _, d := range devs {
		p.Items = append(p.Items, Item{Collection: coll, DeviceID: d.ID, ScriptPolicyID: f.script, Field: "managed_devices[x]"})
	}
	return p
}

// checkAccounting asserts the promise every summary keeps: each device of
// the plan exactly once, counts adding up, and the simulator's trigger
// count matching each outcome.
// Plans with targets resolve their devices during the run: only the
// uniqueness and the trigger counts are checked for them.
func checkAccounting(t *testing.T, f *fixture, p Plan, s *Summary) {
	t.Helper()
	if len(p.Targets) == 0 {
		require.Len(t, s.Devices, len(p.Items))
	}
	seen := map[string]bool{}
	for i, d := range s.Devices {
		if len(p.Targets) == 0 {
			assert.Equal(t, p.Items[i].DeviceID, d.DeviceID)
		}
		if d.DeviceID == "" {
			continue // a name that matched no device
		}
		assert.False(t, seen[d.DeviceID], "device %s twice", d.DeviceID)
		seen[d.DeviceID] = true
		n := f.sim.TriggerCount(d.DeviceID, d.ScriptPolicyID)
		switch {
		case d.Outcome == Succeeded:
			assert.GreaterOrEqual(t, n, 1, "succeeded device %s took effect", d.DeviceID)
			if d.Attempts == 1 {
				assert.Equal(t, 1, n, "one attempt, one trigger: %s", d.DeviceID)
			}
		case d.Reason == ReasonOutcomeUnknown:
		default:
			assert.Equal(t, 0, n, "device %s (%s/%s) was not triggered", d.DeviceID, d.Outcome, d.Reason)
		}
		assert.LessOrEqual(t, n, max(d.Attempts, 1), "never more triggers than attempts")
	}
	c := s.Counts
	assert.Equal(t, c.Total, c.Succeeded+c.Failed+c.Skipped+c.NotAttempted+c.Planned)
	assert.Equal(t, len(s.Devices), c.Total)
}

func TestAllSucceed(t *testing.T) {
	f := newFixture(t, 200, intunesim.Options{}, 1000)
	p := f.plan(f.eligible(5), intune.ManagedDevices)
	co := f.tenant.Windows(true)[0]
	p.Items = append(p.Items, Item{Collection: intune.CoManagedDevices, DeviceID: co.ID, ScriptPolicyID: f.script})
	s := f.engine.Complete(context.Background(), p)
	checkAccounting(t, f, p, s)
	assert.Equal(t, StatusSucceeded, s.Status)
	assert.Equal(t, "ok", answer(s))
	assert.Equal(t, 6, s.Counts.Succeeded)
	for _, d := range s.Devices {
		assert.Equal(t, 204, d.HTTPStatus)
		assert.Equal(t, 1, d.Attempts)
		assert.NotEmpty(t, d.RequestID)
		assert.NotEmpty(t, d.DeviceName)
	}
	assert.Equal(t, "comanagedDevices", s.Devices[5].Collection)
	assert.Equal(t, 1, f.sim.Counters().Batches, "6 lookups in one $batch")
	assert.EqualValues(t, 8, f.client.Calls(), "the script, one $batch, six triggers")
	require.Len(t, s.Scripts, 1)
	assert.Equal(t, f.tenant.RemediationScript().DisplayName, s.Scripts[0].DisplayName)
	assert.Equal(t, 6, s.ResolvedDeviceCount)
	assert.NotEmpty(t, s.RunID)
	assert.False(t, s.FinishedAt.Before(s.StartedAt))
}

func TestIneligibleDevices(t *testing.T) {
	f := newFixture(t, 300, intunesim.Options{}, 1000)
	ok := f.eligible(3)
	var registered intunesim.Device
	for _, d := range f.tenant.Windows(false) {
		if d.JoinType == "azureADRegistered" {
			registered = d
		}
	}
	mac := f.tenant.NonWindows()[0]
	missing := intunesim.Device{ID: "00000000-0000-4000-8000-000000000001"}
	build := func(ignore bool) Plan {
		p := f.plan(append(ok, mac, missing, registered), intune.ManagedDevices)
		p.Items = append(p.Items, Item{Collection: intune.CoManagedDevices, DeviceID: f.eligible(4)[3].ID, ScriptPolicyID: f.script, Field: "comanaged_devices[0]"})
		p.IgnorePartialFailures = ignore
		return p
	}
	want := map[string]string{mac.ID: ReasonNotWindows, missing.ID: ReasonNotFound, registered.ID: ReasonEntraRegistered, f.eligible(4)[3].ID: ReasonNotCoManaged}

	t.Run("rejected without ignore_partial_failures", func(t *testing.T) {
		f.sim.Reset()
		p := build(false)
		s := f.engine.Complete(context.Background(), p)
		checkAccounting(t, f, p, s)
		assert.Equal(t, StatusRejected, s.Status)
		assert.Equal(t, "rejected", answer(s))
		assert.Zero(t, f.sim.Counters().Triggers, "nothing triggered")
		require.NotNil(t, s.Error)
		assert.Len(t, s.Error.Details, 4)
		assert.Equal(t, "comanaged_devices[0].device_id", s.Error.Details[3].Field)
		for _, d := range s.Devices {
			if r, bad := want[d.DeviceID]; bad {
				assert.Equal(t, Skipped, d.Outcome)
				assert.Equal(t, r, d.Reason)
			} else {
				assert.Equal(t, NotAttempted, d.Outcome)
				assert.Equal(t, ReasonRunRejected, d.Reason)
			}
		}
	})
	t.Run("skipped with ignore_partial_failures", func(t *testing.T) {
		f.sim.Reset()
		p := build(true)
		s := f.engine.Complete(context.Background(), p)
		checkAccounting(t, f, p, s)
		assert.Equal(t, StatusSucceeded, s.Status, "skipped devices are not failures")
		assert.Equal(t, "ok", answer(s))
		assert.Equal(t, 3, s.Counts.Succeeded)
		assert.Equal(t, 4, s.Counts.Skipped)
		for _, d := range s.Devices {
			if r, bad := want[d.DeviceID]; bad {
				assert.Equal(t, r, d.Reason)
				assert.NotEmpty(t, d.Message)
			}
		}
	})
	t.Run("without validation the trigger's own error is reported", func(t *testing.T) {
		f.sim.Reset()
		p := f.plan([]intunesim.Device{ok[0], mac}, intune.ManagedDevices)
		p.ValidateDevices = false
		s := f.engine.Complete(context.Background(), p)
		checkAccounting(t, f, p, s)
		assert.Zero(t, f.sim.Counters().Reads, "no lookups")
		assert.Equal(t, Failed, s.Devices[1].Outcome)
		assert.Equal(t, 400, s.Devices[1].HTTPStatus)
		assert.Equal(t, "failures", answer(s))
		assert.Equal(t, StatusPartiallySucceeded, s.Status)
	})
}

func TestThrottling(t *testing.T) {
	for _, mode := range []intunesim.RetryAfterMode{intunesim.RetryAfterFractional, intunesim.RetryAfterNone} {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t, 200, intunesim.Options{WriteLimit: 4, Window: 200 * time.Millisecond, RetryAfter: mode}, 1000)
			p := f.plan(f.eligible(12), intune.ManagedDevices)
			s := f.engine.Complete(context.Background(), p)
			checkAccounting(t, f, p, s)
			assert.Equal(t, StatusSucceeded, s.Status)
			assert.Greater(t, s.Throttling.ThrottledResponses, 0)
			assert.Greater(t, s.Throttling.WaitedMS, int64(0))
			retried := 0
			for _, d := range s.Devices {
				assert.Equal(t, 1, f.sim.TriggerCount(d.DeviceID, f.script), "429s never cause a second trigger")
				if d.Attempts > 1 {
					retried++
				}
			}
			assert.Greater(t, retried, 0)
		})
	}
}

func TestFaultHandling(t *testing.T) {
	tests := []struct {
		name     string
		faults   []intunesim.Fault
		outcome  Outcome
		reason   string
		status   int
		attempts int
	}{
		{"503 retried then succeeds", []intunesim.Fault{{Kind: intunesim.Fault503, Times: 1}}, Succeeded, "", 204, 2},
		{"504 twice then succeeds", []intunesim.Fault{{Kind: intunesim.Fault504, Times: 2}}, Succeeded, "", 204, 3},
		{"503 three times gives up", []intunesim.Fault{{Kind: intunesim.Fault503, Times: 3}}, Failed, ReasonOutcomeUnknown, 503, 3},
		{"500 is not retried", []intunesim.Fault{{Kind: intunesim.Fault500}}, Failed, "", 500, 1},
		{"{} body", []intunesim.Fault{{Kind: intunesim.FaultEmptyJSON}}, Failed, "", 500, 1},
		{"text/plain body", []intunesim.Fault{{Kind: intunesim.FaultTextPlain}}, Failed, "", 502, 1},
		{"HTML body", []intunesim.Fault{{Kind: intunesim.FaultHTML}}, Failed, "", 502, 1},
		{"401 is not retried", []intunesim.Fault{{Kind: intunesim.FaultExpiredToken}}, Failed, "", 401, 1},
		{"403 carries the permission hint", []intunesim.Fault{{Kind: intunesim.Fault500, Status: 403}}, Failed, "", 403, 1},
		{"dropped before: retried", []intunesim.Fault{{Kind: intunesim.FaultDropBefore, Times: 1}}, Succeeded, "", 204, 2},
		{"dropped after: retried, counted as a possible duplicate", []intunesim.Fault{{Kind: intunesim.FaultDropAfter, Times: 1}}, Succeeded, "", 204, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 100, intunesim.Options{}, 1000)
			devs := f.eligible(3)
			for _, fl := range tc.faults {
				fl.Method = "POST"
				f.sim.InjectFault(devs[1].ID, fl)
			}
			p := f.plan(devs, intune.ManagedDevices)
			p.IgnorePartialFailures = true
			s := f.engine.Complete(context.Background(), p)
			checkAccounting(t, f, p, s)
			d := s.Devices[1]
			assert.Equal(t, tc.outcome, d.Outcome)
			assert.Equal(t, tc.reason, d.Reason)
			assert.Equal(t, tc.status, d.HTTPStatus)
			assert.Equal(t, tc.attempts, d.Attempts)
			if d.HTTPStatus == 403 {
				assert.Contains(t, d.Message, "DeviceManagementManagedDevices.PrivilegedOperations.All")
			}
			if d.Outcome == Failed {
				assert.NotEmpty(t, d.Message)
				assert.Equal(t, StatusPartiallySucceeded, s.Status)
				assert.Equal(t, "ok", answer(s), "ignore_partial_failures")
			}
			posts := 0
			for _, r := range f.sim.Records() {
				if r.Method == "POST" && strings.Contains(r.Path, devs[1].ID) {
					posts++
				}
			}
			assert.Equal(t, tc.attempts, posts, "the summary's attempts are the requests sent")
			for _, other := range []DeviceResult{s.Devices[0], s.Devices[2]} {
				assert.Equal(t, Succeeded, other.Outcome, "one device's failure does not touch the others")
			}
		})
	}
}

func TestDeadlineMidRun(t *testing.T) {
	f := newFixture(t, 400, intunesim.Options{}, 40)
	p := f.plan(f.eligible(100), intune.ManagedDevices)
	p.Invoke = time.Second
	started := time.Now()
	s := f.engine.Complete(context.Background(), p)
	elapsed := time.Since(started)
	checkAccounting(t, f, p, s)
	assert.Less(t, elapsed, time.Second, "the answer leaves before timeouts.invoke")
	assert.Greater(t, s.Counts.Succeeded, 10)
	assert.Greater(t, s.Counts.NotAttempted, 30)
	for _, d := range s.Devices {
		if d.Outcome == NotAttempted {
			assert.Equal(t, ReasonDeadline, d.Reason)
			assert.Zero(t, f.sim.TriggerCount(d.DeviceID, f.script))
		}
	}
	assert.Equal(t, StatusPartiallySucceeded, s.Status)
	assert.Equal(t, "failures", answer(s))

	// The caller's own deadline counts too, and cancellation is reported as such.
	f.sim.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	s = f.engine.Complete(ctx, f.plan(f.eligible(100), intune.ManagedDevices))
	checkAccounting(t, f, f.plan(f.eligible(100), intune.ManagedDevices), s)
	assert.Greater(t, s.Counts.NotAttempted, 50)
	reasons := map[string]int{}
	for _, d := range s.Devices {
		reasons[d.Reason]++
	}
	assert.Greater(t, reasons[ReasonCanceled], 50)
}

func TestDryRunMakesNoWrites(t *testing.T) {
	f := newFixture(t, 300, intunesim.Options{}, 8)
	p := f.plan(append(f.eligible(16), f.tenant.NonWindows()[0]), intune.ManagedDevices)
	p.DryRun = true
	s := f.engine.Complete(context.Background(), p)
	checkAccounting(t, f, p, s)
	assert.Equal(t, StatusPlanned, s.Status)
	assert.True(t, s.DryRun)
	assert.Equal(t, 16, s.Counts.Planned)
	assert.Equal(t, 1, s.Counts.Skipped)
	assert.Zero(t, f.sim.Counters().Writes, "zero POSTs")
	assert.Equal(t, int64(2000), s.EstimatedDurationMS, "16 devices at 8/s")
	assert.NotEmpty(t, s.Warnings, "a real run would be rejected")
}

func TestEveryDeviceExactlyOnceUnderFaults(t *testing.T) {
	f := newFixture(t, 800, intunesim.Options{
		FaultRate: 0.25, FaultSeed: 3, Window: time.Second, RetryAfter: intunesim.RetryAfterFractional, WriteLimit: 5000, ReadLimit: 5000,
		FaultKinds: []intunesim.FaultKind{intunesim.Fault500, intunesim.Fault503, intunesim.Fault504, intunesim.FaultEmptyJSON,
			intunesim.FaultTextPlain, intunesim.FaultThrottle, intunesim.FaultDropBefore},
	}, 2000)
	p := f.plan(f.eligible(300), intune.ManagedDevices)
	p.IgnorePartialFailures = true
	s := f.engine.Complete(context.Background(), p)
	checkAccounting(t, f, p, s)
	assert.Greater(t, s.Counts.Succeeded, 150)
	assert.Greater(t, s.Counts.Failed, 5)
	for _, d := range s.Devices {
		assert.Contains(t, []Outcome{Succeeded, Failed, Skipped}, d.Outcome)
	}
}

func TestLargeRequestsReadTheDeviceListInsteadOfBatching(t *testing.T) {
	f := newFixture(t, 1500, intunesim.Options{WriteLimit: 5000}, 5000)
	p := f.plan(f.eligible(700), intune.ManagedDevices)
	p.Items = append(p.Items, Item{Collection: intune.ManagedDevices, DeviceID: "00000000-0000-4000-8000-000000000009", ScriptPolicyID: f.script})
	p.IgnorePartialFailures = true
	s := f.engine.Complete(context.Background(), p)
	checkAccounting(t, f, p, s)
	assert.Equal(t, 700, s.Counts.Succeeded)
	assert.Equal(t, ReasonNotFound, s.Devices[700].Reason)
	c := f.sim.Counters()
	assert.Equal(t, 0, c.Batches, "a probe and 2 list pages instead of 36 batches")
	assert.Equal(t, 4, c.Reads, "the script, the probe, 2 pages")
}

// answer is what a summary tells its caller: ok, failures (devices failed
// or were not attempted and partial failures are not ignored), or
// rejected.
func answer(s *Summary) string {
	switch {
	case s.Status == StatusRejected:
		return "rejected"
	case s.Status != StatusPlanned && s.Counts.Failed+s.Counts.NotAttempted > 0 && !s.IgnorePartialFailures:
		return "failures"
	}
	return "ok"
}
