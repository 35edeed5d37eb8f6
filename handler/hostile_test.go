package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/azure"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/testing/azurite"
)

// TestAmbiguousBodiesAreRefused: through the built binary, a body that
// repeats a key is a 400 naming it, and nothing is triggered.
func TestAmbiguousBodiesAreRefused(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 50, intunesim.Options{})
	w := startWorker(t, f.env()...)
	body := f.request(f.eligible(0, 2), `,"dry_run":true,"dry_run":false`)
	reply, b := hostPost(t, w.url+"/api/remediate", body)
	assert.Equal(t, 400, reply.StatusCode, "%s", b)
	var e struct {
		Error struct {
			Details []struct{ Field string } `json:"details"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal(b, &e))
	require.NotEmpty(t, e.Error.Details)
	assert.Equal(t, "dry_run", e.Error.Details[0].Field)
	assert.Zero(t, f.sim.Counters().Triggers)
}

// TestHostileGraphRedirect: a Graph that answers a trigger with a 307 to
// another host gets a failed device with status 307; the other host gets
// nothing, and no token.
func TestHostileGraphRedirect(t *testing.T) {
	t.Parallel()
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(other.Close)
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(hostile.Close)
	w := startWorker(t, "GRAPH_BASE_URL="+hostile.URL+"/beta", "GRAPH_AUTH=none", "GRAPH_WRITE_RATE=100", "DEVICE_COOLDOWN=0")
	body := `{"managed_devices":[{"device_id":"12345678-1234-1234-1234-123456789abc","script_policy_id":"87654321-4321-4321-4321-ba9876543210"}],"validate_device_exists":false}`
	reply, b := hostPost(t, w.url+"/api/remediate", body)
	assert.Equal(t, 424, reply.StatusCode, "%s", b)
	s := summaryOf(t, b)
	require.Len(t, s.Devices, 1)
	assert.Equal(t, remediate.Failed, s.Devices[0].Outcome)
	assert.Equal(t, 307, s.Devices[0].HTTPStatus)
	assert.True(t, strings.Contains(s.Devices[0].Message, "never followed"), s.Devices[0].Message)
	assert.Zero(t, elsewhere.Load(), "the redirect was not followed")
}

// TestStorageDownAtStartUp: with storage unreachable the worker starts
// anyway, answers synchronous runs promptly (the cooldown store skipped,
// with a warning), refuses asynchronous ones with 503 and Retry-After,
// and accepts them once storage answers.
func TestStorageDownAtStartUp(t *testing.T) {
	t.Parallel()
	conn, startStorage := azurite.Later(t)
	f := newTenant(t, 200, intunesim.Options{WriteLimit: 100000, ReadLimit: 100000})
	w := startWorker(t, append(f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=work"), "DEVICE_COOLDOWN=10m")...)
	assert.Contains(t, w.logs.String(), "run storage unreachable at start-up")

	started := time.Now()
	reply, b := hostPost(t, w.url+"/api/remediate", f.request(f.eligible(0, 3), `,"mode":"sync"`))
	require.Equal(t, 200, reply.StatusCode, "%s", b)
	assert.Less(t, time.Since(started), pace.DefaultLeaseTerm+4*time.Second, "storage that is down costs a synchronous run a lease's term (until every lease granted before the outage has ended) and seconds more, once for reads and writes alike")
	s := summaryOf(t, b)
	assert.Equal(t, 3, s.Counts.Succeeded)
	assert.True(t, slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, "DEVICE_COOLDOWN was not applied") }), "%v", s.Warnings)

	reply, b = hostPost(t, w.url+"/api/remediate", f.request(f.eligible(3, 3), `,"mode":"async"`))
	assert.Equal(t, 503, reply.StatusCode, "%s", b)
	assert.Contains(t, string(b), "storage_unavailable")
	assert.NotEmpty(t, reply.Header.Get("Retry-After"))

	startStorage()
	require.Eventually(t, func() bool {
		reply, _ := hostPost(t, w.url+"/api/remediate", f.request(f.eligible(6, 3), `,"mode":"async"`))
		return reply.StatusCode == 202
	}, 40*time.Second, time.Second, "asynchronous runs are accepted once storage answers")
	assert.NotContains(t, w.logs.String(), azurite.Key, "no storage key in any log line")
}

// TestRetentionThroughTheTimer: the cleanup timer function deletes a
// finished run past RUN_RETENTION but never one still being worked, which
// goes only RUN_MAX_DURATION later, through the built binary and Azurite.
func TestRetentionThroughTheTimer(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	f := newTenant(t, 200, intunesim.Options{WriteLimit: 100000, ReadLimit: 100000})
	w := startWorker(t, f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=retention", "RUN_RETENTION=2s", "RUN_MAX_DURATION=2s")...)
	reply, b := hostPost(t, w.url+"/api/remediate", f.request(f.eligible(0, 5), `,"mode":"async"`))
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	finished := reply.Header.Get("Location")
	host := newQueueHost(t, conn, "retention")
	host.pump(t, w, host.work, "worker")
	reply, _ = get(t, finished)
	require.Equal(t, 200, reply.StatusCode, "the first run is done")
	reply, b = hostPost(t, w.url+"/api/remediate", f.request(f.eligible(5, 5), `,"mode":"async"`))
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	live := reply.Header.Get("Location") // never worked: still going

	timer := `{"Data":{"timer":{"IsPastDue":false}},"Metadata":{}}`
	cleanup := func() {
		reply, b := hostPost(t, w.url+"/cleanup", timer)
		require.Equal(t, 200, reply.StatusCode, "%s", b)
	}
	require.Eventually(t, func() bool {
		cleanup()
		reply, _ = get(t, finished)
		return reply.StatusCode == 404
	}, 20*time.Second, 300*time.Millisecond, "the finished run is deleted once past RUN_RETENTION")
	cleanup()
	reply, _ = get(t, live)
	assert.Equal(t, 202, reply.StatusCode, "the run still going is whole")
	require.Eventually(t, func() bool {
		cleanup()
		reply, _ = get(t, live)
		return reply.StatusCode == 404
	}, 20*time.Second, 300*time.Millisecond, "an unfinished run goes RUN_MAX_DURATION after its retention")
	assert.Contains(t, w.logs.String(), `"runs_deleted":1`)
}

// TestCallerPolicy: with CALLER_POLICY, each caller may run only its
// scripts, in its tenants, on at most its number of devices; a request
// outside its rule is a 403 naming the rule, and nothing is read or
// triggered. A caller with no rule may do nothing.
func TestCallerPolicy(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 200, intunesim.Options{})
	other := "11111111-2222-4333-8444-555555555555"
	teamB := azure.KeyCaller("TEAM-B-KEY")
	policy := `{"function-key":{"scripts":["` + f.script + `"],"tenants":["default"],"max_devices":3},` +
		`"principal:0b5c4f1e-0000-4000-8000-00000000beef":{"scripts":["*"],"max_devices":10},"` + teamB + `":{"scripts":["*"],"max_devices":10}}`
	w := startWorker(t, f.env("CALLER_POLICY="+policy)...)
	refused := func(body string, rule string, headers ...string) {
		t.Helper()
		before := f.sim.Counters().Requests
		reply, b := hostPost(t, w.url+"/api/remediate", body, headers...)
		assert.Equal(t, 403, reply.StatusCode, "%s", b)
		assert.Contains(t, string(b), "caller_not_allowed")
		assert.Contains(t, string(b), rule)
		assert.Equal(t, before, f.sim.Counters().Requests, "nothing was read")
	}
	reply, b := hostPost(t, w.url+"/api/remediate", f.request(f.eligible(0, 3), ""))
	assert.Equal(t, 200, reply.StatusCode, "within its rule: %s", b)
	refused(f.request(f.eligible(3, 4), ""), "at most 3 devices")
	refused(strings.ReplaceAll(f.request(f.eligible(3, 1), ""), f.script, other), "may not run script "+other)
	refused(f.request(f.eligible(3, 1), `,"tenant_id":"`+other+`"`), "may not act in tenant "+other)
	// Without App Service Authentication a principal header is whatever
	// the caller wrote: it is the function-key caller still.
	refused(f.request(f.eligible(3, 5), ""), "at most 3 devices", "X-MS-CLIENT-PRINCIPAL-ID", "0b5c4f1e-0000-4000-8000-00000000beef")
	assert.Eventually(t, func() bool { return strings.Contains(w.logs.String(), `"principal_header":"untrusted`) }, 5*time.Second, 20*time.Millisecond,
		"the audit line says the header was not trusted")
	// A key with its own rule.
	reply, b = hostPost(t, w.url+"/api/remediate", f.request(f.eligible(3, 5), ""), "x-functions-key", "TEAM-B-KEY")
	assert.Equal(t, 200, reply.StatusCode, "another caller's own rule: %s", b)
	refused(f.request(f.eligible(8, 4), ""), "at most 3 devices", "x-functions-key", "TEAM-C-KEY")
}

// peakRSS is a process's peak resident memory (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestHostileInputStaysBounded: four concurrent 1 MiB bodies of empty
// device objects, each with its own Idempotency-Key, are answered 400 in
// a few kilobytes each, and the process stays under 256 MB (the race
// detector, which multiplies memory, is allowed four times that).
func TestHostileInputStaysBounded(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 50, intunesim.Options{})
	w := startWorker(t, f.env("MAX_DEVICES_PER_RUN=1000000")...)
	n := (1<<20 - 100) / len(`{},`)
	body := `{"managed_devices":[` + strings.Repeat(`{},`, n-1) + `{}]}`
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			reply, b := hostPost(t, w.url+"/api/remediate", body, "Idempotency-Key", fmt.Sprintf("hostile-%d", i))
			assert.Equal(t, 400, reply.StatusCode)
			assert.Less(t, len(b), 64<<10, "a bounded answer")
		})
	}
	wg.Wait()
	limit := int64(256 << 20)
	if raceEnabled {
		limit *= 4
	}
	peak := peakRSS(t, w.cmd.Process.Pid)
	t.Logf("peak resident memory: %d MB", peak>>20)
	assert.Less(t, peak, limit)
}

// TestHostileGraphCannotTakeMemory: through the built binary, a Graph
// whose device list never ends and whose script answer is a small gzip
// that inflates to 16 MB: the run is refused (MAX_LISTED_DEVICES,
// GRAPH_MAX_RESPONSE_MB), nothing is triggered, and the process stays
// small.
func TestHostileGraphCannotTakeMemory(t *testing.T) {
	t.Parallel()
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	_, _ = zw.Write([]byte(`{"id":"` + strings.Repeat("x", 16<<20) + `"}`))
	_ = zw.Close()
	var srv *httptest.Server
	var triggers atomic.Int64
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost:
			triggers.Add(1)
			w.WriteHeader(http.StatusNoContent)
		case strings.Contains(r.URL.Path, "deviceHealthScripts"):
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(bomb.Bytes())
		default:
			n, _ := strconv.Atoi(r.URL.Query().Get("page"))
			devs := make([]map[string]any, 1000)
			for i := range devs {
				devs[i] = map[string]any{"id": fmt.Sprintf("00000000-0000-4000-8000-%012d", n*1000+i), "operatingSystem": "Windows",
					"joinType": "azureADJoined", "managementState": "managed", "lastSyncDateTime": time.Now().UTC().Format(time.RFC3339)}
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"value": devs, "@odata.count": 1 << 30,
				"@odata.nextLink": fmt.Sprintf("%s/beta/deviceManagement/managedDevices?page=%d", srv.URL, n+1)})
		}
	}))
	t.Cleanup(srv.Close)
	w := startWorker(t, "GRAPH_BASE_URL="+srv.URL+"/beta", "GRAPH_AUTH=none", "GRAPH_READ_RATE=100000", "MAX_LISTED_DEVICES=20000",
		"MAX_DEVICES_PER_RUN=1000000", "GRAPH_MAX_RESPONSE_MB=4")
	script := "87654321-4321-4321-4321-ba9876543210"

	reply, b := hostPost(t, w.url+"/api/remediate", `{"targets":[{"script_policy_id":"`+script+`","filter":"operatingSystem eq 'Windows'"}],"validate_device_exists":false,"dry_run":true}`)
	assert.Equal(t, 422, reply.StatusCode, "%s", b)
	assert.Contains(t, string(b), "MAX_LISTED_DEVICES")

	reply, b = hostPost(t, w.url+"/api/remediate", `{"managed_devices":[{"device_id":"12345678-1234-1234-1234-123456789abc","script_policy_id":"`+script+`"}]}`)
	assert.Contains(t, []int{422, 503}, reply.StatusCode, "%s", b)
	assert.Contains(t, string(b), "larger than 4194304 bytes")
	assert.Zero(t, triggers.Load(), "nothing triggered")
	limit := int64(256 << 20)
	if raceEnabled {
		limit *= 4
	}
	assert.Less(t, peakRSS(t, w.cmd.Process.Pid), limit)
}
