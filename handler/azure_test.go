package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/azure"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/remediate"
)

// binary is the handler the tests run as the hosts do: this test binary
// itself, which runs main when runMain is in its environment. Nothing is
// built a second time.
var binary string

// runMain in a child's environment makes the test binary the handler.
const runMain = "REMEDIATOR_TEST_RUN_MAIN=1"

// quickExit spares a race-enabled child the race detector's one-second
// sleep at exit.
const quickExit = "GORACE=atexit_sleep_ms=0"

func TestMain(m *testing.M) {
	if os.Getenv("REMEDIATOR_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	binary = os.Args[0]
	os.Exit(m.Run())
}

// syncBuffer collects a process's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type worker struct {
	url  string
	cmd  *exec.Cmd
	logs *syncBuffer
	// exited is closed when the process has exited, with err its exit.
	exited chan struct{}
	err    error
}

// wait waits for the process to exit and returns how it exited.
func (w *worker) wait() error {
	<-w.exited
	return w.err
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// startWorker starts the binary the way the Functions host does and waits,
// polling GET / every 25 ms as the host does, until it answers.
func startWorker(t testing.TB, env ...string) *worker {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(binary)
	cmd.Env = append([]string{runMain, quickExit, "PATH=" + os.Getenv("PATH"), "FUNCTIONS_CUSTOMHANDLER_PORT=" + port, "FUNCTIONS_HTTPWORKER_PORT=" + port,
		"FUNCTIONS_CUSTOMHANDLER_WORKER_ID=" + "3f9c5a2e-0000-4000-8000-000000000001", "FUNCTIONS_APP_ROOT_PATH=" + t.TempDir()}, env...)
	w := &worker{url: "http://127.0.0.1:" + port, cmd: cmd, logs: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = w.logs, w.logs
	require.NoError(t, cmd.Start())
	go func() { w.err = cmd.Wait(); close(w.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.exited: // a stopped worker's exit status is not what the test checks
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(w.url + "/")
		if err == nil {
			resp.Body.Close()
			return w
		}
		select {
		case <-w.exited:
			t.Fatalf("the worker exited before answering: %v\n%s", w.err, w.logs.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "worker not up in 30 s:\n%s", w.logs.String())
		time.Sleep(25 * time.Millisecond)
	}
}

type tenantFixture struct {
	sim    *intunesim.Running
	tenant *intunesim.Tenant
	script string
}

func newTenant(t testing.TB, devices int, opts intunesim.Options) *tenantFixture {
	t.Helper()
	tenant := intunesim.Generate(99, intunesim.GenerateOptions{Devices: devices})
	sim, err := intunesim.Start(intunesim.New(tenant, opts), "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sim.Close() })
	return &tenantFixture{sim: sim, tenant: tenant, script: tenant.RemediationScript().ID}
}

func (f *tenantFixture) env(extra ...string) []string {
	return append([]string{"GRAPH_BASE_URL=" + f.sim.URL, "GRAPH_AUTH=none", "GRAPH_WRITE_RATE=2000", "GRAPH_READ_RATE=100000",
		"DEVICE_COOLDOWN=0"}, extra...)
}

func (f *tenantFixture) eligible(from, n int) []intunesim.Device {
	var out []intunesim.Device
	for _, d := range f.tenant.Windows(false) {
		if !d.CoManaged && d.JoinType != "azureADRegistered" {
			out = append(out, d)
		}
	}
	return out[from : from+n]
}

func (f *tenantFixture) request(devs []intunesim.Device, extra string) string {
	var items []string
	for _, d := range devs {
		items = append(items, fmt.Sprintf(`{"device_id":%q,"script_policy_id":%q}`, d.ID, f.script))
	}
	return `{"managed_devices":[` + strings.Join(items, ",") + `]` + extra + `}`
}

// hostReply is what a test needs of an answer (the body is read and closed).
type hostReply struct {
	StatusCode int
	Header     http.Header
}

func hostPost(t testing.TB, url, body string, headers ...string) (hostReply, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Azure-Functions-InvocationId", "c8c0b4f4-5a55-4c2e-8e0f-5f8e6a1f2b01")
	req.Header.Set("X-Azure-Functions-HostVersion", "4.1052.0")
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1052.0")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return hostReply{resp.StatusCode, resp.Header}, b
}

func summaryOf(t testing.TB, b []byte) remediate.Summary {
	t.Helper()
	var s remediate.Summary
	require.NoError(t, json.Unmarshal(b, &s), "%s", b)
	return s
}

func TestAzureForwardedHTTPAndAudit(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 300, intunesim.Options{})
	w := startWorker(t, f.env()...)
	devs := f.eligible(0, 5)
	resp, b := hostPost(t, w.url+"/api/remediate?code=FUNCTION-KEY-SECRET", f.request(devs, ""),
		"x-functions-key", "FUNCTION-KEY-SECRET", "Authorization", "Bearer TOKEN-SECRET", "X-MS-CLIENT-PRINCIPAL-NAME", "alex@contoso.com")
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	s := summaryOf(t, b)
	assert.Equal(t, 5, s.Counts.Succeeded)
	for _, d := range devs {
		assert.Equal(t, 1, f.sim.TriggerCount(d.ID, f.script))
	}

	resp, b = hostPost(t, w.url+"/api/remediate", `{"managed_devices":[{"device_id":"x"}]}`)
	assert.Equal(t, 400, resp.StatusCode)
	assert.Contains(t, string(b), "managed_devices[0].device_id")

	require.Eventually(t, func() bool { return strings.Count(w.logs.String(), `"msg":"invocation"`) == 2 }, 5*time.Second, 20*time.Millisecond)
	var audit map[string]any
	for _, l := range strings.Split(w.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"invocation"`) {
			require.NoError(t, json.Unmarshal([]byte(l), &audit))
			break
		}
	}
	assert.Equal(t, "c8c0b4f4-5a55-4c2e-8e0f-5f8e6a1f2b01", audit["invocation_id"])
	assert.Equal(t, "remediate", audit["function"])
	assert.Equal(t, azure.KeyCaller("FUNCTION-KEY-SECRET"), audit["caller"], "the key the host admitted is the caller, never the key itself")
	assert.Contains(t, audit["principal_header"], "untrusted", "a principal header nothing vouches for is named as such")
	assert.NotContains(t, w.logs.String(), "alex@contoso.com", "and never recorded as the caller")
	assert.Equal(t, []any{f.script}, audit["script_ids"])
	assert.EqualValues(t, 5, audit["succeeded"])
	assert.Equal(t, s.RunID, audit["run_id"])
	for _, secret := range []string{"FUNCTION-KEY-SECRET", "TOKEN-SECRET"} {
		assert.NotContains(t, w.logs.String(), secret, "no secret in any log line")
		assert.NotContains(t, string(b), secret)
	}
}

// payloadBody fills the documented HTTP-trigger payload sample with body.
func payloadBody(t *testing.T, body string) string {
	t.Helper()
	raw, err := os.ReadFile("../testdata/azure/http_payload.json")
	require.NoError(t, err)
	enc, _ := json.Marshal(body)
	return strings.NewReplacer(`"{{BODY}}"`, string(enc), "{{KEY}}", "PAYLOAD-KEY-SECRET").Replace(string(raw))
}

type hostAnswer struct {
	Outputs struct {
		Res struct {
			StatusCode int               `json:"statusCode"`
			Headers    map[string]string `json:"headers"`
			Body       string            `json:"body"`
		} `json:"res"`
	} `json:"Outputs"`
	Logs        []string        `json:"Logs"`
	ReturnValue json.RawMessage `json:"ReturnValue"`
}

func TestAzurePayloadModeHTTP(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 300, intunesim.Options{})
	w := startWorker(t, f.env()...)
	devs := f.eligible(0, 3)
	resp, b := hostPost(t, w.url+"/remediate", payloadBody(t, f.request(devs, "")))
	require.Equal(t, 200, resp.StatusCode)
	var a hostAnswer
	require.NoError(t, json.Unmarshal(b, &a), "%s", b)
	assert.Equal(t, 200, a.Outputs.Res.StatusCode)
	assert.Equal(t, "application/json", a.Outputs.Res.Headers["Content-Type"])
	s := summaryOf(t, []byte(a.Outputs.Res.Body))
	assert.Equal(t, 3, s.Counts.Succeeded)
	assert.Equal(t, "null", string(a.ReturnValue))

	// A bad request is the caller's 400, and still a 2xx to the host.
	resp, b = hostPost(t, w.url+"/remediate", payloadBody(t, `{"managed_devices":"all"}`))
	require.Equal(t, 200, resp.StatusCode)
	require.NoError(t, json.Unmarshal(b, &a))
	assert.Equal(t, 400, a.Outputs.Res.StatusCode)
	assert.NotContains(t, w.logs.String(), "PAYLOAD-KEY-SECRET")

	// The documented form with Query as a string and no Body (chunked upload).
	doc := `{"Data":{"req":{"Url":"http://localhost:7071/api/remediate","Method":"POST","Query":"{}","Headers":{},"Params":{}}},"Metadata":{}}`
	resp, b = hostPost(t, w.url+"/remediate", doc)
	require.Equal(t, 200, resp.StatusCode)
	require.NoError(t, json.Unmarshal(b, &a))
	assert.Equal(t, 400, a.Outputs.Res.StatusCode, "%s", a.Outputs.Res.Body)

	// A run's status in payload mode: the route is the caller's URL, read
	// by the one route table (this worker keeps no runs: the status
	// route's own 404, not a missing route's).
	status := `{"Data":{"req":{"Url":"https://app.example/api/remediate/runs/0123456789abcdef01234567?code=k","Method":"GET","Query":{},"Headers":{},"Params":{"rest":"runs/0123456789abcdef01234567"}}},"Metadata":{}}`
	resp, b = hostPost(t, w.url+"/remediate", status)
	require.Equal(t, 200, resp.StatusCode)
	require.NoError(t, json.Unmarshal(b, &a))
	assert.Equal(t, 404, a.Outputs.Res.StatusCode)
	assert.Contains(t, a.Outputs.Res.Body, "keeps no runs", "served by the status route")
}

func TestAzureTimer(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 300, intunesim.Options{})
	devs := f.eligible(0, 4)
	w := startWorker(t, f.env("REMEDIATION_SCHEDULE=0 0 6 * * 1-5", "SCHEDULED_REQUEST="+f.request(devs, `,"ignore_partial_failures":true`))...)
	for i, name := range []string{"timer_payload.json", "timer_payload_null_status.json", "timer_payload_fractional.json"} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile("../testdata/azure/" + name)
			require.NoError(t, err)
			resp, b := hostPost(t, w.url+"/schedule", string(raw))
			require.Equal(t, 200, resp.StatusCode, "%s", b)
			var a hostAnswer
			require.NoError(t, json.Unmarshal(b, &a))
			require.Len(t, a.Logs, 2)
			assert.Contains(t, a.Logs[0], "succeeded (HTTP 200): 4 devices, 4 succeeded")
			s := summaryOf(t, a.ReturnValue)
			assert.Equal(t, 4, s.Counts.Succeeded)
			for _, d := range devs {
				assert.Equal(t, i+1, f.sim.TriggerCount(d.ID, f.script))
			}
		})
	}
	assert.Contains(t, w.logs.String(), `"past_due":true`)
}

func alertBody(t *testing.T, name string, devs ...intunesim.Device) string {
	t.Helper()
	raw, err := os.ReadFile("../testdata/alerts/" + name)
	require.NoError(t, err)
	r := strings.NewReplacer("{{DEVICE_1}}", devs[0].ID, "{{DEVICE_2}}", devs[1].ID, "{{SCRIPT}}", devs[2].ID)
	return r.Replace(string(raw))
}

func TestAzureAlerts(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 300, intunesim.Options{})
	w := startWorker(t, f.env()...)
	devs := f.eligible(0, 2)
	script := intunesim.Device{ID: f.script}
	d := append(devs, script)

	resp, b := hostPost(t, w.url+"/api/alert", alertBody(t, "log_alert_v2_fired.json", d...))
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	s := summaryOf(t, b)
	assert.Equal(t, 1, s.Counts.Succeeded)
	assert.Equal(t, devs[0].ID, s.Devices[0].DeviceID)
	assert.Equal(t, 1, f.sim.TriggerCount(devs[0].ID, f.script))

	resp, b = hostPost(t, w.url+"/api/alert", alertBody(t, "log_alert_v2_fired.json", d...))
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get("Idempotent-Replayed"), "a re-sent alert is replayed")
	assert.Equal(t, s.RunID, summaryOf(t, b).RunID)
	assert.Equal(t, 1, f.sim.TriggerCount(devs[0].ID, f.script), "and triggers nothing again")

	resp, b = hostPost(t, w.url+"/api/alert", alertBody(t, "log_alert_v2_resolved.json", d...))
	require.Equal(t, 200, resp.StatusCode)
	assert.Contains(t, string(b), `"status":"ignored"`)

	resp, b = hostPost(t, w.url+"/api/alert?script_policy_id="+f.script, alertBody(t, "log_alert_legacy_search_results.json", d...))
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	assert.Equal(t, 2, summaryOf(t, b).Counts.Total)
	assert.Equal(t, 2, f.sim.TriggerCount(devs[0].ID, f.script))

	resp, b = hostPost(t, w.url+"/api/alert", alertBody(t, "log_alert_v2_no_device.json", d...))
	assert.Equal(t, 422, resp.StatusCode)
	assert.Contains(t, string(b), "names no device")

	// The host invokes the alert function with the URL its route matched.
	toAlert := strings.NewReplacer("/api/remediate", "/api/alert")
	resp, b = hostPost(t, w.url+"/alert", toAlert.Replace(payloadBody(t, alertBody(t, "log_alert_v2_custom_properties.json", d...))))
	require.Equal(t, 200, resp.StatusCode)
	var a hostAnswer
	require.NoError(t, json.Unmarshal(b, &a))
	assert.Equal(t, 200, a.Outputs.Res.StatusCode, "%s", a.Outputs.Res.Body)
	assert.Equal(t, 2, summaryOf(t, []byte(a.Outputs.Res.Body)).Counts.Succeeded)
}

// TestAzureShutdownMidRun sends SIGTERM while a run is triggering: the run
// stops starting triggers, answers with every device accounted for, and the
// worker exits cleanly.
func TestAzureShutdownMidRun(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 600, intunesim.Options{})
	w := startWorker(t, f.env("GRAPH_WRITE_RATE=40")...)
	devs := f.eligible(0, 200)
	type result struct {
		status int
		body   []byte
	}
	got := make(chan result, 1)
	go func() {
		resp, b := hostPost(t, w.url+"/api/remediate", f.request(devs, ""))
		got <- result{resp.StatusCode, b}
	}()
	require.Eventually(t, func() bool { return f.sim.Counters().Triggers >= 20 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	r := <-got
	assert.Equal(t, 424, r.status)
	s := summaryOf(t, r.body)
	require.Len(t, s.Devices, 200)
	assert.Equal(t, 200, s.Counts.Succeeded+s.Counts.NotAttempted+s.Counts.Failed)
	assert.Greater(t, s.Counts.NotAttempted, 100)
	for _, d := range s.Devices {
		n := f.sim.TriggerCount(d.DeviceID, f.script)
		switch d.Outcome {
		case remediate.Succeeded:
			assert.Equal(t, 1, n)
		case remediate.NotAttempted:
			assert.Equal(t, remediate.ReasonCanceled, d.Reason)
			assert.Zero(t, n)
		default:
			t.Errorf("device %s: %s %s", d.DeviceID, d.Outcome, d.Message)
		}
	}
	select {
	case <-w.exited:
		assert.NoError(t, w.err, "clean exit")
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not exit after SIGTERM")
	}
}

func TestAzureConfigurationErrorsStopTheWorker(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binary)
	cmd.Env = []string{runMain, quickExit, "FUNCTIONS_CUSTOMHANDLER_PORT=" + freePort(t), "GRAPH_AUTH=none",
		"MAX_CONCURRENCY=@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/c)", "SCHEDULED_REQUEST={}"}
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	msg := string(out)
	assert.Contains(t, msg, "GRAPH_AUTH")
	assert.Contains(t, msg, "MAX_CONCURRENCY: is an unresolved Key Vault reference")
	assert.Contains(t, msg, "REMEDIATION_SCHEDULE")

	cmd = exec.Command(binary)
	cmd.Env = []string{runMain, quickExit, "FUNCTIONS_CUSTOMHANDLER_PORT=" + freePort(t), "GRAPH_BASE_URL=http://127.0.0.1:9/beta", "GRAPH_AUTH=none",
		"REMEDIATION_SCHEDULE=0 0 6 * * *", `SCHEDULED_REQUEST={"managed_devices":[{"device_id":"nope"}]}`}
	out, err = cmd.CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "scheduled request")
	assert.Contains(t, string(out), "managed_devices[0].device_id")
}

// TestAzureLoad runs 50 concurrent remediate invocations of 16 devices
// each through one worker: every invocation is answered, every device is
// triggered exactly once, and the process-wide write pace keeps the
// simulator from ever throttling. The pace is half the compressed ceiling:
// worker, simulator, clients and other packages' tests share two cores
// here, and requests paced evenly by the worker arrive bunched (by up to
// 2x in a quarter-second window under the race detector; a one-second
// window evens that out).
func TestAzureLoad(t *testing.T) {
	const invocations, perInvocation = 50, 16
	const limit, window = 800, time.Second // a ceiling of 800 writes/s
	f := newTenant(t, 9000, intunesim.Options{WriteLimit: limit, Window: window, ReadLimit: 100000})
	w := startWorker(t, f.env("GRAPH_WRITE_RATE=400", "MAX_CONCURRENCY=16")...)
	var wg sync.WaitGroup
	statuses := make([]int, invocations)
	summaries := make([]remediate.Summary, invocations)
	for i := range invocations {
		wg.Go(func() {
			resp, b := hostPost(t, w.url+"/api/remediate", f.request(f.eligible(i*perInvocation, perInvocation), ""))
			statuses[i] = resp.StatusCode
			summaries[i] = summaryOf(t, b)
		})
	}
	wg.Wait()
	for i := range invocations {
		assert.Equal(t, 200, statuses[i], "invocation %d", i)
		assert.Equal(t, perInvocation, summaries[i].Counts.Succeeded, "invocation %d", i)
		for _, d := range summaries[i].Devices {
			assert.Equal(t, 1, f.sim.TriggerCount(d.DeviceID, f.script))
		}
	}
	c := f.sim.Counters()
	assert.Equal(t, invocations*perInvocation, c.Triggers)
	assert.Zero(t, c.Throttled, "the shared pace kept every window under the limit")
	var writes []time.Time
	for _, r := range f.sim.Records() {
		if r.Method == "POST" && strings.HasSuffix(r.Path, "initiateOnDemandProactiveRemediation") {
			writes = append(writes, r.Time)
		}
	}
	slices.SortFunc(writes, func(a, b time.Time) int { return a.Compare(b) })
	most, j := 0, 0
	for i := range writes {
		for j < len(writes) && writes[j].Sub(writes[i]) < window {
			j++
		}
		most = max(most, j-i)
	}
	assert.LessOrEqual(t, most, limit)
}

// TestSlowRequestsAndIdleConnectionsAreClosed: a body trickled a byte at a
// time is cut off at HTTP_READ_TIMEOUT, and an idle keep-alive connection
// is closed at HTTP_IDLE_TIMEOUT, through the built binary.
func TestSlowRequestsAndIdleConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 50, intunesim.Options{})
	w := startWorker(t, f.env("HTTP_READ_TIMEOUT=1s", "HTTP_IDLE_TIMEOUT=1s")...)
	addr := strings.TrimPrefix(w.url, "http://")

	slow, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer func() { _ = slow.Close() }()
	_, err = fmt.Fprintf(slow, "POST /api/remediate HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", addr)
	require.NoError(t, err)
	started := time.Now()
	closed := false
	for time.Since(started) < 10*time.Second {
		if _, err := slow.Write([]byte(" ")); err != nil {
			closed = true
			break
		}
		_ = slow.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := slow.Read(make([]byte, 1024)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			closed = true // answered (408/400) or closed
			break
		}
	}
	assert.True(t, closed, "a trickled body is cut off")
	assert.Less(t, time.Since(started), 5*time.Second, "within about HTTP_READ_TIMEOUT")

	idle, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer func() { _ = idle.Close() }()
	_, err = fmt.Fprintf(idle, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	require.NoError(t, err)
	_ = idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := idle.Read(buf)
	require.NoError(t, err)
	assert.Contains(t, string(buf[:n]), "200 OK")
	started = time.Now()
	for err == nil {
		_, err = idle.Read(buf)
	}
	assert.Less(t, time.Since(started), 5*time.Second, "the idle connection was closed: %v", err)
}
