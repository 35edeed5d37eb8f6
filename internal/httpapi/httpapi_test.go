package httpapi

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/testing/simgraph"
)

// simulated starts a simulated tenant of devices and returns a Graph
// client for it.
func simulated(t testing.TB, devices int) (*simgraph.Client, *intunesim.Running, *intunesim.Tenant) {
	t.Helper()
	tenant := intunesim.Generate(8, intunesim.GenerateOptions{Devices: devices})
	sim, err := intunesim.Start(intunesim.New(tenant, intunesim.Options{}), "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sim.Close() })
	gc := simgraph.New(sim.URL, 0)
	return gc, sim, tenant
}

// newAPI returns the API over a real engine and a simulated tenant.
func newAPI(t testing.TB, opts app.Options) (*API, *intunesim.Running, *intunesim.Tenant) {
	t.Helper()
	gc, sim, tenant := simulated(t, 200)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	return New(app.New(remediate.New(gc, pace.New(1000, 1000), remediate.Config{}, log), opts, log), Options{}, log), sim, tenant
}

// setup serves newAPI on loopback.
func setup(t *testing.T) (*httptest.Server, *intunesim.Running, *intunesim.Tenant) {
	t.Helper()
	api, sim, tenant := newAPI(t, app.Options{Limits: remediate.Limits{MaxDevices: 50}})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return srv, sim, tenant
}

// call serves one request in-process: method and target (a path, with
// host app.example), body, and header pairs.
func call(h http.Handler, method, target, body string, header ...string) (int, http.Header, []byte) {
	req := httptest.NewRequest(method, "https://app.example"+target, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := Record(h, req)
	h2 := http.Header{}
	for k, v := range rec.Headers() {
		h2.Set(k, v)
	}
	return rec.Status, h2, rec.Body.Bytes()
}

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url+"/api/remediate", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return resp.StatusCode, m
}

func target(id, script string) string {
	return fmt.Sprintf(`{"device_id":%q,"script_policy_id":%q}`, id, script)
}

func TestStatusCodes(t *testing.T) {
	srv, sim, tenant := setup(t)
	sc := tenant.RemediationScript().ID
	win := tenant.Windows(false)
	var ok []string
	for _, d := range win {
		if !d.CoManaged && d.JoinType != "azureADRegistered" && len(ok) < 3 {
			ok = append(ok, target(d.ID, sc))
		}
	}
	mac := target(tenant.NonWindows()[0].ID, sc)

	status, body := post(t, srv.URL, `{"managed_devices":[`+strings.Join(ok, ",")+`]}`)
	assert.Equal(t, 200, status)
	assert.Equal(t, "succeeded", body["status"])
	assert.EqualValues(t, 3, body["counts"].(map[string]any)["succeeded"])

	status, body = post(t, srv.URL, `{"managed_devices":[`+ok[0]+`,`+mac+`]}`)
	assert.Equal(t, 422, status, "device validation failed, nothing triggered")
	assert.Equal(t, "rejected", body["status"])
	assert.Equal(t, "device_validation_failed", body["error"].(map[string]any)["code"])

	status, body = post(t, srv.URL, `{"managed_devices":[`+ok[0]+`,`+mac+`],"validate_device_exists":false}`)
	assert.Equal(t, 424, status, "a device failed and partial failures are not ignored")
	assert.Equal(t, "partially_succeeded", body["status"])

	status, _ = post(t, srv.URL, `{"managed_devices":[`+ok[0]+`,`+mac+`],"validate_device_exists":false,"ignore_partial_failures":true}`)
	assert.Equal(t, 200, status)

	status, body = post(t, srv.URL, `{"managed_devices":[{"device_id":"x","script_policy_id":"`+sc+`"}],"dry_runn":true}`)
	assert.Equal(t, 400, status)
	e := body["error"].(map[string]any)
	assert.Equal(t, "invalid_request", e["code"])
	fields := []string{}
	for _, d := range e["details"].([]any) {
		fields = append(fields, d.(map[string]any)["field"].(string))
	}
	assert.Equal(t, []string{"dry_runn"}, fields, "unknown fields are reported before anything else")

	status, body = post(t, srv.URL, `{"managed_devices":[{"device_id":"x","script_policy_id":"`+sc+`"}]}`)
	assert.Equal(t, 400, status)
	assert.Equal(t, "managed_devices[0].device_id", body["error"].(map[string]any)["details"].([]any)[0].(map[string]any)["field"])

	var many []string
	for i := range 51 {
		many = append(many, target(fmt.Sprintf("00000000-0000-4000-8000-%012d", i), sc))
	}
	status, _ = post(t, srv.URL, `{"managed_devices":[`+strings.Join(many, ",")+`]}`)
	assert.Equal(t, 400, status, "MAX_DEVICES_PER_RUN")

	big := `{"managed_devices":[` + strings.Repeat(ok[0]+",", MaxBody/len(ok[0])) + ok[0] + `]}`
	status, body = post(t, srv.URL, big)
	assert.Equal(t, 413, status)
	assert.Equal(t, "request_too_large", body["error"].(map[string]any)["code"])

	resp, err := http.Get(srv.URL + "/api/remediate")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 405, resp.StatusCode)
	assert.Equal(t, "POST", resp.Header.Get("Allow"))

	assert.Equal(t, 3+1+1, sim.Counters().Triggers, "only the runs that were allowed triggered")
}

func TestNeverA5xxForDeviceFailures(t *testing.T) {
	srv, sim, tenant := setup(t)
	sc := tenant.RemediationScript().ID
	var devs []string
	for _, d := range tenant.Windows(false)[:10] {
		sim.InjectFault(d.ID, intunesim.Fault{Kind: intunesim.Fault500, Method: "POST"})
		devs = append(devs, target(d.ID, sc))
	}
	status, body := post(t, srv.URL, `{"managed_devices":[`+strings.Join(devs, ",")+`],"validate_device_exists":false}`)
	assert.Equal(t, 424, status)
	assert.Equal(t, "failed", body["status"])
}

// TestProblemsAreCapped: a 1 MiB body of empty device objects has two
// problems per device; the answer lists the first hundred and says how
// many there are, in a few kilobytes rather than ninety megabytes.
func TestProblemsAreCapped(t *testing.T) {
	t.Parallel()
	api, _, _ := newAPI(t, app.Options{Limits: remediate.Limits{MaxDevices: 1_000_000}})
	n := (MaxBody - 100) / len(`{},`)
	body := `{"managed_devices":[` + strings.Repeat(`{},`, n-1) + `{}]}`
	require.Less(t, len(body), MaxBody)
	status, _, out := call(api.Handler(), "POST", "/api/remediate", body)
	assert.Equal(t, 400, status)
	assert.Less(t, len(out), 64<<10, "the answer stays small")
	var e ErrorResponse
	require.NoError(t, json.Unmarshal(out, &e))
	assert.Len(t, e.Error.Details, remediate.MaxProblems)
	assert.Contains(t, e.Error.Message, fmt.Sprintf("%d in all", 2*n))
}

// TestEveryAnswerFits: a summary larger than MaxAnswerBytes leaves out the
// devices that succeeded (counted in omitted_devices) and lists every
// other one; a run whose devices could not all be listed is refused
// before anything is triggered when there is no run storage.
func TestEveryAnswerFits(t *testing.T) {
	t.Parallel()
	gc, sim, tenant := simulated(t, 300)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	const max = 100 * app.MinDeviceBytes
	svc := app.New(remediate.New(gc, pace.New(1000, 1000), remediate.Config{}, log), app.Options{MaxAnswerBytes: max}, log)
	h := New(svc, Options{MaxAnswerBytes: max}, log).Handler()
	sc := tenant.RemediationScript().ID
	var devs []string
	for _, d := range tenant.Windows(false) {
		if !d.CoManaged && d.JoinType != "azureADRegistered" && len(devs) < 90 {
			devs = append(devs, target(d.ID, sc))
		}
	}
	mac := target(tenant.NonWindows()[0].ID, sc)
	body := `{"managed_devices":[` + strings.Join(append(devs, mac), ",") + `],"ignore_partial_failures":true}`
	status, _, out := call(h, "POST", "/api/remediate", body)
	require.Equal(t, 200, status, "%s", out)
	assert.LessOrEqual(t, len(out), max+1, "the answer fits")
	var s remediate.Summary
	require.NoError(t, json.Unmarshal(out, &s))
	assert.Equal(t, 91, s.Counts.Total, "counts cover every device")
	assert.Equal(t, 90, s.OmittedDevices)
	require.Len(t, s.Devices, 1, "the device that did not succeed is listed")
	assert.Equal(t, remediate.ReasonNotWindows, s.Devices[0].Reason)

	triggers := sim.Counters().Triggers
	var many []string
	for _, d := range tenant.Windows(false)[:101] {
		many = append(many, target(d.ID, sc))
	}
	status, _, out = call(h, "POST", "/api/remediate", `{"managed_devices":[`+strings.Join(many, ",")+`],"validate_device_exists":false}`)
	assert.Equal(t, 422, status, "%s", out)
	assert.Contains(t, string(out), "answer_too_large")
	assert.Equal(t, triggers, sim.Counters().Triggers, "never started blind")
}
