package remediate

import (
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Rollout is a request's progressive rollout: waves of the run's devices
// (each including the ones before it), each triggered only once the wave
// before passed its gate.
type Rollout struct {
	// Waves are cumulative shares ("1%", "10%", "100%") or counts ("50")
	// of the run's devices; the last is "100%".
	Waves []string  `json:"waves"`
	Gate  *GateSpec `json:"gate,omitempty"`
}

// GateSpec is a request's gate between waves; empty fields take the
// defaults (DefaultGate).
type GateSpec struct {
	MinReported string `json:"min_reported,omitempty"`
	MinSuccess  string `json:"min_success,omitempty"`
	Wait        string `json:"wait,omitempty"`
	Poll        string `json:"poll,omitempty"`
}

// Gate decides whether a wave's results let the rollout go on: at least
// MinReported of the wave's triggered devices reported, and at least
// MinSuccess of those reported no issue or remediated. The gate is read
// every Poll, for at most Wait after the wave's last trigger.
type Gate struct {
	MinReported float64       `json:"min_reported"`
	MinSuccess  float64       `json:"min_success"`
	Wait        time.Duration `json:"wait"`
	Poll        time.Duration `json:"poll"`
}

// DefaultGate is the gate of a rollout that names none.
var DefaultGate = Gate{MinReported: 0.8, MinSuccess: 0.95, Wait: 2 * time.Hour, Poll: 5 * time.Minute}

// RolloutPlan is a validated rollout: waves as shares (Percent) or counts.
type RolloutPlan struct {
	Waves []Wave `json:"waves"`
	Gate  Gate   `json:"gate"`
}

// Wave is one wave: Percent of the run's devices (0 < Percent <= 100), or
// Count devices.
type Wave struct {
	Percent float64 `json:"percent,omitempty"`
	Count   int     `json:"count,omitempty"`
}

// MaxWaves bounds a rollout's waves.
const MaxWaves = 10

// Sizes is how many of n devices the waves cover, each including the ones
// before: increasing, at least one device a wave, the last all n.
func (r RolloutPlan) Sizes(n int) []int {
	out := make([]int, len(r.Waves))
	prev := 0
	for i, w := range r.Waves {
		k := w.Count
		if w.Percent > 0 {
			k = int(math.Ceil(w.Percent / 100 * float64(n)))
		}
		k = min(max(k, prev+1), n)
		if i == len(r.Waves)-1 {
			k = n
		}
		out[i], prev = k, k
	}
	return out
}

// SampleOrder is the order in which the run's devices (ids) join the
// waves: a spread sample, reproducible for the run (by a hash of the run
// id and each device), never the first of a sorted list.
func SampleOrder(runID string, ids []string) []int {
	keys := make([]uint64, len(ids))
	for i, id := range ids {
		h := fnv.New64a()
		h.Write([]byte(runID + "|" + strings.ToLower(id)))
		keys[i] = h.Sum64()
	}
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case keys[a] < keys[b]:
			return -1
		case keys[a] > keys[b]:
			return 1
		}
		return 0
	})
	return order
}

// GateFigures are a wave's results when its gate is read.
type GateFigures struct {
	// Triggered devices of the wave (its succeeded triggers), Reported
	// those whose script reported, Succeeded those that reported no issue
	// or remediated.
	Triggered, Reported, Succeeded int
}

// Gate decisions.
const (
	GatePass = "pass"
	GateHalt = "halt"
	GateWait = "wait"
	// GateResumed is a halted wave's gate overridden by its caller.
	GateResumed = "resumed"
)

// Decide is the gate's decision after elapsed since the wave's last
// trigger, with the reason a person reads: pass when enough reported and
// enough of those succeeded; halt as soon as the success share can no
// longer reach MinSuccess (even if every device yet to report succeeds),
// or when Wait ran out without passing; else wait.
func (g Gate) Decide(f GateFigures, elapsed time.Duration) (string, string) {
	if f.Triggered == 0 {
		return GatePass, "no device of the wave was triggered"
	}
	needReported := int(math.Ceil(g.MinReported*float64(f.Triggered) - 1e-9))
	failed := f.Reported - f.Succeeded
	share := 0.0
	if f.Reported > 0 {
		share = float64(f.Succeeded) / float64(f.Reported)
	}
	best := float64(f.Triggered-failed) / float64(f.Triggered)
	switch {
	case f.Reported >= needReported && share >= g.MinSuccess-1e-9:
		return GatePass, fmt.Sprintf("%d of %d devices reported, %.0f%% of them succeeded (at least %.0f%% and %.0f%% needed)",
			f.Reported, f.Triggered, 100*share, 100*g.MinReported, 100*g.MinSuccess)
	case best < g.MinSuccess-1e-9:
		return GateHalt, fmt.Sprintf("%d of %d devices failed: the success share can no longer reach %.0f%%", failed, f.Triggered, 100*g.MinSuccess)
	case elapsed >= g.Wait && f.Reported < needReported:
		return GateHalt, fmt.Sprintf("after %s only %d of %d devices reported (%.0f%% needed)", g.Wait, f.Reported, f.Triggered, 100*g.MinReported)
	case elapsed >= g.Wait:
		return GateHalt, fmt.Sprintf("after %s %.0f%% of the devices that reported succeeded (%.0f%% needed)", g.Wait, 100*share, 100*g.MinSuccess)
	}
	return GateWait, fmt.Sprintf("%d of %d devices reported so far", f.Reported, f.Triggered)
}

// validateRollout checks a request's rollout: it needs an asynchronous run.
func validateRollout(r *Rollout, plan *Plan, p *problems) {
	if r == nil {
		return
	}
	switch plan.Mode {
	case ModeSync:
		p.add("rollout", "a rollout waits for results between waves: it needs mode async (or auto)")
	case ModeAuto:
		plan.Mode = ModeAsync
	}
	if len(r.Waves) == 0 || len(r.Waves) > MaxWaves {
		p.addf("rollout.waves", "needs 1 to %d waves", MaxWaves)
		return
	}
	rp := &RolloutPlan{Gate: DefaultGate}
	lastPct, lastCount := 0.0, 0
	for i, s := range r.Waves {
		field := fmt.Sprintf("rollout.waves[%d]", i)
		var w Wave
		if v, ok := strings.CutSuffix(strings.TrimSpace(s), "%"); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 || f > 100 || f <= lastPct {
				p.addf(field, "%q must be a share above the wave before's and at most 100%%, such as \"10%%\"", s)
				continue
			}
			w.Percent, lastPct = f, f
		} else {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 || n <= lastCount {
				p.addf(field, "%q must be a device count above the wave before's, or a share such as \"10%%\"", s)
				continue
			}
			w.Count, lastCount = n, n
		}
		rp.Waves = append(rp.Waves, w)
	}
	if last := r.Waves[len(r.Waves)-1]; strings.TrimSpace(last) != "100%" {
		p.add(fmt.Sprintf("rollout.waves[%d]", len(r.Waves)-1), "the last wave is \"100%\": every device of the run is in a wave")
	}
	if g := r.Gate; g != nil {
		share := func(field, v string, dst *float64) {
			if v == "" {
				return
			}
			f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
			if err != nil || !strings.HasSuffix(strings.TrimSpace(v), "%") || f < 0 || f > 100 {
				p.addf(field, "%q must be a share such as \"80%%\"", v)
				return
			}
			*dst = f / 100
		}
		share("rollout.gate.min_reported", g.MinReported, &rp.Gate.MinReported)
		share("rollout.gate.min_success", g.MinSuccess, &rp.Gate.MinSuccess)
		dur := func(field, v string, lo, hi time.Duration, dst *time.Duration) {
			if v == "" {
				return
			}
			d, ok := ParseDuration(v)
			if !ok || d < lo || d > hi {
				p.addf(field, "%q must be a duration from %s to %s, such as \"2h\" or \"PT5M\"", v, lo, hi)
				return
			}
			*dst = d
		}
		dur("rollout.gate.wait", g.Wait, time.Second, 7*24*time.Hour, &rp.Gate.Wait)
		dur("rollout.gate.poll", g.Poll, time.Second, 24*time.Hour, &rp.Gate.Poll)
	}
	plan.Rollout = rp
}

// RolloutStatus is a rollout as an answer shows it: every wave with its
// gate's figures and decision, the wave under way, and why it halted.
type RolloutStatus struct {
	Waves []WaveStatus `json:"waves"`
	// Current is the wave being triggered or gated (1-based).
	Current int  `json:"current_wave"`
	Gate    Gate `json:"gate"`
	// Halted says why the rollout stopped, "" while it goes on.
	Halted string `json:"halted,omitempty"`
}

// WaveStatus is one wave: the devices it covers (with the waves before),
// and its gate's reading once read.
type WaveStatus struct {
	Wave      int `json:"wave"`
	Devices   int `json:"devices"`
	Triggered int `json:"triggered"`
	Reported  int `json:"reported"`
	Succeeded int `json:"succeeded"`
	// SuccessShare is Succeeded of Reported.
	SuccessShare float64   `json:"success_share"`
	Decision     string    `json:"decision,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	DecidedAt    time.Time `json:"decided_at,omitzero"`
}

// NewRolloutStatus is the plan's waves over n devices, none gated yet.
func NewRolloutStatus(r *RolloutPlan, n int) *RolloutStatus {
	st := &RolloutStatus{Current: 1, Gate: r.Gate}
	for i, k := range r.Sizes(n) {
		st.Waves = append(st.Waves, WaveStatus{Wave: i + 1, Devices: k})
	}
	return st
}
