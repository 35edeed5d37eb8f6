package main

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/testing/azurite"
)

// triggerLoad is what the simulator saw of one tenant's triggers: the most
// attempted in any window (429s included: what Intune would have counted)
// and how many were throttled.
func triggerLoad(sim *intunesim.Server, tenant string, window time.Duration) (most, throttled int) {
	var times []time.Time
	for _, r := range sim.Records() {
		if r.Method != "POST" || !strings.HasSuffix(r.Path, "/initiateOnDemandProactiveRemediation") || intunesim.TenantOf(r.App) != tenant {
			continue
		}
		times = append(times, r.Time)
		if r.Status == 429 {
			throttled++
		}
	}
	return intunesim.MaxInWindow(times, window), throttled
}

// TestSharedBudgetAcrossProcesses: three worker processes, each running a
// synchronous run for the same tenant at once, take their triggers from
// one budget in Azure Storage (Azurite): together they keep to the
// tenant's pace, and Intune never throttles them. Paced alone, each would
// send the full rate and the three together three times Intune's limit.
func TestSharedBudgetAcrossProcesses(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	const limit, window = 40, 2 * time.Second // 20 triggers/s
	f := newTenant(t, 600, intunesim.Options{WriteLimit: limit, TenantWriteLimit: 2 * limit, Window: window, ReadLimit: 100000, TenantReadLimit: 100000})
	env := f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=work", "GRAPH_WRITE_RATE=18")
	var workers []*worker
	for range 3 {
		workers = append(workers, startWorker(t, env...))
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i, w := range workers {
		wg.Go(func() {
			reply, b := hostPost(t, w.url+"/api/remediate", f.request(f.eligible(i*30, 30), `,"mode":"sync"`))
			assert.Equal(t, 200, reply.StatusCode, "%s", b)
			assert.Equal(t, 30, summaryOf(t, b).Counts.Succeeded)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	most, throttled := triggerLoad(f.sim.Server, "", window)
	assert.Zero(t, throttled, "no 429: the processes share the tenant's budget")
	assert.LessOrEqual(t, most, limit, "never more than Intune's limit in any window")
	assert.Equal(t, 90, f.sim.Counters().Triggers)
	assert.Greater(t, elapsed, 4*time.Second, "90 triggers at 18/s for the three together, not 18/s each")
}

// TestSharedBudgetUnreachable: when the budget's storage cannot be reached,
// a process paces itself at its local share (1/BUDGET_PROCESSES of the
// rate) and says so in the summary's warnings.
func TestSharedBudgetUnreachable(t *testing.T) {
	t.Parallel()
	conn, _ := azurite.Later(t) // never started: storage is down
	f := newTenant(t, 200, intunesim.Options{})
	w := startWorker(t, f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=work", "GRAPH_WRITE_RATE=40", "BUDGET_PROCESSES=4")...)
	start := time.Now()
	reply, b := hostPost(t, w.url+"/api/remediate", f.request(f.eligible(0, 16), `,"mode":"sync"`))
	require.Equal(t, 200, reply.StatusCode, "%s", b)
	s := summaryOf(t, b)
	assert.Equal(t, 16, s.Counts.Succeeded)
	assert.GreaterOrEqual(t, time.Since(start), 1400*time.Millisecond, "16 triggers at 10/s, a quarter of 40/s")
	var warned bool
	for _, m := range s.Warnings {
		warned = warned || strings.Contains(m, "shared Graph budget")
	}
	assert.True(t, warned, "the summary says the run paced itself alone: %v", s.Warnings)
}
