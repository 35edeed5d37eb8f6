package intunesim

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// start runs a simulator on loopback for the test.
func start(t testing.TB, tenant *Tenant, opts Options) *Running {
	t.Helper()
	r, err := Start(New(tenant, opts), "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

func do(t testing.TB, method, url string, body []byte, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return reply{resp.StatusCode, resp.Header, b}
}

func triggerURL(base, coll, id string) string {
	return base + "/deviceManagement/" + coll + "/" + id + "/initiateOnDemandProactiveRemediation"
}

func scriptBody(id string) []byte { return []byte(`{"scriptPolicyId":"` + id + `"}`) }

func TestGenerateIsDeterministicAndRealistic(t *testing.T) {
	ref := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	a := Generate(42, GenerateOptions{Devices: 2000, Now: ref})
	b := Generate(42, GenerateOptions{Devices: 2000, Now: ref})
	c := Generate(43, GenerateOptions{Devices: 2000, Now: ref})
	require.Equal(t, a, b, "same seed and clock, same tenant")
	require.NotEqual(t, a.Devices[0].ID, c.Devices[0].ID, "another seed, another tenant")

	windows, co, registered, stale := 0, 0, 0, 0
	names := map[string]int{}
	for _, d := range a.Devices {
		names[d.DeviceName]++
		if d.OperatingSystem == "Windows" {
			windows++
		}
		if d.CoManaged {
			co++
			assert.Equal(t, "Windows", d.OperatingSystem)
		}
		if d.JoinType == "azureADRegistered" {
			registered++
		}
		if ref.Sub(d.LastSyncDateTime) > 30*24*time.Hour {
			stale++
		}
	}
	dupes := 0
	for _, n := range names {
		if n > 1 {
			dupes++
		}
	}
	assert.InDelta(t, 0.70, float64(windows)/2000, 0.05)
	assert.Greater(t, co, 100)
	assert.Greater(t, registered, 10)
	assert.InDelta(t, 0.08, float64(stale)/2000, 0.03)
	assert.Greater(t, dupes, 5)
	assert.Len(t, a.Scripts, 5)
	assert.Equal(t, "managedInstallerScript", a.Scripts[4].ScriptType)
	assert.NotEmpty(t, a.RemediationScript().ID)
}

// sameShape checks that every property the simulator emits is documented
// in sample, with the same JSON type.
func sameShape(t *testing.T, sample, got map[string]any, extra ...string) {
	t.Helper()
	allowed := map[string]bool{"@odata.context": true}
	for _, e := range extra {
		allowed[e] = true
	}
	for k, v := range got {
		if allowed[k] {
			continue
		}
		sv, ok := sample[k]
		if !assert.True(t, ok, "property %q is not in the documented sample", k) {
			continue
		}
		assert.IsType(t, sv, v, "property %q", k)
	}
	for _, k := range []string{"@odata.type", "id"} {
		assert.Contains(t, got, k)
	}
}

func loadSample(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func TestEndpointShapesMatchDocumentedSamples(t *testing.T) {
	tenant := Generate(1, GenerateOptions{Devices: 50})
	sim := start(t, tenant, Options{RunStateDelay: time.Millisecond})
	d := tenant.Windows(false)[0]
	sc := tenant.RemediationScript()

	r := do(t, "GET", sim.URL+"/deviceManagement/managedDevices/"+d.ID, nil)
	require.Equal(t, 200, r.status)
	assert.Equal(t, "application/json", r.header.Get("Content-Type"))
	assert.NotEmpty(t, r.header.Get("request-id"))
	assert.NotEmpty(t, r.header.Get("client-request-id"))
	dev := r.json(t)
	assert.NotContains(t, dev, "value", "single entities are never wrapped in value")
	// deviceActionResults is on the managedDevice resource page, not in
	// the GET sample.
	sameShape(t, loadSample(t, "managed_device_get.json")["value"].(map[string]any), dev, "deviceActionResults")
	assert.Equal(t, "#microsoft.graph.managedDevice", dev["@odata.type"])
	_, err := time.Parse(time.RFC3339, dev["lastSyncDateTime"].(string))
	assert.NoError(t, err)

	r = do(t, "GET", sim.URL+"/deviceManagement/deviceHealthScripts/"+sc.ID, nil)
	require.Equal(t, 200, r.status)
	sameShape(t, loadSample(t, "device_health_script_get.json")["value"].(map[string]any), r.json(t))

	r = do(t, "POST", triggerURL(sim.URL, "managedDevices", d.ID), scriptBody(sc.ID), "client-request-id", "abc-123")
	require.Equal(t, 204, r.status)
	assert.Empty(t, r.body)
	assert.Equal(t, "abc-123", r.header.Get("client-request-id"))
	time.Sleep(5 * time.Millisecond)

	r = do(t, "GET", sim.URL+"/deviceManagement/deviceHealthScripts/"+sc.ID+"/deviceRunStates", nil)
	require.Equal(t, 200, r.status)
	rows := r.json(t)["value"].([]any)
	require.Len(t, rows, 1)
	sample := loadSample(t, "device_run_states_list.json")["value"].([]any)[0].(map[string]any)
	sameShape(t, sample, rows[0].(map[string]any))

	r = do(t, "GET", sim.URL+"/deviceManagement/managedDevices/"+d.ID+"/deviceHealthScriptStates", nil)
	require.Equal(t, 200, r.status)
	rows = r.json(t)["value"].([]any)
	require.Len(t, rows, 1)
	sameShape(t, sample, rows[0].(map[string]any), "deviceId", "policyId", "deviceName", "policyName", "osVersion", "userName")
	assert.Equal(t, sc.ID, rows[0].(map[string]any)["policyId"])

	// OData key syntax used by many scripts.
	r = do(t, "GET", sim.URL+"/deviceManagement/managedDevices('"+d.ID+"')", nil)
	assert.Equal(t, 200, r.status)
}

func TestErrorBodies(t *testing.T) {
	tenant := Generate(1, GenerateOptions{Devices: 20})
	sim := start(t, tenant, Options{})
	r := do(t, "GET", sim.URL+"/deviceManagement/managedDevices/00000000-0000-0000-0000-000000000000", nil, "client-request-id", "c-1")
	require.Equal(t, 404, r.status)
	e := r.json(t)["error"].(map[string]any)
	assert.Equal(t, "ResourceNotFound", e["code"])
	inner := e["innerError"].(map[string]any)
	assert.Equal(t, r.header.Get("request-id"), inner["request-id"])
	assert.Equal(t, "c-1", inner["client-request-id"])
	assert.NotEmpty(t, inner["date"])

	// Intune variant: message is embedded JSON.
	r = do(t, "POST", triggerURL(sim.URL, "managedDevices", "00000000-0000-0000-0000-000000000000"), scriptBody(tenant.RemediationScript().ID))
	require.Equal(t, 404, r.status)
	msg := r.json(t)["error"].(map[string]any)["message"].(string)
	var embedded map[string]any
	require.NoError(t, json.Unmarshal([]byte(msg), &embedded), "message is JSON: %s", msg)
	assert.EqualValues(t, 3, embedded["_version"])
	assert.Contains(t, embedded["Message"], "Operation ID")
	sample := loadSample(t, "error_intune.json")["error"].(map[string]any)
	for k := range sample {
		assert.Contains(t, r.json(t)["error"], k)
	}
}

func TestTrigger(t *testing.T) {
	tenant := Generate(7, GenerateOptions{Devices: 300})
	sim := start(t, tenant, Options{})
	sc := tenant.RemediationScript().ID
	win := tenant.Windows(false)
	var plain, co Device
	for _, d := range win {
		if d.CoManaged && co.ID == "" {
			co = d
		}
		if !d.CoManaged && plain.ID == "" {
			plain = d
		}
	}
	mac := tenant.NonWindows()[0]

	tests := []struct {
		name   string
		coll   string
		id     string
		body   []byte
		status int
	}{
		{"managed device", "managedDevices", plain.ID, scriptBody(sc), 204},
		{"co-managed device via managedDevices", "managedDevices", co.ID, scriptBody(sc), 204},
		{"co-managed device via comanagedDevices", "comanagedDevices", co.ID, scriptBody(sc), 204},
		{"plain device via comanagedDevices", "comanagedDevices", plain.ID, scriptBody(sc), 404},
		{"unknown device", "managedDevices", "11111111-1111-4111-8111-111111111111", scriptBody(sc), 404},
		{"non-Windows device", "managedDevices", mac.ID, scriptBody(sc), 400},
		{"unknown script", "managedDevices", plain.ID, scriptBody("22222222-2222-4222-8222-222222222222"), 404},
		{"empty body", "managedDevices", plain.ID, []byte(``), 400},
		{"missing scriptPolicyId", "managedDevices", plain.ID, []byte(`{}`), 400},
		{"unknown parameter", "managedDevices", plain.ID, []byte(`{"scriptPolicyId":"` + sc + `","x":1}`), 400},
		{"wrong type", "managedDevices", plain.ID, []byte(`{"scriptPolicyId":5}`), 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "POST", triggerURL(sim.URL, tc.coll, tc.id), tc.body)
			assert.Equal(t, tc.status, r.status, "body: %s", r.body)
			if tc.status != 204 {
				assert.Equal(t, "application/json", r.header.Get("Content-Type"))
			}
		})
	}
	assert.Equal(t, 1, sim.TriggerCount(plain.ID, sc))
	assert.Equal(t, 2, sim.TriggerCount(co.ID, sc))
	assert.Equal(t, 0, sim.TriggerCount(mac.ID, sc))
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func TestGzipBodies(t *testing.T) {
	tenant := Generate(7, GenerateOptions{Devices: 30})
	d, sc := tenant.Windows(false)[0], tenant.RemediationScript().ID
	strict := start(t, tenant, Options{})
	r := do(t, "POST", triggerURL(strict.URL, "managedDevices", d.ID), gz(scriptBody(sc)), "Content-Encoding", "gzip")
	assert.Equal(t, 204, r.status, "gzip bodies are accepted")
	r = do(t, "POST", triggerURL(strict.URL, "managedDevices", d.ID), scriptBody(sc), "Content-Encoding", "gzip")
	assert.Equal(t, 400, r.status, "a plain body labelled gzip is rejected, as Graph does")
	assert.Contains(t, string(r.body), "Invalid Data")

	lenient := start(t, Generate(7, GenerateOptions{Devices: 30}), Options{LenientGzip: true})
	r = do(t, "POST", triggerURL(lenient.URL, "managedDevices", d.ID), scriptBody(sc), "Content-Encoding", "gzip")
	assert.Equal(t, 204, r.status)
}

func TestPagingFollowsAbsoluteNextLinks(t *testing.T) {
	tenant := Generate(3, GenerateOptions{Devices: 2500})
	sim := start(t, tenant, Options{})
	url := sim.URL + "/deviceManagement/managedDevices?$select=id,operatingSystem"
	seen := map[string]bool{}
	pages := 0
	for url != "" {
		r := do(t, "GET", url, nil)
		require.Equal(t, 200, r.status, "%s", r.body)
		body := r.json(t)
		assert.EqualValues(t, 2500, body["@odata.count"])
		for _, v := range body["value"].([]any) {
			m := v.(map[string]any)
			assert.Len(t, m, 2, "$select keeps only the selected properties")
			seen[m["id"].(string)] = true
		}
		pages++
		next, _ := body["@odata.nextLink"].(string)
		if next != "" {
			assert.True(t, strings.HasPrefix(next, "http://127.0.0.1:"), "nextLink is absolute: %s", next)
			assert.Contains(t, next, "$select=id,operatingSystem", "nextLink keeps the query")
		}
		url = next
	}
	assert.Equal(t, 3, pages, "1000 per page")
	assert.Len(t, seen, 2500, "every device exactly once")

	r := do(t, "GET", sim.URL+"/deviceManagement/managedDevices?$top=10", nil)
	assert.Len(t, r.json(t)["value"], 10)
	r = do(t, "GET", sim.URL+"/deviceManagement/managedDevices?$select=nosuch", nil)
	assert.Equal(t, 400, r.status)
}

func TestFilters(t *testing.T) {
	tenant := Generate(5, GenerateOptions{Devices: 400})
	count := func(pred func(Device) bool) int {
		n := 0
		for _, d := range tenant.Devices {
			if pred(d) {
				n++
			}
		}
		return n
	}
	all := len(tenant.Devices)
	windows := count(func(d Device) bool { return d.OperatingSystem == "Windows" })
	cut := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	recent := count(func(d Device) bool { return d.LastSyncDateTime.After(cut) })
	winRecent := count(func(d Device) bool { return d.OperatingSystem == "Windows" && d.LastSyncDateTime.After(cut) })
	name := tenant.Devices[0].DeviceName
	named := count(func(d Device) bool { return d.DeviceName == name })
	pcs := count(func(d Device) bool { return strings.HasPrefix(d.DeviceName, "PC-") })
	macs := count(func(d Device) bool { return d.OperatingSystem == "macOS" })

	tests := []struct {
		name   string
		filter string
		strict bool
		status int
		want   int
	}{
		{"eq honoured", "operatingSystem eq 'Windows'", false, 200, windows},
		{"eq is case-insensitive on values", "operatingSystem eq 'windows'", false, 200, windows},
		{"ne treated as eq (quirk)", "operatingSystem ne 'Windows'", false, 200, windows},
		{"ne honoured when strict", "operatingSystem ne 'Windows'", true, 200, all - windows},
		{"unsupported property ignored (quirk)", "userId eq 'abc'", false, 200, all},
		{"unsupported property refused when strict", "userId eq 'abc'", true, 400, 0},
		{"unsupported clause ignored inside and", "operatingSystem eq 'Windows' and skuFamily eq 'Enterprise'", false, 200, windows},
		{"in is a 500 (quirk)", "operatingSystem in ('Windows','macOS')", false, 500, 0},
		{"in evaluated when strict", "operatingSystem in ('Windows','macOS')", true, 200, windows + macs},
		{"or applies the first operand only (quirk)", "operatingSystem eq 'Windows' or operatingSystem eq 'macOS'", false, 200, windows},
		{"or honoured when strict", "operatingSystem eq 'Windows' or operatingSystem eq 'macOS'", true, 200, windows + macs},
		{"deviceName eq", "deviceName eq '" + name + "'", false, 200, named},
		{"startswith deviceName", "startswith(deviceName,'PC-')", false, 200, pcs},
		{"contains deviceName", "contains(deviceName,'pc-')", false, 200, pcs},
		{"lastSyncDateTime gt", "lastSyncDateTime gt 2026-10-01T00:00:00Z", false, 200, recent},
		{"and of honoured clauses", "operatingSystem eq 'Windows' and lastSyncDateTime gt 2026-10-01T00:00:00Z", false, 200, winRecent},
		{"parenthesised", "(operatingSystem eq 'Windows')", false, 200, windows},
		{"syntax error", "operatingSystem eq", false, 400, 0},
		{"unterminated string", "operatingSystem eq 'Windows", false, 400, 0},
		{"bad date", "lastSyncDateTime gt yesterday", false, 400, 0},
	}
	quirky := start(t, tenant, Options{})
	strict := start(t, Generate(5, GenerateOptions{Devices: 400}), Options{StrictFilters: true})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := quirky.URL
			if tc.strict {
				base = strict.URL
			}
			q := strings.NewReplacer(" ", "%20", "'", "%27").Replace(tc.filter)
			r := do(t, "GET", base+"/deviceManagement/managedDevices?$filter="+q+"&$select=id", nil)
			require.Equal(t, tc.status, r.status, "%s", r.body)
			if tc.status == 200 {
				assert.EqualValues(t, tc.want, r.json(t)["@odata.count"])
			} else {
				assert.Contains(t, r.json(t), "error")
			}
		})
	}
}

func batchBody(items ...map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"requests": items})
	return b
}

func getItem(id, deviceID string) map[string]any {
	return map[string]any{"id": id, "method": "GET", "url": "/deviceManagement/managedDevices/" + deviceID + "?$select=id,operatingSystem"}
}

func TestBatch(t *testing.T) {
	tenant := Generate(9, GenerateOptions{Devices: 100})
	sim := start(t, tenant, Options{})
	win := tenant.Windows(false)
	sc := tenant.RemediationScript().ID

	var items []map[string]any
	for i := range 21 {
		items = append(items, getItem(fmt.Sprint(i), win[i].ID))
	}
	r := do(t, "POST", sim.URL+"/$batch", batchBody(items...))
	assert.Equal(t, 400, r.status, "more than 20 items")
	r = do(t, "POST", sim.URL+"/$batch", batchBody(getItem("a", win[0].ID), getItem("a", win[1].ID)))
	assert.Equal(t, 400, r.status, "duplicate ids")
	r = do(t, "POST", sim.URL+"/$batch", batchBody(map[string]any{"id": "1", "method": "POST", "url": "/x", "body": map[string]any{"a": 1}}))
	assert.Equal(t, 400, r.status, "a body needs Content-Type")

	r = do(t, "POST", sim.URL+"/$batch", batchBody(
		getItem("1", win[0].ID),
		getItem("2", "00000000-0000-0000-0000-000000000000"),
		map[string]any{"id": "3", "method": "POST", "url": "/deviceManagement/managedDevices/" + win[1].ID + "/initiateOnDemandProactiveRemediation",
			"headers": map[string]string{"Content-Type": "application/json"}, "body": map[string]any{"scriptPolicyId": sc}},
		map[string]any{"id": "4", "method": "GET", "url": "/deviceManagement/managedDevices/" + win[2].ID, "dependsOn": []string{"2"}},
	), "Content-Encoding", "gzip")
	assert.Equal(t, 400, r.status, "outer body labelled gzip but plain")

	body := batchBody(
		getItem("1", win[0].ID),
		getItem("2", "00000000-0000-0000-0000-000000000000"),
		map[string]any{"id": "3", "method": "POST", "url": "/deviceManagement/managedDevices/" + win[1].ID + "/initiateOnDemandProactiveRemediation",
			"headers": map[string]string{"Content-Type": "application/json"}, "body": map[string]any{"scriptPolicyId": sc}},
		map[string]any{"id": "4", "method": "GET", "url": "/deviceManagement/managedDevices/" + win[2].ID, "dependsOn": []string{"2"}},
	)
	r = do(t, "POST", sim.URL+"/$batch", gz(body), "Content-Encoding", "gzip")
	require.Equal(t, 200, r.status, "%s", r.body)
	var out struct {
		Responses []struct {
			ID      string            `json:"id"`
			Status  int               `json:"status"`
			Headers map[string]string `json:"headers"`
			Body    map[string]any    `json:"body"`
		} `json:"responses"`
	}
	require.NoError(t, json.Unmarshal(r.body, &out))
	require.Len(t, out.Responses, 4)
	byID := map[string]int{}
	for _, it := range out.Responses {
		byID[it.ID] = it.Status
	}
	assert.Equal(t, map[string]int{"1": 200, "2": 404, "3": 204, "4": 424}, byID)
	assert.Equal(t, win[0].ID, out.Responses[0].Body["id"])
	assert.Equal(t, 1, sim.TriggerCount(win[1].ID, sc))
	assert.Equal(t, 1, sim.Counters().Batches)
}

func TestBatchItemsAreThrottledIndividually(t *testing.T) {
	tenant := Generate(9, GenerateOptions{Devices: 100})
	sim := start(t, tenant, Options{ReadLimit: 5, Window: time.Minute, RetryAfter: RetryAfterFractional})
	win := tenant.Windows(false)
	var items []map[string]any
	for i := range 8 {
		items = append(items, getItem(fmt.Sprint(i), win[i].ID))
	}
	r := do(t, "POST", sim.URL+"/$batch", batchBody(items...))
	require.Equal(t, 200, r.status, "the batch itself succeeds")
	var out struct {
		Responses []struct {
			Status  int               `json:"status"`
			Headers map[string]string `json:"headers"`
		} `json:"responses"`
	}
	require.NoError(t, json.Unmarshal(r.body, &out))
	ok, throttled := 0, 0
	for _, it := range out.Responses {
		switch it.Status {
		case 200:
			ok++
		case 429:
			throttled++
			assert.Regexp(t, `^\d+\.\d{3}$`, it.Headers["Retry-After"])
		}
	}
	assert.Equal(t, 5, ok)
	assert.Equal(t, 3, throttled)
}

func TestRetryAfterStyles(t *testing.T) {
	tenant := Generate(9, GenerateOptions{Devices: 50})
	d, sc := tenant.Windows(false)[0], tenant.RemediationScript().ID
	for _, tc := range []struct {
		mode    RetryAfterMode
		pattern string
	}{{RetryAfterSeconds, `^\d+$`}, {RetryAfterFractional, `^\d+\.\d{3}$`}, {RetryAfterNone, `^$`}} {
		t.Run(string(tc.mode), func(t *testing.T) {
			sim := start(t, tenant, Options{WriteLimit: 1, Window: time.Minute, RetryAfter: tc.mode})
			require.Equal(t, 204, do(t, "POST", triggerURL(sim.URL, "managedDevices", d.ID), scriptBody(sc)).status)
			r := do(t, "POST", triggerURL(sim.URL, "managedDevices", d.ID), scriptBody(sc))
			require.Equal(t, 429, r.status)
			assert.Regexp(t, tc.pattern, r.header.Get("Retry-After"))
			assert.Equal(t, "TooManyRequests", r.json(t)["error"].(map[string]any)["code"])
			assert.Equal(t, 1, sim.TriggerCount(d.ID, sc), "a throttled trigger has no effect")
		})
	}
}

// TestWriteLimitUnderConcurrentClients hammers the simulator from several
// apps and goroutines and checks, from the request log, that no sliding
// window ever admitted more writes than the limit, per app and per tenant.
func TestWriteLimitUnderConcurrentClients(t *testing.T) {
	tenant := Generate(11, GenerateOptions{Devices: 200})
	const limit, window = 20, 300 * time.Millisecond
	sim := start(t, tenant, Options{WriteLimit: limit, TenantWriteLimit: 30, Window: window})
	win, sc := tenant.Windows(false), tenant.RemediationScript().ID
	var wg sync.WaitGroup
	deadline := time.Now().Add(1200 * time.Millisecond)
	for g := range 8 {
		wg.Go(func() {
			app := fmt.Sprintf("app-%d", g%2)
			for i := 0; time.Now().Before(deadline); i++ {
				d := win[(g*31+i)%len(win)]
				req, _ := http.NewRequest("POST", triggerURL(sim.URL, "managedDevices", d.ID), bytes.NewReader(scriptBody(sc)))
				req.Header.Set("X-Sim-App", app)
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	perApp := map[string][]time.Time{}
	var all []time.Time
	throttled := 0
	for _, rec := range sim.Records() {
		if rec.Method != "POST" {
			continue
		}
		switch rec.Status {
		case 204:
			perApp[rec.App] = append(perApp[rec.App], rec.Time)
			all = append(all, rec.Time)
		case 429:
			throttled++
		}
	}
	require.Greater(t, throttled, 0, "the clients pushed past the limit")
	maxIn := func(ts []time.Time) int { return MaxInWindow(ts, window) }
	for app, ts := range perApp {
		assert.LessOrEqual(t, maxIn(ts), limit, "app %s", app)
		assert.Greater(t, len(ts), limit, "app %s got through in several windows", app)
	}
	assert.LessOrEqual(t, maxIn(all), 30, "tenant limit")
}

func TestFaults(t *testing.T) {
	tenant := Generate(13, GenerateOptions{Devices: 100})
	sc := tenant.RemediationScript().ID
	win := tenant.Windows(false)
	sim := start(t, tenant, Options{})
	tests := []struct {
		fault       Fault
		status      int
		contentType string
		took        int // triggers that took effect
	}{
		{Fault{Kind: Fault500}, 500, "application/json", 0},
		{Fault{Kind: Fault503}, 503, "application/json", 0},
		{Fault{Kind: Fault504}, 504, "application/json", 0},
		{Fault{Kind: FaultEmptyJSON}, 500, "application/json", 0},
		{Fault{Kind: FaultTextPlain}, 502, "text/plain; charset=utf-8", 0},
		{Fault{Kind: FaultHTML}, 502, "text/html", 0},
		{Fault{Kind: FaultExpiredToken}, 401, "application/json", 0},
		{Fault{Kind: FaultThrottle}, 429, "application/json", 0},
		{Fault{Kind: FaultLatency, Latency: 50 * time.Millisecond}, 204, "", 1},
		{Fault{Kind: FaultDropBefore}, 0, "", 0},
		{Fault{Kind: FaultDropAfter}, 0, "", 1},
	}
	for i, tc := range tests {
		t.Run(string(tc.fault.Kind), func(t *testing.T) {
			d := win[i]
			tc.fault.Times = 1
			sim.InjectFault(d.ID, tc.fault)
			started := time.Now()
			req, _ := http.NewRequest("POST", triggerURL(sim.URL, "managedDevices", d.ID), bytes.NewReader(scriptBody(sc)))
			resp, err := http.DefaultClient.Do(req)
			if tc.status == 0 {
				require.Error(t, err, "the connection is dropped")
			} else {
				require.NoError(t, err)
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				assert.Equal(t, tc.status, resp.StatusCode)
				assert.Equal(t, tc.contentType, resp.Header.Get("Content-Type"))
				if tc.fault.Kind == FaultEmptyJSON {
					assert.Equal(t, "{}", string(b))
				}
				if tc.fault.Kind == FaultLatency {
					assert.GreaterOrEqual(t, time.Since(started), 50*time.Millisecond)
				}
			}
			assert.Equal(t, tc.took, sim.TriggerCount(d.ID, sc))
			// Times: 1 means the next request is normal again.
			r := do(t, "POST", triggerURL(sim.URL, "managedDevices", d.ID), scriptBody(sc))
			assert.Equal(t, 204, r.status)
		})
	}
}

func TestRandomFaultsAreSeeded(t *testing.T) {
	run := func() []int {
		tenant := Generate(13, GenerateOptions{Devices: 100})
		sim := start(t, tenant, Options{FaultRate: 0.3, FaultKinds: []FaultKind{Fault500, Fault503}, FaultSeed: 99})
		var statuses []int
		for _, d := range tenant.Windows(false)[:30] {
			statuses = append(statuses, do(t, "POST", triggerURL(sim.URL, "managedDevices", d.ID), scriptBody(tenant.RemediationScript().ID)).status)
		}
		return statuses
	}
	a, b := run(), run()
	assert.Equal(t, a, b)
	faults := 0
	for _, s := range a {
		if s != 204 {
			faults++
		}
	}
	assert.InDelta(t, 9, faults, 7)
}

func TestRunStateProgression(t *testing.T) {
	tenant := Generate(17, GenerateOptions{Devices: 100})
	sim := start(t, tenant, Options{RunStateDelay: 150 * time.Millisecond})
	d, sc := tenant.Windows(false)[0], tenant.RemediationScript().ID
	require.Equal(t, 204, do(t, "POST", triggerURL(sim.URL, "managedDevices", d.ID), scriptBody(sc)).status)

	state := func() map[string]any {
		r := do(t, "GET", sim.URL+"/deviceManagement/deviceHealthScripts/"+sc+"/deviceRunStates?$expand=managedDevice", nil)
		rows := r.json(t)["value"].([]any)
		require.Len(t, rows, 1)
		return rows[0].(map[string]any)
	}
	s := state()
	assert.Equal(t, "pending", s["detectionState"])
	assert.Equal(t, "0001-01-01T00:00:00Z", s["lastStateUpdateDateTime"], "never ran before")
	assert.Equal(t, d.ID, s["managedDevice"].(map[string]any)["id"])

	time.Sleep(200 * time.Millisecond)
	s = state()
	want := map[string][2]string{
		OutcomeNoIssue:           {"success", "skipped"},
		OutcomeRemediated:        {"fail", "success"},
		OutcomeRemediationFailed: {"fail", "remediationFailed"},
		OutcomeScriptError:       {"scriptError", "skipped"},
	}[FinalOutcome(d.ID, sc)]
	assert.Equal(t, want[0], s["detectionState"])
	assert.Equal(t, want[1], s["remediationState"])
	last, err := time.Parse(time.RFC3339, s["lastStateUpdateDateTime"].(string))
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now(), last, 2*time.Second)
}

// BenchmarkSimulatorTriggers measures how many trigger requests per second
// the simulator sustains, so benchmarks built on it know it is not their
// bottleneck.
func BenchmarkSimulatorTriggers(b *testing.B) {
	tenant := Generate(21, GenerateOptions{Devices: 5000})
	sim := start(b, tenant, Options{WriteLimit: 1 << 30, ReadLimit: 1 << 30})
	win, sc := tenant.Windows(false), tenant.RemediationScript().ID
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ResetTimer()
	started := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			d := win[i%len(win)]
			i++
			resp, err := client.Post(triggerURL(sim.URL, "managedDevices", d.ID), "application/json", bytes.NewReader(scriptBody(sc)))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(started).Seconds(), "requests/s")
}

// TestGeneratedDatesFollowTheClock: a tenant generated today has the same
// share of stale devices as one generated on any other day (its dates are
// relative to the clock), so examples that skip stale devices keep
// working.
func TestGeneratedDatesFollowTheClock(t *testing.T) {
	t.Parallel()
	tenant := Generate(2026, GenerateOptions{Devices: 600})
	fresh, stale := 0, 0
	for _, d := range tenant.Devices {
		age := time.Since(d.LastSyncDateTime)
		switch {
		case age < 0:
			t.Fatalf("device %s synced in the future: %s", d.ID, d.LastSyncDateTime)
		case age <= 72*time.Hour+time.Minute:
			fresh++
		case age >= 30*24*time.Hour:
			stale++
		default:
			t.Errorf("device %s synced %s ago: neither recent nor stale", d.ID, age)
		}
	}
	assert.Greater(t, fresh, 500, "most devices synced in the last three days")
	assert.Less(t, stale, 100, "about 8%% are stale")
}

// TestTenantsHaveTheirOwnLimits: apps named "<tenant>|<client>" (as
// azurefake.Entra's tokens name them) count against their own tenant's
// budgets: one tenant spending its whole budget leaves another's whole.
func TestTenantsHaveTheirOwnLimits(t *testing.T) {
	tenant := Generate(11, GenerateOptions{Devices: 200})
	sim := start(t, tenant, Options{WriteLimit: 5, TenantWriteLimit: 5, Window: time.Minute})
	win, sc := tenant.Windows(false), tenant.RemediationScript().ID
	post := func(app string, i int) int {
		req, _ := http.NewRequest("POST", triggerURL(sim.URL, "managedDevices", win[i].ID), bytes.NewReader(scriptBody(sc)))
		req.Header.Set("X-Sim-App", app)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 5 {
		assert.Equal(t, 204, post("tenant-a|app", i))
	}
	assert.Equal(t, 429, post("tenant-a|app", 5), "tenant A's budget is spent")
	assert.Equal(t, 429, post("tenant-a|other-app", 6), "and with it tenant A's all-apps budget")
	for i := range 5 {
		assert.Equal(t, 204, post("tenant-b|app", 10+i), "tenant B's budget is its own")
	}
	assert.Equal(t, "tenant-a", TenantOf("tenant-a|app"))
	assert.Empty(t, TenantOf("app-1"))
}
