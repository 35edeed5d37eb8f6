package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/testing/azurefake"
	"github.com/remediator/remediator/internal/testing/azurite"
)

// The compressed Intune of the tenant-scale benchmarks: each tenant's app
// may send benchWrites triggers per benchWindow (25/s; Intune: 200 per
// 20 s, 10/s), and remediator is set to 95% of that.
const (
	benchWrites  = 250
	benchWindow  = 10 * time.Second
	benchCeiling = float64(benchWrites) / 10 // triggers per second per tenant
	benchRate    = "23.75"
)

// fleet is a deployment of three worker processes (three operating-system
// processes) sharing one Azurite, a fake Entra ID that issues a token per
// tenant to one multi-tenant app registration, and a simulator that keeps
// each tenant's limits apart.
type fleet struct {
	*tenantFixture
	tenants []string
	workers []*worker
	queue   *azqueue.QueueClient
	entra   *azurefake.Entra
}

func newFleet(b *testing.B, tenants, devices int, extra ...string) *fleet {
	return newFleetVia(b, tenants, devices, 3, nil, extra...)
}

// newFleetVia is newFleet with processes worker processes, whose storage
// connection string, when via is set, goes through via (a proxy).
func newFleetVia(b *testing.B, tenants, devices, processes int, via func(conn string) string, extra ...string) *fleet {
	return newFleetWith(b, tenants, devices, processes, via, nil, extra...)
}

// newFleetWith is newFleetVia with the simulator's options changed by
// sim (when set).
func newFleetWith(b *testing.B, tenants, devices, processes int, via func(conn string) string, sim func(*intunesim.Options), extra ...string) *fleet {
	b.Helper()
	conn := azurite.Start(b)
	workerConn := conn
	if via != nil {
		workerConn = via(conn)
	}
	entra, certFile := fakeEntra(b)
	fl := &fleet{entra: entra}
	for i := range tenants {
		id := fmt.Sprintf("3f9c5a2e-0000-4000-8000-%012d", i+1)
		fl.tenants = append(fl.tenants, id)
		entra.Register(azurefake.App{Tenant: id, ClientID: appID, Secret: appSecret})
	}
	opts := intunesim.Options{WriteLimit: benchWrites, TenantWriteLimit: 2 * benchWrites, Window: benchWindow,
		ReadLimit: 10 * benchWrites, TenantReadLimit: 20 * benchWrites, RunStateDelay: time.Hour,
		Authorize: func(token string) (string, bool) { return entra.Valid(token) }}
	if sim != nil {
		sim(&opts)
	}
	fl.tenantFixture = newTenant(b, devices, opts)
	env := append([]string{"GRAPH_BASE_URL=" + fl.sim.URL, "GRAPH_AUTH=client-secret", "GRAPH_TENANT_ID=" + fl.tenants[0], "GRAPH_CLIENT_ID=" + appID,
		"GRAPH_CLIENT_SECRET=" + appSecret, "ALLOWED_TENANT_IDS=" + strings.Join(fl.tenants[1:], ","),
		"AZURE_AUTHORITY_HOST=" + entra.URL, "SSL_CERT_FILE=" + certFile, "AzureWebJobsStorage=" + workerConn, "REMEDIATION_QUEUE=work",
		"GRAPH_WRITE_RATE=" + benchRate, "GRAPH_READ_RATE=240", "DEVICE_COOLDOWN=0", "MAX_DEVICES_PER_RUN=100000", "MAX_CONCURRENCY=16",
	}, extra...)
	for range processes {
		fl.workers = append(fl.workers, startWorker(b, env...))
	}
	svc, err := azqueue.NewServiceClientFromConnectionString(conn, nil)
	require.NoError(b, err)
	fl.queue = svc.NewQueueClient("work")
	return fl
}

// host plays the Functions host's queue trigger for the three processes
// until ctx ends: it dequeues in batches, as the host does, and delivers
// as many messages at once as host.json lets the three instances take
// (batchSize + newBatchThreshold each), each to the next process.
func (fl *fleet) host(ctx context.Context, b *testing.B) *sync.WaitGroup {
	var wg sync.WaitGroup
	slots := make(chan struct{}, 3*hostConcurrency(b))
	wg.Go(func() {
		for n := 0; ctx.Err() == nil; {
			free := int32(min(32, cap(slots)-len(slots)))
			vis := int32(120)
			var msgs []*azqueue.DequeuedMessage
			if free > 0 {
				resp, err := fl.queue.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &free, VisibilityTimeout: &vis})
				if err == nil {
					msgs = resp.Messages
				}
			}
			if len(msgs) == 0 {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for _, m := range msgs {
				slots <- struct{}{}
				w := fl.workers[n%3]
				n++
				wg.Go(func() {
					defer func() { <-slots }()
					text, err := base64.StdEncoding.DecodeString(*m.MessageText)
					require.NoError(b, err)
					envelope, _ := json.Marshal(map[string]any{
						"Data":     map[string]any{"msg": hostString(text)},
						"Metadata": map[string]any{"DequeueCount": *m.DequeueCount, "Id": *m.MessageID, "sys": map[string]any{"MethodName": "worker"}},
					})
					if reply, _ := hostPost(b, w.url+"/worker", string(envelope)); reply.StatusCode == 200 {
						_, _ = fl.queue.DeleteMessage(context.Background(), *m.MessageID, *m.PopReceipt, nil)
					}
				})
			}
		}
	})
	return &wg
}

// run submits a run of n devices from the eligible ones at from for
// tenant, synchronously or through the queue, and waits until it is done.
func (fl *fleet) run(b *testing.B, w *worker, tenant string, body string, async bool) {
	fl.runPolling(b, w, tenant, body, async, time.Second)
}

// runPolling is run, polling the status every poll.
func (fl *fleet) runPolling(b *testing.B, w *worker, tenant string, body string, async bool, poll time.Duration) {
	mode := "sync"
	if async {
		mode = "async"
	}
	body = strings.TrimSuffix(body, "}") + fmt.Sprintf(`,"tenant_id":%q,"mode":%q,"ignore_partial_failures":true}`, tenant, mode)
	reply, b2 := hostPost(b, w.url+"/api/remediate", body)
	if !async {
		require.Equal(b, 200, reply.StatusCode, "%s", b2)
		return
	}
	require.Equal(b, 202, reply.StatusCode, "%s", b2)
	loc := reply.Header.Get("Location")
	for {
		reply, b2 = get(b, loc)
		if reply.StatusCode != 202 {
			require.Equal(b, 200, reply.StatusCode, "%s", b2)
			return
		}
		time.Sleep(poll) // a flow polls after Retry-After: 1 s and up
	}
}

// hostConcurrency is how many queue messages one instance handles at once
// under host.json: batchSize + newBatchThreshold.
func hostConcurrency(b *testing.B) int {
	var host struct {
		Extensions struct {
			Queues struct {
				BatchSize         int `json:"batchSize"`
				NewBatchThreshold int `json:"newBatchThreshold"`
			} `json:"queues"`
		} `json:"extensions"`
	}
	raw, err := os.ReadFile("../host.json")
	require.NoError(b, err)
	require.NoError(b, json.Unmarshal(raw, &host))
	return host.Extensions.Queues.BatchSize + host.Extensions.Queues.NewBatchThreshold
}

// triggerRate is the rate of triggers that took effect, from the first to
// the last: the pace while the runs trigger, without the plan before and
// the polling after.
func triggerRate(sim *intunesim.Server) float64 {
	rates := tenantRates(sim)
	return rates[""]
}

// tenantRates is triggerRate for each tenant, and for all together ("").
func tenantRates(sim *intunesim.Server) map[string]float64 {
	type span struct {
		first, last time.Time
		n           int
	}
	spans := map[string]*span{}
	add := func(key string, t time.Time) {
		s := spans[key]
		if s == nil {
			s = &span{first: t, last: t}
			spans[key] = s
		}
		if t.Before(s.first) {
			s.first = t
		}
		if t.After(s.last) {
			s.last = t
		}
		s.n++
	}
	for _, r := range sim.Records() {
		if r.Method == "POST" && r.Status == 204 && strings.HasSuffix(r.Path, "/initiateOnDemandProactiveRemediation") {
			add("", r.Time)
			add("tenant:"+intunesim.TenantOf(r.App), r.Time)
		}
	}
	out := map[string]float64{}
	for k, s := range spans {
		if s.n > 1 {
			out[k] = float64(s.n-1) / s.last.Sub(s.first).Seconds()
		}
	}
	return out
}

// measure reports, over every tenant, the trigger requests sent in any
// window beyond the limit and the 429s; then stops the processes and
// reports the storage operations they made.
func (fl *fleet) measure(b *testing.B, triggers int) (storageOps int) {
	over, throttled := 0, 0
	for _, tn := range fl.tenants {
		most, th := triggerLoad(fl.sim.Server, tn, benchWindow)
		if most > benchWrites || th > 0 {
			b.Logf("tenant %s: %d triggers in a window (limit %d), %d throttled", tn, most, benchWrites, th)
		}
		over += max(0, most-benchWrites)
		throttled += th
	}
	b.ReportMetric(float64(over), "windows_over_limit")
	b.ReportMetric(float64(throttled), "throttled")
	ops := 0
	for _, w := range fl.workers {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		<-w.exited
		sc := bufio.NewScanner(strings.NewReader(w.logs.String()))
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var line struct {
				Ops *int `json:"storage_operations"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Ops != nil {
				ops += *line.Ops
			}
		}
	}
	if triggers > 0 {
		b.ReportMetric(float64(ops)/float64(triggers), "storage_ops_per_trigger")
	}
	return ops
}

// BenchmarkTenants: 20 tenants of one multi-tenant app, each limited to
// 25 triggers/s (an aggregate ceiling of 500/s), 500 devices each, half
// of them synchronous runs and half asynchronous, through three processes
// sharing each tenant's budget in Azurite; then 50 tenants of 200 devices.
func BenchmarkTenants(b *testing.B) {
	for _, size := range []struct{ tenants, perTenant int }{{20, 500}, {50, 200}} {
		b.Run(fmt.Sprintf("tenants=%d", size.tenants), func(b *testing.B) { benchTenants(b, size.tenants, size.perTenant) })
	}
}

func benchTenants(b *testing.B, tenants, perTenant int) {
	for range b.N {
		fl := newFleet(b, tenants, 24000)
		ctx, cancel := context.WithCancel(context.Background())
		pump := fl.host(ctx, b)
		start := time.Now()
		var wg sync.WaitGroup
		for i, tn := range fl.tenants {
			wg.Go(func() {
				fl.run(b, fl.workers[i%3], tn, fl.request(fl.eligible(i*perTenant, perTenant), ""), i%2 == 1)
				if d := time.Since(start); d > time.Minute {
					b.Logf("tenant %d (async %v) answered after %s", i, i%2 == 1, d)
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		cancel()
		pump.Wait()
		triggers := fl.sim.Counters().Triggers
		require.Equal(b, tenants*perTenant, triggers)
		rates := tenantRates(fl.sim.Server)
		var sum float64
		for k, r := range rates {
			if k != "" {
				sum += r
			}
		}
		b.ReportMetric(sum/(float64(tenants)*benchCeiling), "tenants_ratio_to_ceiling")
		b.ReportMetric(rates[""], "triggers/s")
		b.ReportMetric(rates[""]/(float64(tenants)*benchCeiling), "aggregate_ratio_to_ceiling")
		b.ReportMetric(elapsed.Seconds(), "s_to_last_answer")
		if elapsed > time.Minute {
			for _, w := range fl.workers {
				for _, line := range strings.Split(w.logs.String(), "\n") {
					if strings.Contains(line, `"WARN"`) || strings.Contains(line, `"ERROR"`) || strings.Contains(line, "requeue") {
						b.Log(line[:min(len(line), 600)])
					}
				}
			}
		}
		fl.measure(b, triggers)
	}
}

// BenchmarkOneTenantProcesses: one tenant, three processes each running a
// synchronous run of 250 devices at once: together they keep to the
// tenant's limit and use its budget.
func BenchmarkOneTenantProcesses(b *testing.B) {
	const perProcess = 250
	for range b.N {
		fl := newFleet(b, 1, 2000)
		start := time.Now()
		var wg sync.WaitGroup
		for i, w := range fl.workers {
			wg.Go(func() { fl.run(b, w, fl.tenants[0], fl.request(fl.eligible(i*perProcess, perProcess), ""), false) })
		}
		wg.Wait()
		triggers := fl.sim.Counters().Triggers
		require.Equal(b, 3*perProcess, triggers)
		b.ReportMetric(triggerRate(fl.sim.Server)/benchCeiling, "ratio_to_ceiling")
		b.ReportMetric(time.Since(start).Seconds(), "s_to_last_answer")
		fl.measure(b, triggers)
	}
}

// BenchmarkFairness: while one tenant's run of about 20,000 devices is in
// progress, a 50-device run for another tenant, submitted through the
// same queue, finishes within a small multiple of its own trigger time
// (50 / 23.75 s); fairness_ratio is that multiple.
func BenchmarkFairness(b *testing.B) {
	for range b.N {
		// Azurite stores a 20,000-device run slowly (about 2 minutes; Azure
		// Tables take seconds): give its answer the longest HTTP budget.
		fl := newFleet(b, 2, 34000, "HTTP_RESPONSE_BUDGET=230s")
		ctx, cancel := context.WithCancel(context.Background())
		pump := fl.host(ctx, b)
		big := fmt.Sprintf(`{"targets":[{"script_policy_id":%q,"filter":"operatingSystem eq 'Windows'"}],"validate_device_exists":false,"tenant_id":%q,"mode":"async"}`,
			fl.script, fl.tenants[0])
		t0 := time.Now()
		reply, body := hostPost(b, fl.workers[0].url+"/api/remediate", big)
		b.Logf("big run answered in %s", time.Since(t0))
		require.Equal(b, 202, reply.StatusCode, "%s", body)
		for fl.sim.Counters().Triggers < 100 { // the big run is under way
			time.Sleep(100 * time.Millisecond)
		}
		start := time.Now()
		fl.runPolling(b, fl.workers[1], fl.tenants[1], fl.request(fl.eligible(0, 50), ""), true, 100*time.Millisecond)
		done := time.Since(start)
		own := 50 / 23.75
		b.ReportMetric(done.Seconds()/own, "fairness_ratio")
		var first, last time.Time
		for _, r := range fl.sim.Records() {
			if intunesim.TenantOf(r.App) == fl.tenants[1] && r.Method == "POST" && r.Status == 204 {
				if first.IsZero() {
					first = r.Time
				}
				last = r.Time
			}
		}
		b.Logf("small run: first trigger after %s, last after %s, done after %s", first.Sub(start), last.Sub(start), done)
		cancel()
		pump.Wait()
	}
}
