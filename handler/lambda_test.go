package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/remediate"
)

// runtimeAPI is a fake Lambda Runtime API: it hands out events on
// /invocation/next with the runtime's headers, collects responses and
// errors, and answers 410 when it has no more events, which ends the
// runtime loop.
type runtimeAPI struct {
	*httptest.Server
	mu        sync.Mutex
	events    [][]byte
	deadlines []time.Duration
	next      int
	responses map[string][]byte
	errors    map[string][]byte
	// initError is the body of a runtime/init/error call, if any.
	initError []byte
	// block makes /invocation/next wait until the request is cancelled.
	block bool
}

func newRuntimeAPI(t *testing.T) *runtimeAPI {
	rt := &runtimeAPI{responses: map[string][]byte{}, errors: map[string][]byte{}}
	rt.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		const prefix = "/2018-06-01/runtime/invocation/"
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/2018-06-01/runtime/init/error":
			rt.initError, _ = io.ReadAll(r.Body)
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodGet && r.URL.Path == prefix+"next" && rt.block:
			rt.mu.Unlock()
			<-r.Context().Done()
			rt.mu.Lock()
		case r.Method == http.MethodGet && r.URL.Path == prefix+"next":
			if rt.next >= len(rt.events) {
				w.WriteHeader(http.StatusGone)
				return
			}
			i := rt.next
			rt.next++
			w.Header().Set("Lambda-Runtime-Aws-Request-Id", fmt.Sprintf("req-%d", i))
			w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(rt.deadlines[i]).UnixMilli(), 10))
			w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:remediator")
			w.Header().Set("Lambda-Runtime-Trace-Id", "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700")
			_, _ = w.Write(rt.events[i])
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, prefix):
			rest := strings.TrimPrefix(r.URL.Path, prefix)
			id, kind, _ := strings.Cut(rest, "/")
			b, _ := io.ReadAll(r.Body)
			if kind == "response" {
				rt.responses[id] = b
			} else {
				rt.errors[id] = b
			}
			w.WriteHeader(http.StatusAccepted)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(rt.Close)
	return rt
}

func (rt *runtimeAPI) add(event []byte, deadline time.Duration) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.events = append(rt.events, event)
	rt.deadlines = append(rt.deadlines, deadline)
}

func lambdaEvent(t *testing.T, name string, kv ...string) []byte {
	t.Helper()
	raw, err := os.ReadFile("../testdata/lambda/" + name)
	require.NoError(t, err)
	return []byte(strings.NewReplacer(kv...).Replace(string(raw)))
}

// TestLambdaBootstrapEndToEnd runs the built binary as Lambda's bootstrap
// against the fake Runtime API and the simulator. (`make package-lambda`
// adds -tags lambda.norpc, which only leaves out the legacy RPC mode; the
// test does not rebuild with it, since a build with other tags recompiles
// the whole Graph SDK.)
func TestLambdaBootstrapEndToEnd(t *testing.T) {
	t.Parallel()
	bootstrap := binary

	f := newTenant(t, 400, intunesim.Options{})
	quick := f.eligible(0, 3)
	slow := f.eligible(10, 60)
	scheduled := f.eligible(100, 2)
	rt := newRuntimeAPI(t)
	js := func(s string) string { b, _ := json.Marshal(s); return string(b[1 : len(b)-1]) }
	rt.add(lambdaEvent(t, "function_url_request.json", "{{BODY}}", js(f.request(quick, ""))), time.Minute)
	rt.add(lambdaEvent(t, "function_url_request.json", "{{BODY}}", js(f.request(slow, ""))), 2*time.Second)
	rt.add(lambdaEvent(t, "eventbridge_scheduled.json"), time.Minute)
	rt.add(lambdaEvent(t, "sqs_event.json"), time.Minute)
	// An EventBridge Scheduler schedule sends its Input as the event.
	rt.add([]byte(f.request(f.eligible(110, 2), "")), time.Minute)
	rt.add([]byte("not json"), time.Minute)
	rt.add(lambdaEvent(t, "function_url_request.json", "{{BODY}}", "%%%", `"isBase64Encoded": false`, `"isBase64Encoded": true`), time.Minute)

	cmd := exec.Command(bootstrap)
	cmd.Env = append([]string{runMain, quickExit, "PATH=" + os.Getenv("PATH"), "AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(rt.URL, "http://"),
		"AWS_LAMBDA_FUNCTION_NAME=remediator", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256", "AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"_HANDLER=bootstrap", "SCHEDULED_REQUEST=" + f.request(scheduled, ""), "DIRECT_INVOCATION=schedule",
		`CALLER_POLICY={"schedule":{"max_devices":2},"*":{}}`}, f.env("GRAPH_WRITE_RATE=20")...)
	logs, err := cmd.CombinedOutput()
	// The runtime library ends the process when the Runtime API answers 410.
	require.Error(t, err)
	assert.Contains(t, string(logs), "410", "%s", logs)

	rt.mu.Lock()
	defer rt.mu.Unlock()
	resp := func(id string) events.APIGatewayV2HTTPResponse {
		var r events.APIGatewayV2HTTPResponse
		require.NoError(t, json.Unmarshal(rt.responses[id], &r), "%s", rt.responses[id])
		return r
	}
	r := resp("req-0")
	require.Equal(t, 200, r.StatusCode, r.Body)
	for _, d := range quick {
		assert.Equal(t, 1, f.sim.TriggerCount(d.ID, f.script))
	}

	r = resp("req-1")
	assert.Equal(t, 424, r.StatusCode, "the Lambda deadline cut the run")
	s := summaryOf(t, []byte(r.Body))
	require.Len(t, s.Devices, 60)
	assert.Greater(t, s.Counts.NotAttempted, 0)
	for _, d := range s.Devices {
		n := f.sim.TriggerCount(d.DeviceID, f.script)
		if d.Outcome == remediate.Succeeded {
			assert.Equal(t, 1, n)
		} else {
			assert.Equal(t, remediate.ReasonDeadline, d.Reason)
			assert.Zero(t, n)
		}
	}

	var sched remediate.Summary
	require.NoError(t, json.Unmarshal(rt.responses["req-2"], &sched), "%s", rt.responses["req-2"])
	assert.Equal(t, 2, sched.Counts.Succeeded)

	require.Contains(t, rt.errors, "req-3")
	assert.Contains(t, string(rt.errors["req-3"]), "unsupported event")
	assert.Contains(t, string(rt.errors["req-3"]), `source \"aws:sqs\"`, "the event's source is named")
	var direct remediate.Summary
	require.NoError(t, json.Unmarshal(rt.responses["req-4"], &direct), "%s", rt.responses["req-4"])
	assert.Equal(t, 2, direct.Counts.Succeeded, "a Scheduler input that is a request runs as caller schedule (DIRECT_INVOCATION=schedule), under its rule")
	assert.Contains(t, string(logs), `"caller":"schedule"`)
	assert.Contains(t, string(rt.errors["req-5"]), "not JSON")
	assert.Equal(t, 400, resp("req-6").StatusCode, "a body marked base64 that is not")
	for i := range 7 {
		assert.Contains(t, string(logs), fmt.Sprintf(`"aws_request_id":"req-%d"`, i), "every invocation writes its audit line")
	}
}

// TestLambdaConfigurationErrorIsReported: a configuration error reaches
// the Runtime API's init-error call with its message, then the process
// exits (instead of a bare Runtime.ExitError).
func TestLambdaConfigurationErrorIsReported(t *testing.T) {
	t.Parallel()
	rt := newRuntimeAPI(t)
	cmd := exec.Command(binary)
	cmd.Env = []string{runMain, quickExit, "AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(rt.URL, "http://"), "GRAPH_AUTH=client-secret", "MAX_CONCURRENCY=0"}
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "%s", out)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var e struct{ ErrorMessage, ErrorType string }
	require.NoError(t, json.Unmarshal(rt.initError, &e), "%s", rt.initError)
	assert.Equal(t, "Runtime.ConfigurationError", e.ErrorType)
	assert.Contains(t, e.ErrorMessage, "MAX_CONCURRENCY")
	assert.Contains(t, e.ErrorMessage, "GRAPH_CLIENT_SECRET")
}

// TestLambdaExitsOnSIGTERM: waiting for its next event, the bootstrap
// exits promptly when the environment shuts down.
func TestLambdaExitsOnSIGTERM(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 20, intunesim.Options{})
	rt := newRuntimeAPI(t)
	rt.mu.Lock()
	rt.block = true
	rt.mu.Unlock()
	cmd := exec.Command(binary)
	cmd.Env = append([]string{runMain, quickExit, "AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(rt.URL, "http://")}, f.env()...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "lambda runtime starting") }, 20*time.Second, 20*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // into the wait for the next event
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("still running 3 s after SIGTERM:\n%s", logs.String())
	}
}

// TestLambdaAnswersFit: on Lambda (no run storage), an answer never
// outgrows MAX_ANSWER_BYTES, and a run with more devices than an answer
// can account for is refused before anything is triggered, so a caller's
// retry cannot trigger them all again.
func TestLambdaAnswersFit(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 1000, intunesim.Options{WriteLimit: 100000, ReadLimit: 100000})
	rt := newRuntimeAPI(t)
	js := func(s string) string { b, _ := json.Marshal(s); return string(b[1 : len(b)-1]) }
	rt.add(lambdaEvent(t, "function_url_request.json", "{{BODY}}", js(f.request(f.eligible(0, 300), `,"validate_device_exists":false`))), time.Minute)
	rt.add(lambdaEvent(t, "function_url_request.json", "{{BODY}}", js(f.request(f.eligible(300, 250), ""))), time.Minute)
	cmd := exec.Command(binary)
	cmd.Env = append([]string{runMain, quickExit, "PATH=" + os.Getenv("PATH"), "AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(rt.URL, "http://")},
		f.env("MAX_ANSWER_BYTES=65536")...)
	logs, err := cmd.CombinedOutput()
	require.Error(t, err, "ends on 410")
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var r events.APIGatewayV2HTTPResponse
	require.NoError(t, json.Unmarshal(rt.responses["req-0"], &r), "%s", logs)
	assert.Equal(t, 422, r.StatusCode)
	assert.Contains(t, r.Body, "answer_too_large")
	for _, d := range f.eligible(0, 300) {
		require.Zero(t, f.sim.TriggerCount(d.ID, f.script), "nothing triggered")
	}
	require.NoError(t, json.Unmarshal(rt.responses["req-1"], &r))
	assert.Equal(t, 200, r.StatusCode, r.Body)
	assert.LessOrEqual(t, len(r.Body), 65536)
	s := summaryOf(t, []byte(r.Body))
	assert.Equal(t, 250, s.Counts.Succeeded)
	assert.Equal(t, 250, s.OmittedDevices)
}
