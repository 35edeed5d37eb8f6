package azure

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/runs"
)

func TestLenientKV(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want lenientKV
	}{
		"object of arrays (Data.req.Headers)": {`{"Content-Type":["application/json"],"Accept":["a","b"]}`, lenientKV{"Content-Type": "application/json", "Accept": "a,b"}},
		"object of strings (Metadata)":        {`{"script_policy_id":"x"}`, lenientKV{"script_policy_id": "x"}},
		"string as documented":                {`"{}"`, lenientKV{}},
		"JSON in a string":                    {`"{\"a\":\"1\"}"`, lenientKV{"a": "1"}},
		"null":                                {`null`, lenientKV{}},
	} {
		t.Run(name, func(t *testing.T) {
			var kv lenientKV
			require.NoError(t, json.Unmarshal([]byte(tc.in), &kv))
			assert.Equal(t, tc.want, kv)
		})
	}
	assert.Equal(t, "application/json", lenientKV{"Content-Type": "application/json"}.get("content-type"))
}

func TestTimerPayloads(t *testing.T) {
	for name, want := range map[string]struct {
		pastDue bool
		last    time.Time
	}{
		"timer_payload.json":             {false, time.Time{}},
		"timer_payload_null_status.json": {true, time.Time{}},
		"timer_payload_fractional.json":  {false, time.Date(2026, 11, 26, 11, 0, 0, 1995200, time.UTC)},
	} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile("../../testdata/azure/" + name)
			require.NoError(t, err)
			var env envelope
			require.NoError(t, json.Unmarshal(raw, &env))
			b, ok := env.binding("timer")
			require.True(t, ok)
			ti, err := decodeTimer(b)
			require.NoError(t, err)
			assert.Equal(t, want.pastDue, ti.IsPastDue)
			if ti.ScheduleStatus != nil {
				assert.True(t, want.last.Equal(ti.ScheduleStatus.Last.Time), "%v", ti.ScheduleStatus.Last.Time)
				assert.False(t, ti.ScheduleStatus.Next.IsZero())
			}
		})
	}
	// The binding as a JSON string, and a timestamp no layout reads.
	ti, err := decodeTimer(json.RawMessage(`"{\"IsPastDue\":true,\"ScheduleStatus\":{\"Last\":\"yesterday\"}}"`))
	require.NoError(t, err)
	assert.True(t, ti.IsPastDue)
	assert.True(t, ti.ScheduleStatus.Last.IsZero())
}

// TestAppLayout checks the files the Functions host reads: one folder per
// function with the bindings the handler serves, and host.json's
// functionTimeout matching FUNCTION_TIMEOUT's default.
func TestAppLayout(t *testing.T) {
	var host struct {
		FunctionTimeout string `json:"functionTimeout"`
		CustomHandler   struct {
			Description struct {
				DefaultExecutablePath string `json:"defaultExecutablePath"`
			} `json:"description"`
			EnableForwardingHTTPRequest bool `json:"enableForwardingHttpRequest"`
		} `json:"customHandler"`
	}
	raw, err := os.ReadFile("../../host.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &host))
	var queues struct {
		Extensions struct {
			Queues struct {
				BatchSize, NewBatchThreshold, MaxDequeueCount int
			} `json:"queues"`
		} `json:"extensions"`
	}
	require.NoError(t, json.Unmarshal(raw, &queues))
	q := queues.Extensions.Queues
	// Budgets are per tenant and shared by every process (SHARED_BUDGET),
	// so an instance may work several chunks, of several tenants, at once;
	// a chunk holds at most 200 devices, so twelve stay small.
	assert.Greater(t, q.BatchSize, 1, "several chunks at a time per instance")
	assert.LessOrEqual(t, q.BatchSize+q.NewBatchThreshold, 16, "a bounded number of chunks per instance")
	assert.Equal(t, 5, q.MaxDequeueCount)
	d := runs.DefaultFunctionTimeout
	assert.Equal(t, fmt.Sprintf("%02d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60), host.FunctionTimeout,
		"host.json's functionTimeout is FUNCTION_TIMEOUT's default")
	assert.Equal(t, "bin/handler", host.CustomHandler.Description.DefaultExecutablePath)
	assert.True(t, host.CustomHandler.EnableForwardingHTTPRequest)

	type binding struct {
		Type, Direction, Name, AuthLevel, Route, Schedule, QueueName, Connection string
		Methods                                                                  []string
	}
	for fn, trigger := range map[string]binding{
		"remediate": {Type: "httpTrigger", Direction: "in", Name: "req", AuthLevel: "function", Route: "remediate/{*rest}", Methods: []string{"get", "post"}},
		"alert":     {Type: "httpTrigger", Direction: "in", Name: "req", AuthLevel: "function", Route: "alert/{*rest}", Methods: []string{"get", "post"}},
		"schedule":  {Type: "timerTrigger", Direction: "in", Name: "timer", Schedule: "%REMEDIATION_SCHEDULE%"},
		"runs":      {Type: "httpTrigger", Direction: "in", Name: "req", AuthLevel: "function", Route: "runs/{id}", Methods: []string{"get"}},
		"worker":    {Type: "queueTrigger", Direction: "in", Name: "msg", QueueName: "%REMEDIATION_QUEUE%", Connection: "AzureWebJobsStorage"},
		"poison":    {Type: "queueTrigger", Direction: "in", Name: "msg", QueueName: "%REMEDIATION_QUEUE%-poison", Connection: "AzureWebJobsStorage"},
		"cleanup":   {Type: "timerTrigger", Direction: "in", Name: "timer", Schedule: "0 23 * * * *"},
	} {
		raw, err := os.ReadFile("../../" + fn + "/function.json")
		require.NoError(t, err, fn)
		var f struct{ Bindings []binding }
		require.NoError(t, json.Unmarshal(raw, &f))
		require.NotEmpty(t, f.Bindings)
		assert.Equal(t, trigger, f.Bindings[0], fn)
		if strings.HasPrefix(trigger.Type, "http") {
			// Exactly one http in and one http out, or the host will not forward.
			require.Len(t, f.Bindings, 2, fn)
			assert.Equal(t, binding{Type: "http", Direction: "out", Name: "res"}, f.Bindings[1])
		}
	}
}
