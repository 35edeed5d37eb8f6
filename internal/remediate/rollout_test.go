package remediate

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGateArithmetic: pass needs enough reported and enough of those
// succeeded; the gate halts as soon as the success share can no longer
// reach its minimum, or when its wait runs out; else it waits.
func TestGateArithmetic(t *testing.T) {
	g := Gate{MinReported: 0.8, MinSuccess: 0.95, Wait: 2 * time.Hour, Poll: 5 * time.Minute}
	for _, tc := range []struct {
		name    string
		f       GateFigures
		elapsed time.Duration
		want    string
	}{
		{"all reported, all succeeded", GateFigures{100, 100, 100}, time.Minute, GatePass},
		{"80 of 100 reported, 76 succeeded (95%)", GateFigures{100, 80, 76}, time.Minute, GatePass},
		{"79 reported: not enough yet", GateFigures{100, 79, 79}, time.Minute, GateWait},
		{"80 reported, 75 succeeded (93.75%), 5 failed: 95 can still succeed", GateFigures{100, 80, 75}, time.Minute, GateWait},
		{"6 failed of 100: 94% at best", GateFigures{100, 10, 4}, time.Minute, GateHalt},
		{"5 failed of 100: 95% still possible", GateFigures{100, 10, 5}, time.Minute, GateWait},
		{"wait ran out without enough reports", GateFigures{100, 50, 50}, 2 * time.Hour, GateHalt},
		{"wait ran out with enough reports, share short", GateFigures{100, 90, 85}, 2 * time.Hour, GateHalt},
		{"wait ran out but passing", GateFigures{100, 90, 90}, 3 * time.Hour, GatePass},
		{"nothing triggered", GateFigures{}, 0, GatePass},
	} {
		got, reason := g.Decide(tc.f, tc.elapsed)
		assert.Equal(t, tc.want, got, "%s: %s", tc.name, reason)
		assert.NotEmpty(t, reason)
	}
}

// TestRolloutWaves: shares and counts become cumulative sizes, at least a
// device a wave, the last all; the sample is spread and reproducible.
func TestRolloutWaves(t *testing.T) {
	r := RolloutPlan{Waves: []Wave{{Percent: 1}, {Count: 50}, {Percent: 100}}}
	assert.Equal(t, []int{10, 50, 1000}, r.Sizes(1000))
	assert.Equal(t, []int{1, 3, 3}, r.Sizes(3), "a count past the run is the whole run; a first wave has at least one device")
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = strings.Repeat("0", 8) + "-0000-4000-8000-" + strings.Repeat("0", 10) + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	a, b := SampleOrder("run1", ids), SampleOrder("run1", ids)
	assert.Equal(t, a, b, "reproducible for the run")
	assert.NotEqual(t, a, SampleOrder("run2", ids), "another run, another sample")
	firstTen := 0
	for _, i := range a[:10] {
		if i < 10 {
			firstTen++
		}
	}
	assert.Less(t, firstTen, 5, "not the first devices of the list")
}

// TestRolloutValidation: waves must grow and end at 100%; gates take
// shares and durations within bounds; a rollout needs an asynchronous run.
func TestRolloutValidation(t *testing.T) {
	dev := Target{DeviceID: "11111111-1111-4111-8111-111111111111", ScriptPolicyID: "22222222-2222-4222-8222-222222222222"}
	plan, err := Validate(Request{ManagedDevices: []Target{dev}, Rollout: &Rollout{Waves: []string{"5%", "100%"},
		Gate: &GateSpec{MinSuccess: "90%", Poll: "30s"}}}, Limits{})
	require.NoError(t, err)
	assert.Equal(t, ModeAsync, plan.Mode, "auto becomes async")
	assert.Equal(t, 0.9, plan.Rollout.Gate.MinSuccess)
	assert.Equal(t, DefaultGate.MinReported, plan.Rollout.Gate.MinReported)
	assert.Equal(t, 30*time.Second, plan.Rollout.Gate.Poll)

	_, err = Validate(Request{ManagedDevices: []Target{dev}, Mode: "sync", Rollout: &Rollout{Waves: []string{"50%", "10%", "90%"},
		Gate: &GateSpec{MinReported: "80", Wait: "30d"}}}, Limits{})
	require.Error(t, err)
	for _, field := range []string{"rollout:", "rollout.waves[1]", "rollout.waves[2]", "rollout.gate.min_reported", "rollout.gate.wait"} {
		assert.Contains(t, err.Error(), field)
	}
}
