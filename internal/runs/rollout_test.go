package runs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intune"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

// rolloutFixture is a tenant whose remediation script fails on the given
// share of devices, reporting 30 ms after each trigger.
func rolloutFixture(t *testing.T, store runs.Store, failure float64) *fixture {
	t.Helper()
	script := intunesim.Generate(7, intunesim.GenerateOptions{Devices: 600}).RemediationScript().ID
	return newFixture(t, store, 600, intunesim.Options{RunStateDelay: 30 * time.Millisecond,
		ScriptFailure: map[string]float64{strings.ToLower(script): failure}}, runs.Options{ChunkSize: 20})
}

// submitRollout submits 200 devices in waves of 10%, 50% and 100% with a
// gate read every 20 ms for at most wait.
func (f *fixture) submitRollout(t *testing.T, wait time.Duration) *remediate.Summary {
	t.Helper()
	plan := remediate.Plan{Mode: remediate.ModeAsync, Rollout: &remediate.RolloutPlan{
		Waves: []remediate.Wave{{Percent: 10}, {Percent: 50}, {Percent: 100}},
		Gate:  remediate.Gate{MinReported: 0.8, MinSuccess: 0.95, Wait: wait, Poll: 20 * time.Millisecond}}}
	for _, d := range f.eligibleDevices()[:200] {
		plan.Items = append(plan.Items, remediate.Item{Collection: intune.ManagedDevices, DeviceID: d.ID, ScriptPolicyID: f.script})
	}
	s, _ := f.submitPlan(t, plan)
	return s
}

// TestRolloutGoodScriptPassesEveryGate: a script that never fails passes
// both gates, every device is triggered once, and the
// answer shows each wave's figures and decision.
func TestRolloutGoodScriptPassesEveryGate(t *testing.T) {
	stores(t, func(t *testing.T, newStore func() runs.Store) {
		f := rolloutFixture(t, newStore(), 0)
		s := f.submitRollout(t, 5*time.Second)
		f.drain(t, 10*time.Second)
		devs, st := f.allPages(t, s.RunID, false)
		require.True(t, st.Done)
		f.exactlyOnce(t, s, devs)
		assert.Equal(t, remediate.StatusSucceeded, st.Summary.Status)
		assert.Equal(t, 200, st.Summary.Counts.Succeeded)
		ro := st.Summary.Rollout
		require.NotNil(t, ro)
		require.Len(t, ro.Waves, 3)
		assert.Equal(t, []int{20, 100, 200}, []int{ro.Waves[0].Devices, ro.Waves[1].Devices, ro.Waves[2].Devices})
		for _, w := range ro.Waves[:2] {
			assert.Equal(t, remediate.GatePass, w.Decision, "wave %d: %s", w.Wave, w.Reason)
			assert.GreaterOrEqual(t, w.SuccessShare, 0.95)
			assert.False(t, w.DecidedAt.IsZero())
		}
		assert.Equal(t, 20, ro.Waves[0].Triggered, "the first wave's own devices")
		assert.Equal(t, 80, ro.Waves[1].Triggered)
		assert.Equal(t, 3, ro.Current)
		assert.Empty(t, ro.Halted)
	})
}

// TestRolloutBadScriptHaltsAfterTheFirstWave: a script that fails on half
// the devices halts at the first gate; nothing past the first wave is
// triggered; the halted run is a final answer whose untriggered devices
// are not_attempted, reason halted. Resuming triggers the next wave (and
// halts again at its gate); cancelling then ends the run.
func TestRolloutBadScriptHaltsAfterTheFirstWave(t *testing.T) {
	t.Parallel()
	// 20 devices in the first wave: it passes a 95% gate with at most one
	// failure, which half failing gives once in 50,000 runs.
	f := rolloutFixture(t, runs.NewMemoryStore(), 0.5)
	s := f.submitRollout(t, 5*time.Second)
	f.drain(t, 10*time.Second)
	devs, st := f.allPages(t, s.RunID, false)
	require.True(t, st.Done, "a halted run is a final answer")
	assert.Equal(t, remediate.StatusHalted, st.Summary.Status)
	f.exactlyOnce(t, s, devs)
	assert.Equal(t, 20, f.sim.Counters().Triggers, "triggered after a gate should have halted: 0")
	reasons := map[string]int{}
	for _, d := range devs {
		reasons[string(d.Outcome)+"/"+d.Reason]++
	}
	assert.Equal(t, map[string]int{"succeeded/": 20, "not_attempted/halted": 180}, reasons)
	ro := st.Summary.Rollout
	assert.Equal(t, remediate.GateHalt, ro.Waves[0].Decision)
	assert.Contains(t, ro.Halted, "wave 1:")

	st, err := f.svc.Resume(context.Background(), s.RunID, "someone-else")
	require.ErrorIs(t, err, runs.ErrNotFound)
	st, err = f.svc.Resume(context.Background(), s.RunID, "")
	require.NoError(t, err)
	assert.False(t, st.Done, "resumed: the second wave goes")
	assert.Equal(t, remediate.GateResumed, st.Summary.Rollout.Waves[0].Decision)
	f.drain(t, 10*time.Second)
	_, st = f.allPages(t, s.RunID, false)
	assert.Equal(t, remediate.StatusHalted, st.Summary.Status, "the second wave halts at its own gate")
	assert.Equal(t, 100, f.sim.Counters().Triggers)

	st, err = f.svc.Cancel(context.Background(), s.RunID, "")
	require.NoError(t, err)
	f.drain(t, 10*time.Second)
	devs, st = f.allPages(t, s.RunID, false)
	assert.Equal(t, remediate.StatusCancelled, st.Summary.Status)
	f.exactlyOnce(t, s, devs)
	assert.Equal(t, 100, st.Summary.Counts.NotAttempted)
}

// TestRolloutGateTimesOut: devices that never report hold the gate until
// its wait runs out, then halt the run.
func TestRolloutGateTimesOut(t *testing.T) {
	t.Parallel()
	script := intunesim.Generate(7, intunesim.GenerateOptions{Devices: 600}).RemediationScript().ID
	f := newFixture(t, runs.NewMemoryStore(), 600, intunesim.Options{RunStateDelay: 30 * time.Millisecond, Offline: 0.5,
		ScriptFailure: map[string]float64{strings.ToLower(script): 0}}, runs.Options{ChunkSize: 20})
	s := f.submitRollout(t, 300*time.Millisecond)
	f.drain(t, 10*time.Second)
	_, st := f.allPages(t, s.RunID, false)
	assert.Equal(t, remediate.StatusHalted, st.Summary.Status)
	assert.Contains(t, st.Summary.Rollout.Waves[0].Reason, "devices reported")
	assert.Equal(t, 20, f.sim.Counters().Triggers)
}
