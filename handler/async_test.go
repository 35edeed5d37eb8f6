package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/testing/azurite"
)

// queueHost plays the Functions host's queue triggers against Azurite:
// it dequeues a message, posts it to the function in payload mode, deletes
// it on 200, lets it reappear on failure, and after maxDequeueCount
// deliveries moves it to the poison queue, whose function it then calls.
type queueHost struct {
	work, poison *azqueue.QueueClient
	maxDequeue   int64
}

func newQueueHost(t testing.TB, conn, queue string) *queueHost {
	t.Helper()
	svc, err := azqueue.NewServiceClientFromConnectionString(conn, nil)
	require.NoError(t, err)
	return &queueHost{work: svc.NewQueueClient(queue), poison: svc.NewQueueClient(queue + "-poison"), maxDequeue: 5}
}

// pump delivers messages of q to function until q stays empty; it returns
// the number of invocations.
func (h *queueHost) pump(t testing.TB, w *worker, q *azqueue.QueueClient, function string) int {
	t.Helper()
	ctx := context.Background()
	invocations, empty := 0, 0
	for empty < 3 {
		vis := int32(2)
		resp, err := q.DequeueMessage(ctx, &azqueue.DequeueMessageOptions{VisibilityTimeout: &vis})
		require.NoError(t, err)
		if len(resp.Messages) == 0 {
			empty++
			time.Sleep(100 * time.Millisecond)
			continue
		}
		empty = 0
		m := resp.Messages[0]
		text, err := base64.StdEncoding.DecodeString(*m.MessageText)
		require.NoError(t, err, "the queue trigger expects base64 messages")
		envelope, _ := json.Marshal(map[string]any{
			"Data":     map[string]any{"msg": hostString(text)},
			"Metadata": map[string]any{"DequeueCount": *m.DequeueCount, "Id": *m.MessageID, "sys": map[string]any{"MethodName": function}},
		})
		invocations++
		reply, body := hostPost(t, w.url+"/"+function, string(envelope))
		switch {
		case reply.StatusCode == 200:
			_, err = q.DeleteMessage(ctx, *m.MessageID, *m.PopReceipt, nil)
			require.NoError(t, err)
		case *m.DequeueCount >= h.maxDequeue && q == h.work:
			_, err = h.poison.EnqueueMessage(ctx, *m.MessageText, nil)
			require.NoError(t, err)
			_, err = q.DeleteMessage(ctx, *m.MessageID, *m.PopReceipt, nil)
			require.NoError(t, err)
		default:
			t.Logf("%s failed (delivery %d): %s", function, *m.DequeueCount, body)
		}
		require.Less(t, invocations, 5000, "the queue does not drain")
	}
	return invocations
}

func get(t testing.TB, url string) (hostReply, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return hostReply{resp.StatusCode, resp.Header}, b
}

type runPage struct {
	remediate.Summary
	Page      int    `json:"page"`
	PageCount int    `json:"page_count"`
	NextLink  string `json:"nextLink"`
	Queued    int    `json:"queued"`
}

func TestAzureAsyncRunThroughTheQueue(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	f := newTenant(t, 3000, intunesim.Options{WriteLimit: 100000, ReadLimit: 100000})
	env := f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=work", "RUN_PAGE_SIZE=200")
	w := startWorker(t, env...)
	devs := f.eligible(0, 600)
	body := f.request(devs, `,"mode":"async"`)

	// A forwarding header never moves Location (another caller could
	// point it, and the function key in it, at any host).
	reply, b := hostPost(t, w.url+"/api/remediate", body, "Idempotency-Key", "change-4711", "X-Forwarded-Host", "attacker.invalid")
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	var acc struct {
		RunID     string `json:"run_id"`
		Status    string `json:"status"`
		StatusURL string `json:"status_url"`
		Queued    int    `json:"queued"`
	}
	require.NoError(t, json.Unmarshal(b, &acc))
	assert.Equal(t, "accepted", acc.Status)
	assert.Equal(t, 600, acc.Queued)
	loc := reply.Header.Get("Location")
	assert.Equal(t, w.url+"/api/remediate/runs/"+acc.RunID, loc, "an absolute status URL, as Logic Apps requires, under the function that started the run")
	assert.NotEmpty(t, reply.Header.Get("Retry-After"))
	assert.Zero(t, f.sim.Counters().Triggers, "nothing is triggered before a worker runs")

	reply, b = get(t, loc)
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	assert.Equal(t, loc, reply.Header.Get("Location"))
	assert.NotEmpty(t, reply.Header.Get("Retry-After"))

	host := newQueueHost(t, conn, "work")
	invocations := host.pump(t, w, host.work, "worker")
	assert.GreaterOrEqual(t, invocations, 3, "600 devices are three chunks")

	var devices []remediate.DeviceResult
	for page, url := 0, loc; url != ""; page++ {
		reply, b = get(t, url)
		require.Equal(t, 200, reply.StatusCode, "%s", b)
		var p runPage
		require.NoError(t, json.Unmarshal(b, &p))
		assert.Equal(t, page, p.Page)
		assert.Equal(t, 3, p.PageCount)
		assert.Equal(t, remediate.StatusSucceeded, p.Status)
		assert.Equal(t, 600, p.Counts.Succeeded)
		devices = append(devices, p.Devices...)
		url = p.NextLink
	}
	require.Len(t, devices, 600)
	for i, d := range devices {
		assert.Equal(t, devs[i].ID, d.DeviceID)
		assert.Equal(t, remediate.Succeeded, d.Outcome)
		require.Equal(t, 1, f.sim.TriggerCount(d.DeviceID, f.script), d.DeviceID)
	}
	reply, _ = get(t, loc+"?page=3")
	assert.Equal(t, 400, reply.StatusCode)
	// Another caller (another function key) cannot see the run, nor
	// follow its scripts.
	other, err := http.NewRequestWithContext(context.Background(), http.MethodGet, loc+"?follow=true", nil)
	require.NoError(t, err)
	other.Header.Set("x-functions-key", "another-consumers-key")
	otherResp, err := http.DefaultClient.Do(other)
	require.NoError(t, err)
	_ = otherResp.Body.Close()
	assert.Equal(t, 404, otherResp.StatusCode, "a run is its caller's only")
	reply, _ = get(t, w.url+"/api/runs/0123456789abcdef01234567")
	assert.Equal(t, 404, reply.StatusCode)

	logs := w.logs.String()
	assert.Contains(t, logs, `"status":"accepted"`, "the audit line of the 202")
	assert.Contains(t, logs, `"queued":600`)
	assert.Contains(t, logs, `"function":"worker"`)
	assert.NotContains(t, logs, "AccountKey", "the storage connection string never reaches a log line")
	assert.NotContains(t, logs, azurite.Key)

	// The same key again, from a restarted worker: the first answer,
	// nothing triggered, nothing queued.
	_ = w.cmd.Process.Kill()
	err = w.wait()
	require.Error(t, err, "killed, not exited")
	w = startWorker(t, env...)
	reply, b = hostPost(t, w.url+"/api/remediate", body, "Idempotency-Key", "change-4711")
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	assert.Equal(t, "true", reply.Header.Get("Idempotent-Replayed"))
	assert.Contains(t, string(b), acc.RunID)
	assert.Equal(t, 600, f.sim.Counters().Triggers)
	assert.Zero(t, host.pump(t, w, host.work, "worker"), "a replay queues nothing")
	reply, b = hostPost(t, w.url+"/api/remediate", f.request(devs[:1], `,"mode":"async"`), "Idempotency-Key", "change-4711")
	assert.Equal(t, 422, reply.StatusCode, "%s", b)
	assert.Contains(t, string(b), "idempotency_key_reused")
	// Keys are each caller's own: another caller's change-4711 is a new
	// request, never A's answer.
	reply, b = hostPost(t, w.url+"/api/remediate", body, "Idempotency-Key", "change-4711", "x-functions-key", "another-consumers-key")
	assert.Equal(t, 202, reply.StatusCode, "%s", b)
	assert.Empty(t, reply.Header.Get("Idempotent-Replayed"))
	assert.NotContains(t, string(b), acc.RunID)

	// Follow-up through the runs function.
	reply, b = get(t, w.url+"/api/runs/"+acc.RunID+"?follow=true")
	require.Equal(t, 200, reply.StatusCode)
	var p runPage
	require.NoError(t, json.Unmarshal(b, &p))
	for _, d := range p.Devices {
		require.NotNil(t, d.FollowUp, d.DeviceID)
		assert.Contains(t, []string{"pending", "no_issue", "remediated", "remediation_failed", "script_error"}, d.FollowUp.State)
	}
}

func TestAzurePoisonMessagesFailTheirDevices(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	f := newTenant(t, 1000, intunesim.Options{})
	w := startWorker(t, f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=work", "WEBSITE_HOSTNAME=remediator-test.azurewebsites.net")...)
	devs := f.eligible(0, 250)
	reply, b := hostPost(t, w.url+"/api/remediate", f.request(devs, `,"mode":"async"`))
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	assert.True(t, strings.HasPrefix(reply.Header.Get("Location"), "https://remediator-test.azurewebsites.net/api/remediate/runs/"),
		"Location is built from WEBSITE_HOSTNAME: %s", reply.Header.Get("Location"))

	// Every delivery of one chunk fails (its message is corrupted in the
	// queue): after maxDequeueCount the host moves it to the poison queue.
	host := newQueueHost(t, conn, "work")
	ctx := context.Background()
	vis := int32(30)
	resp, err := host.work.DequeueMessage(ctx, &azqueue.DequeueMessageOptions{VisibilityTimeout: &vis})
	require.NoError(t, err)
	require.Len(t, resp.Messages, 1)
	good := *resp.Messages[0].MessageText
	_, err = host.work.DeleteMessage(ctx, *resp.Messages[0].MessageID, *resp.Messages[0].PopReceipt, nil)
	require.NoError(t, err)
	var msg struct {
		Items []json.RawMessage `json:"items"`
	}
	raw, _ := base64.StdEncoding.DecodeString(good)
	require.NoError(t, json.Unmarshal(raw, &msg))
	poisoned := len(msg.Items)
	// The worker fails this delivery: the run id points nowhere readable.
	bad := base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(raw), `"chunk":`, `"chunk":9`, 1)))
	_, err = host.work.EnqueueMessage(ctx, bad, nil)
	require.NoError(t, err)
	host.pump(t, w, host.work, "worker")
	// The poison function gets the original message of the chunk.
	_, err = host.poison.EnqueueMessage(ctx, good, nil)
	require.NoError(t, err)
	host.pump(t, w, host.poison, "poison")

	var acc struct {
		RunID string `json:"run_id"`
	}
	require.NoError(t, json.Unmarshal(b, &acc))
	reply, b = get(t, w.url+"/api/runs/"+acc.RunID)
	require.Equal(t, 424, reply.StatusCode, "failed devices make the run's answer 424, as a synchronous one: %s", b)
	var p runPage
	require.NoError(t, json.Unmarshal(b, &p))
	assert.Equal(t, poisoned, p.Counts.Failed)
	assert.Equal(t, 250-poisoned, p.Counts.Succeeded)
	reasons := map[string]int{}
	for _, d := range p.Devices {
		reasons[d.Reason]++
	}
	assert.Equal(t, poisoned, reasons["poison"], fmt.Sprint(reasons))
	assert.Contains(t, w.logs.String(), `"function":"poison"`)
}

func TestAzureWorkerKilledMidChunkIsRedelivered(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	f := newTenant(t, 1000, intunesim.Options{Latency: 10 * time.Millisecond})
	// 80 triggers/s: the chunk of 200 takes 2.5 seconds, time enough to
	// kill the worker in the middle of it. FUNCTION_TIMEOUT is also the
	// claim lease.
	env := f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=work", "GRAPH_WRITE_RATE=80", "FUNCTION_TIMEOUT=3s")
	w := startWorker(t, env...)
	devs := f.eligible(0, 200)
	reply, b := hostPost(t, w.url+"/api/remediate", f.request(devs, `,"mode":"async"`))
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	var acc struct {
		RunID string `json:"run_id"`
	}
	require.NoError(t, json.Unmarshal(b, &acc))

	host := newQueueHost(t, conn, "work")
	ctx := context.Background()
	vis := int32(3) // the host's lease on a message it is working
	resp, err := host.work.DequeueMessage(ctx, &azqueue.DequeueMessageOptions{VisibilityTimeout: &vis})
	require.NoError(t, err)
	require.Len(t, resp.Messages, 1)
	m := resp.Messages[0]
	text, _ := base64.StdEncoding.DecodeString(*m.MessageText)
	envelope, _ := json.Marshal(map[string]any{"Data": map[string]any{"msg": hostString(text)}, "Metadata": map[string]any{"DequeueCount": 1}})
	go func() {
		// The worker is killed under this call: its error is the point.
		resp, err := http.Post(w.url+"/worker", "application/json", strings.NewReader(string(envelope)))
		if err == nil {
			_ = resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for f.sim.Counters().Triggers < 60 {
		require.True(t, time.Now().Before(deadline), "the worker did not trigger")
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, w.cmd.Process.Kill())
	require.Error(t, w.wait(), "killed mid-chunk")
	killedAt := f.sim.Counters().Triggers
	require.Less(t, killedAt, 200, "the chunk was not finished")

	// The host redelivers the message once its lease ends, to a new worker;
	// devices whose claims are younger than the lease wait for it.
	w = startWorker(t, env...)
	deadline = time.Now().Add(30 * time.Second)
	for {
		host.pump(t, w, host.work, "worker")
		reply, b = get(t, w.url+"/api/runs/"+acc.RunID)
		if reply.StatusCode != 202 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the run did not end: %s", b)
	}
	require.Equal(t, 200, reply.StatusCode, "%s", b)
	var p runPage
	require.NoError(t, json.Unmarshal(b, &p))
	assert.Equal(t, 200, p.Counts.Succeeded)
	recovered := 0
	for _, d := range p.Devices {
		require.Equal(t, 1, f.sim.TriggerCount(d.DeviceID, f.script), "device %s triggered once, across the kill", d.DeviceID)
		if strings.Contains(d.Message, "action record") {
			recovered++
		}
	}
	assert.Equal(t, 200, f.sim.Counters().Triggers)
	t.Logf("killed after %d triggers; %d devices recovered from Intune's action record", killedAt, recovered)
}

func TestAzureWithoutStorageRefusesAsync(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 300, intunesim.Options{})
	w := startWorker(t, f.env()...) // the real host's variables, no AzureWebJobsStorage
	reply, b := hostPost(t, w.url+"/api/remediate", f.request(f.eligible(0, 2), `,"mode":"async"`))
	assert.Equal(t, 400, reply.StatusCode)
	assert.Contains(t, string(b), `"field":"mode"`)
	assert.Contains(t, w.logs.String(), "AzureWebJobsStorage is not set: asynchronous runs are off")
	reply, b = hostPost(t, w.url+"/api/remediate", f.request(f.eligible(0, 2), ""))
	assert.Equal(t, 200, reply.StatusCode, "auto stays synchronous: %s", b)
}

// hostString is a queue message's text as the Functions host passes it to
// a custom handler: a string trigger value goes through
// JsonConvert.SerializeObject before it is put in Data, so the text
// arrives JSON-encoded once more (azure-functions-host
// GetHttpScriptInvocationContextValue).
func hostString(text []byte) string {
	b, _ := json.Marshal(string(text))
	return string(b)
}
