package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/testing/azurite"
)

// rolloutPage is a finished (or halted) run's answer with its rollout.
type rolloutPage struct {
	remediate.Summary
	ResumeURL string `json:"resume_url"`
	CancelURL string `json:"cancel_url"`
}

// TestAzureRolloutThroughTheQueue: a rollout of a script that fails on
// 60% of the devices, through the built binary, Azurite and the queue
// host emulation: the first wave is triggered, its gate is read by delayed
// queue messages (every second, no invocation waits between readings)
// and halts the run; the halted run is a final 200 with the URLs to
// resume or cancel it, nothing past the first wave is triggered, and
// resuming with the submit key's URL triggers the rest.
func TestAzureRolloutThroughTheQueue(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	tenant := intunesim.Generate(99, intunesim.GenerateOptions{Devices: 600})
	f := newTenant(t, 600, intunesim.Options{WriteLimit: 100000, ReadLimit: 100000, RunStateDelay: 300 * time.Millisecond,
		ScriptFailure: map[string]float64{strings.ToLower(tenant.RemediationScript().ID): 0.6}})
	w := startWorker(t, f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=waves")...)
	devs := f.eligible(0, 100)
	reply, b := hostPost(t, w.url+"/api/remediate", f.request(devs, `,"rollout":{"waves":["20%","100%"],"gate":{"poll":"1s","wait":"2h"}}`))
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	loc := reply.Header.Get("Location")

	host := newQueueHost(t, conn, "waves")
	// follow pumps the queue and polls the run until its answer is final.
	follow := func() rolloutPage {
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			host.pump(t, w, host.work, "worker")
			reply, b := get(t, loc)
			if reply.StatusCode != 202 {
				require.Equal(t, 200, reply.StatusCode, "%s", b)
				var p rolloutPage
				require.NoError(t, json.Unmarshal(b, &p))
				return p
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatal("the run did not finish or halt")
		return rolloutPage{}
	}
	began := time.Now()
	p := follow()
	elapsed := time.Since(began)
	assert.Equal(t, remediate.StatusHalted, p.Status)
	assert.Equal(t, 20, f.sim.Counters().Triggers, "triggered after the gate should have halted: none")
	assert.Equal(t, 20, p.Counts.Succeeded)
	assert.Equal(t, 80, p.Counts.NotAttempted)
	require.NotNil(t, p.Rollout)
	assert.Equal(t, remediate.GateHalt, p.Rollout.Waves[0].Decision)
	assert.Contains(t, p.Rollout.Halted, "wave 1")
	assert.Equal(t, loc+"/resume", p.ResumeURL)
	assert.Equal(t, loc+"/cancel", p.CancelURL)

	// The gate's readings are queue messages delayed by the poll: the
	// worker's invocations took a small part of the time the run waited.
	busy := 0
	sc := bufio.NewScanner(strings.NewReader(w.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var line struct {
			Function string `json:"function"`
			Duration int    `json:"duration_ms"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Function == "worker" {
			busy += line.Duration
		}
	}
	assert.Less(t, time.Duration(busy)*time.Millisecond, elapsed/4, "invocations: %d ms of %s", busy, elapsed)

	reply, b = hostPost(t, p.ResumeURL, "")
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	p = follow()
	assert.Equal(t, remediate.StatusSucceeded, p.Status, "the last wave has no gate after it")
	assert.Equal(t, remediate.GateResumed, p.Rollout.Waves[0].Decision)
	assert.Equal(t, 100, f.sim.Counters().Triggers)
	assert.Equal(t, 100, p.Counts.Succeeded)
}
