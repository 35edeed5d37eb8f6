package awslambda

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/httpapi"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/pace"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/testing/simgraph"
)

type fixture struct {
	sim     *intunesim.Running
	tenant  *intunesim.Tenant
	script  string
	handler lambda.Handler
	logs    *strings.Builder
}

func setup(t *testing.T, scheduled []byte, with ...func(*app.Options, *Settings)) *fixture {
	t.Helper()
	tenant := intunesim.Generate(31, intunesim.GenerateOptions{Devices: 200})
	sim, err := intunesim.Start(intunesim.New(tenant, intunesim.Options{}), "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sim.Close() })
	gc := simgraph.New(sim.URL, 0)
	logs := &strings.Builder{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	opts, settings := app.Options{}, Settings{ScheduledRequest: scheduled}
	for _, w := range with {
		w(&opts, &settings)
	}
	svc := app.New(remediate.New(gc, pace.New(1000, 1000), remediate.Config{}, log), opts, log)
	api := httpapi.New(svc, httpapi.Options{Audit: Audit}, log)
	h := New(api, svc, settings, log)
	return &fixture{sim: sim, tenant: tenant, script: tenant.RemediationScript().ID, handler: h, logs: logs}
}

func (f *fixture) devices(n int) string {
	var items []string
	for _, d := range f.tenant.Windows(false) {
		if !d.CoManaged && d.JoinType != "azureADRegistered" && len(items) < n {
			items = append(items, `{"device_id":"`+d.ID+`","script_policy_id":"`+f.script+`"}`)
		}
	}
	return `{"managed_devices":[` + strings.Join(items, ",") + `]}`
}

// event fills a documented sample event.
func event(t *testing.T, name string, kv ...string) []byte {
	t.Helper()
	raw, err := os.ReadFile("../../testdata/lambda/" + name)
	require.NoError(t, err)
	return []byte(strings.NewReplacer(kv...).Replace(string(raw)))
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

func (f *fixture) invoke(t *testing.T, payload []byte) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctx = lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: "req-1"})
	return f.handler.Invoke(ctx, payload)
}

func httpResponse(t *testing.T, out []byte) events.APIGatewayV2HTTPResponse {
	t.Helper()
	var r events.APIGatewayV2HTTPResponse
	require.NoError(t, json.Unmarshal(out, &r))
	assert.Equal(t, "application/json", r.Headers["Content-Type"])
	return r
}

func TestFunctionURLRemediate(t *testing.T) {
	f := setup(t, nil)
	out, err := f.invoke(t, event(t, "function_url_request.json", "{{BODY}}", jsonString(f.devices(3))))
	require.NoError(t, err)
	r := httpResponse(t, out)
	require.Equal(t, 200, r.StatusCode, r.Body)
	var s remediate.Summary
	require.NoError(t, json.Unmarshal([]byte(r.Body), &s))
	assert.Equal(t, 3, s.Counts.Succeeded)
	assert.Equal(t, 3, f.sim.Counters().Triggers)
	assert.Contains(t, f.logs.String(), `"aws_request_id":"req-1"`)
	assert.Contains(t, f.logs.String(), `"caller":"iam:arn:aws:iam::111122223333:user/automation"`)

	out, err = f.invoke(t, event(t, "function_url_request.json", "{{BODY}}", jsonString(`{"managed_devices":[{"device_id":"x"}]}`)))
	require.NoError(t, err, "a bad request is an HTTP 400, not an invocation error")
	assert.Equal(t, 400, httpResponse(t, out).StatusCode)
}

func TestAPIGatewayAlertWithBase64Body(t *testing.T) {
	f := setup(t, nil)
	var dev intunesim.Device
	for _, d := range f.tenant.Windows(false) {
		if !d.CoManaged && d.JoinType != "azureADRegistered" {
			dev = d
			break
		}
	}
	raw, err := os.ReadFile("../../testdata/alerts/log_alert_v2_fired.json")
	require.NoError(t, err)
	alert := strings.NewReplacer("{{DEVICE_1}}", dev.ID, `"scriptPolicyId": "{{SCRIPT}}"`, `"other": "x"`).Replace(string(raw))
	body := base64.StdEncoding.EncodeToString([]byte(alert))
	out, err := f.invoke(t, event(t, "apigw_v2_request.json", "{{BODY}}", body, "{{SCRIPT}}", f.script))
	require.NoError(t, err)
	r := httpResponse(t, out)
	require.Equal(t, 200, r.StatusCode, r.Body)
	assert.Equal(t, 1, f.sim.TriggerCount(dev.ID, f.script), "the script came from the query string")

	out, err = f.invoke(t, event(t, "apigw_v2_request.json", "{{BODY}}", body, "{{SCRIPT}}", f.script))
	require.NoError(t, err)
	r = httpResponse(t, out)
	assert.Equal(t, "true", r.Headers["Idempotent-Replayed"])
	assert.Equal(t, 1, f.sim.TriggerCount(dev.ID, f.script))

	out, err = f.invoke(t, event(t, "apigw_v2_request.json", "{{BODY}}", "%%%", "{{SCRIPT}}", f.script))
	require.NoError(t, err)
	assert.Equal(t, 400, httpResponse(t, out).StatusCode)
}

func TestRoutes(t *testing.T) {
	f := setup(t, nil)
	get := strings.NewReplacer(`"method": "POST"`, `"method": "GET"`, `"rawPath": "/remediate"`, `"rawPath": "/runs/abc123"`)
	out, err := f.invoke(t, []byte(get.Replace(string(event(t, "function_url_request.json", "{{BODY}}", "")))))
	require.NoError(t, err)
	r := httpResponse(t, out)
	assert.Equal(t, 404, r.StatusCode)
	assert.Contains(t, r.Body, `"code":"not_found"`, "the same answer as Azure without storage")
	assert.Contains(t, r.Body, "keeps no runs")

	wrong := strings.NewReplacer(`"method": "POST"`, `"method": "GET"`)
	out, err = f.invoke(t, []byte(wrong.Replace(string(event(t, "function_url_request.json", "{{BODY}}", "")))))
	require.NoError(t, err)
	r = httpResponse(t, out)
	assert.Equal(t, 405, r.StatusCode)
	assert.Equal(t, "POST", r.Headers["Allow"])

	// The root answers, never a redirect (to itself, through a Function
	// URL), whether its path comes as "/" or "".
	for _, root := range []string{"/", ""} {
		health := strings.NewReplacer(`"method": "POST"`, `"method": "GET"`, `"rawPath": "/remediate"`, `"rawPath": "`+root+`"`)
		out, err = f.invoke(t, []byte(health.Replace(string(event(t, "function_url_request.json", "{{BODY}}", "")))))
		require.NoError(t, err)
		r = httpResponse(t, out)
		assert.Equal(t, 200, r.StatusCode, "GET %q: %s", root, r.Body)
		assert.JSONEq(t, `{"status":"ok"}`, r.Body)
	}

	// API Gateway puts a named stage in front of the path; the stage is
	// transport, not route. A path under another prefix is no route.
	staged := strings.NewReplacer(`"method": "POST"`, `"method": "GET"`, `"rawPath": "/remediate"`, `"rawPath": "/prod/remediate/runs/abc123"`,
		`"stage": "$default"`, `"stage": "prod"`)
	out, err = f.invoke(t, []byte(staged.Replace(string(event(t, "function_url_request.json", "{{BODY}}", "")))))
	require.NoError(t, err)
	r = httpResponse(t, out)
	assert.Equal(t, 404, r.StatusCode)
	assert.Contains(t, r.Body, "keeps no runs", "the status route, under the remediate function")
	prefixed := strings.NewReplacer(`"rawPath": "/remediate"`, `"rawPath": "/elsewhere/remediate"`)
	out, err = f.invoke(t, []byte(prefixed.Replace(string(event(t, "function_url_request.json", "{{BODY}}", "")))))
	require.NoError(t, err)
	r = httpResponse(t, out)
	assert.Equal(t, 404, r.StatusCode)
	assert.Contains(t, r.Body, "no such route")

	other := strings.NewReplacer(`"rawPath": "/remediate"`, `"rawPath": "/admin"`)
	out, err = f.invoke(t, []byte(other.Replace(string(event(t, "function_url_request.json", "{{BODY}}", "")))))
	require.NoError(t, err)
	assert.Equal(t, 404, httpResponse(t, out).StatusCode)
}

func TestScheduledEvent(t *testing.T) {
	f := setup(t, nil)
	f2 := setup(t, []byte(f.devices(2)))
	out, err := f2.invoke(t, event(t, "eventbridge_scheduled.json"))
	require.NoError(t, err)
	var s remediate.Summary
	require.NoError(t, json.Unmarshal(out, &s))
	assert.Equal(t, 2, s.Counts.Total)
	assert.Contains(t, f2.logs.String(), `"function":"schedule"`)

	_, err = f.invoke(t, event(t, "eventbridge_scheduled.json"))
	assert.ErrorContains(t, err, "no SCHEDULED_REQUEST")
}

func TestUnknownEventsAreClearErrors(t *testing.T) {
	f := setup(t, nil)
	for _, payload := range [][]byte{event(t, "sqs_event.json"), []byte(`"just a string"`), []byte(`{}`), []byte(`[1,2]`)} {
		_, err := f.invoke(t, payload)
		assert.Error(t, err, "%s", payload)
	}
	_, err := f.invoke(t, event(t, "sqs_event.json"))
	assert.ErrorContains(t, err, "unsupported event")
	assert.Zero(t, f.sim.Counters().Requests)
}

func TestFunctionURLIdempotencyKeyAndNoAsync(t *testing.T) {
	f := setup(t, nil)
	withKey := func(body string) []byte {
		ev := event(t, "function_url_request.json", "{{BODY}}", jsonString(body))
		return []byte(strings.Replace(string(ev), `"headers": {`, `"headers": {"idempotency-key": "ticket-81",`, 1))
	}
	body := f.devices(2)
	out, err := f.invoke(t, withKey(body))
	require.NoError(t, err)
	require.Equal(t, 200, httpResponse(t, out).StatusCode)
	out, err = f.invoke(t, withKey(body))
	require.NoError(t, err)
	r := httpResponse(t, out)
	assert.Equal(t, 200, r.StatusCode)
	assert.Equal(t, "true", r.Headers["Idempotent-Replayed"])
	assert.Equal(t, 2, f.sim.Counters().Triggers, "the repeated request triggered nothing")

	async := strings.Replace(f.devices(1), `{"managed_devices"`, `{"mode":"async","managed_devices"`, 1)
	out, err = f.invoke(t, event(t, "function_url_request.json", "{{BODY}}", jsonString(async)))
	require.NoError(t, err)
	r = httpResponse(t, out)
	assert.Equal(t, 400, r.StatusCode, "Lambda keeps no runs: %s", r.Body)
	assert.Contains(t, r.Body, `"mode"`)
}

// TestAssumedRolesAreTheirRole: an assumed role's session name is the
// caller's to choose, so the caller is the role: no session name can
// claim another entry of CALLER_POLICY.
func TestAssumedRolesAreTheirRole(t *testing.T) {
	t.Parallel()
	for arn, want := range map[string]string{
		"arn:aws:sts::111122223333:assumed-role/remediation-runner/alice":          "arn:aws:iam::111122223333:role/remediation-runner",
		"arn:aws:sts::111122223333:assumed-role/remediation-runner/arn:aws:iam::x": "arn:aws:iam::111122223333:role/remediation-runner",
		"arn:aws-us-gov:sts::111122223333:assumed-role/runner/s":                   "arn:aws-us-gov:iam::111122223333:role/runner",
		"arn:aws:iam::111122223333:user/automation":                                "arn:aws:iam::111122223333:user/automation",
		"arn:aws:sts::111122223333:federated-user/bob":                             "arn:aws:sts::111122223333:federated-user/bob",
		"not an arn": "not an arn",
	} {
		assert.Equal(t, want, RoleARN(arn), arn)
	}
}

// TestDirectInvocationIsPoliced: an event that is itself a request (what
// anyone holding lambda:InvokeFunction can send) is refused unless
// DIRECT_INVOCATION allows it, and then runs as the caller it names, under
// that caller's rule; refused or not, it writes its audit line.
func TestDirectInvocationIsPoliced(t *testing.T) {
	t.Parallel()
	off := setup(t, nil)
	_, err := off.invoke(t, []byte(off.devices(2)))
	assert.ErrorContains(t, err, "DIRECT_INVOCATION is off")
	assert.Zero(t, off.sim.Counters().Requests, "nothing read, nothing triggered")
	assert.Contains(t, off.logs.String(), `"function":"invoke"`, "the refusal has its audit line")

	policed := setup(t, nil, func(o *app.Options, s *Settings) {
		s.DirectInvocation = "schedule"
		o.Policy = app.CallerPolicy{"schedule": {MaxDevices: 2}}
	})
	out, err := policed.invoke(t, []byte(policed.devices(2)))
	require.NoError(t, err)
	var sum remediate.Summary
	require.NoError(t, json.Unmarshal(out, &sum))
	assert.Equal(t, 2, sum.Counts.Succeeded)
	assert.Contains(t, policed.logs.String(), `"caller":"schedule"`)
	_, err = policed.invoke(t, []byte(policed.devices(3)))
	assert.ErrorContains(t, err, "caller schedule may trigger at most 2 devices")
	assert.Equal(t, 2, policed.sim.Counters().Triggers)

	invoke := setup(t, nil, func(o *app.Options, s *Settings) {
		s.DirectInvocation = "invoke"
		o.Policy = app.CallerPolicy{"schedule": {}}
	})
	_, err = invoke.invoke(t, []byte(invoke.devices(1)))
	assert.ErrorContains(t, err, "caller invoke has no rule")
	assert.Zero(t, invoke.sim.Counters().Triggers)
}
