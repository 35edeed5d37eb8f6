package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/azure"
	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/testing/azurite"
	"github.com/remediator/remediator/internal/testing/funchost"
)

func send(t testing.TB, method, url, body string, header ...string) (hostReply, []byte) {
	t.Helper()
	if method == http.MethodPost {
		return hostPost(t, url, body, header...)
	}
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var b json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&b)
	return hostReply{resp.StatusCode, resp.Header}, b
}

func runID(t testing.TB, b []byte) string {
	t.Helper()
	var acc struct {
		RunID string `json:"run_id"`
	}
	require.NoError(t, json.Unmarshal(b, &acc), "%s", b)
	return acc.RunID
}

// TestFunctionKeysAreCallers: through the host, with App Service
// Authentication off, each function key is its own caller: one consumer's
// key neither reads another's runs (follow-up included) nor replays or
// squats its idempotency keys, and a principal header it writes itself
// changes nothing but the audit line's note that it was not trusted.
func TestFunctionKeysAreCallers(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	f := newTenant(t, 600, intunesim.Options{WriteLimit: 100000, ReadLimit: 100000})
	admin := "0b5c4f1e-0000-4000-8000-00000000beef"
	policy := `{"function-key":{"scripts":["*"],"max_devices":3},"principal:` + admin + `":{"scripts":["*"]}}`
	w := startWorker(t, f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=keys", "CALLER_POLICY="+policy)...)
	front := startFront(t, w)
	keyA, keyB := front.App.AddKey("remediate", "team-a"), front.App.AddKey("remediate", "team-b")
	body := f.request(f.eligible(0, 3), `,"mode":"async"`)

	reply, b := send(t, "POST", front.URL+"/api/remediate?code="+keyA, body, "Idempotency-Key", "change-1")
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	run := runID(t, b)
	status := front.URL + "/api/remediate/runs/" + run
	reply, _ = send(t, "GET", status+"?code="+keyA, "")
	assert.Equal(t, 202, reply.StatusCode, "A reads its run")
	for _, u := range []string{status + "?code=" + keyB, status + "?follow=true&code=" + keyB} {
		reply, b = send(t, "GET", u, "")
		assert.Equal(t, 404, reply.StatusCode, "B does not: %s", b)
		assert.NotContains(t, string(b), f.script)
	}
	// B's change-1 is B's own: neither A's answer nor blocked by it; A's
	// change-1 is still A's.
	reply, b = send(t, "POST", front.URL+"/api/remediate?code="+keyB, body, "Idempotency-Key", "change-1")
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	assert.Empty(t, reply.Header.Get("Idempotent-Replayed"))
	assert.NotEqual(t, run, runID(t, b))
	reply, b = send(t, "POST", front.URL+"/api/remediate?code="+keyA, body, "Idempotency-Key", "change-1")
	assert.Equal(t, "true", reply.Header.Get("Idempotent-Replayed"))
	assert.Equal(t, run, runID(t, b))

	// A spoofed principal: still the key's caller, under function-key's rule.
	before := f.sim.Counters().Triggers
	reply, b = send(t, "POST", front.URL+"/api/remediate?code="+keyA, f.request(f.eligible(3, 5), ""),
		"X-MS-CLIENT-PRINCIPAL-ID", admin, "X-MS-CLIENT-PRINCIPAL-NAME", "ceo@contoso.com")
	assert.Equal(t, 403, reply.StatusCode, "%s", b)
	assert.Contains(t, string(b), "at most 3 devices")
	assert.Equal(t, before, f.sim.Counters().Triggers)
	require.Eventually(t, func() bool { return strings.Count(w.logs.String(), `"principal_header":"untrusted`) > 0 }, 5*time.Second, 20*time.Millisecond)
	logs := w.logs.String()
	assert.Contains(t, logs, `"caller":"`+azure.KeyCaller(keyA)+`"`)
	assert.NotContains(t, logs, "ceo@contoso.com")
	for _, k := range []string{keyA, keyB} {
		assert.NotContains(t, logs, k, "no key in a log line")
	}
}

// TestAuthenticatedPrincipalsAreCallers: with App Service Authentication
// on, the platform's principal is the caller, its app roles are what
// CALLER_POLICY grants by, and a principal reads only its own runs.
func TestAuthenticatedPrincipalsAreCallers(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	f := newTenant(t, 600, intunesim.Options{WriteLimit: 100000, ReadLimit: 100000})
	policy := `{"role:Remediation.Run":{"scripts":["` + f.script + `"],"max_devices":10}}`
	w := startWorker(t, f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=principals", "CALLER_POLICY="+policy, "WEBSITE_AUTH_ENABLED=True")...)
	front := startFront(t, w)
	front.SetAuth(&funchost.EasyAuth{Tokens: map[string]funchost.Principal{
		"tok-logic-app": {ID: "6f1d0c2a-0000-4000-8000-000000000001", Name: "logic-app-weekday-run", Roles: []string{"Remediation.Run"}},
		"tok-intern":    {ID: "6f1d0c2a-0000-4000-8000-000000000002", Name: "intern@contoso.com"},
	}})
	key := front.App.Key("remediate")
	body := f.request(f.eligible(0, 4), `,"mode":"async"`)

	reply, b := send(t, "POST", front.URL+"/api/remediate?code="+key, body, "Authorization", "Bearer tok-logic-app")
	require.Equal(t, 202, reply.StatusCode, "the role grants it: %s", b)
	run := runID(t, b)
	reply, b = send(t, "POST", front.URL+"/api/remediate?code="+key, body, "Authorization", "Bearer tok-intern")
	assert.Equal(t, 403, reply.StatusCode, "no role, no rule: %s", b)
	assert.Contains(t, string(b), "principal:6f1d0c2a-0000-4000-8000-000000000002 has no rule")
	reply, _ = send(t, "GET", front.URL+"/api/remediate/runs/"+run+"?code="+key, "", "Authorization", "Bearer tok-intern")
	assert.Equal(t, 404, reply.StatusCode, "another principal's run")
	reply, _ = send(t, "GET", front.URL+"/api/remediate/runs/"+run+"?code="+key, "", "Authorization", "Bearer tok-logic-app")
	assert.Equal(t, 202, reply.StatusCode)
	reply, _ = send(t, "GET", front.URL+"/api/remediate/runs/"+run+"?code="+key, "")
	assert.Equal(t, 401, reply.StatusCode, "no token: App Service Authentication refuses it")
	require.Eventually(t, func() bool {
		return strings.Contains(w.logs.String(), `"caller":"principal:6f1d0c2a-0000-4000-8000-000000000001","caller_name":"logic-app-weekday-run"`)
	}, 5*time.Second, 20*time.Millisecond)
	logs := w.logs.String()
	assert.False(t, strings.Contains(logs, "tok-logic-app"), "no token in a log line")
}

// TestLocalServeIsNotADriveByTarget: the local server (make serve) answers
// only requests to its loopback address with a JSON body: a web page the
// operator visits can neither POST a text/plain body to it (no preflight)
// nor reach it under a rebound name.
func TestLocalServeIsNotADriveByTarget(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	cmd := exec.Command(binary, "serve")
	cmd.Env = []string{runMain, quickExit, "PATH=" + os.Getenv("PATH"), "PORT=" + port}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	base := "http://127.0.0.1:" + port
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/")
		if err == nil {
			_ = resp.Body.Close()
		}
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "%s", logs)

	post := func(contentType string, header ...string) (int, string) {
		req, err := http.NewRequest("POST", base+"/api/remediate", strings.NewReader(`{"managed_devices":[]}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", contentType)
		for i := 0; i+1 < len(header); i += 2 {
			if header[i] == "Host" {
				req.Host = header[i+1]
			}
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, b := post("text/plain")
	assert.Equal(t, 415, status, "%s", b)
	assert.Contains(t, b, "unsupported_media_type")
	status, b = post("application/json", "Host", "rebound.attacker.example:"+port)
	assert.Equal(t, 403, status, "%s", b)
	assert.Contains(t, b, "not_local")
	status, b = post("application/json", "Origin", "https://attacker.example")
	assert.Equal(t, 403, status, "%s", b)
	status, b = post("application/json; charset=utf-8", "Host", "localhost:"+port)
	assert.Equal(t, 400, status, "a JSON request to its own address gets through to validation: %s", b)
	assert.Contains(t, b, "managed_devices")
	// A form passes only from the server's own pages (their Origin).
	status, b = post("application/x-www-form-urlencoded")
	assert.Equal(t, 415, status, "a form without Origin: %s", b)
	status, b = post("application/x-www-form-urlencoded", "Origin", "https://attacker.example")
	assert.Equal(t, 403, status, "a form from another site: %s", b)
	status, _ = post("application/x-www-form-urlencoded", "Origin", "http://127.0.0.1:"+port)
	assert.NotContains(t, []int{403, 415}, status, "a form from its own page reaches the API")
}

// TestOneCallersKeysDoNotEvictAnothers: without run storage, answers are
// kept in memory within IDEMPOTENCY_MEMORY_MB; a caller sending far more
// fresh keys than that holds evicts its own answers, and another caller's
// retry still gets its first answer, triggering nothing again.
func TestOneCallersKeysDoNotEvictAnothers(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 300, intunesim.Options{WriteLimit: 1_000_000, ReadLimit: 1_000_000})
	w := startWorker(t, f.env("IDEMPOTENCY_MEMORY_MB=1")...)
	dev := f.eligible(0, 1)
	body := f.request(dev, `,"validate_device_exists":false`)
	reply, first := hostPost(t, w.url+"/api/remediate", body, "Idempotency-Key", "change-4711", "x-functions-key", "KEY-B")
	require.Equal(t, 200, reply.StatusCode, "%s", first)

	const flood = 1500 // ~1.3 KB an answer: well past 1 MiB
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				reply, b := hostPost(t, w.url+"/api/remediate", body, "Idempotency-Key", fmt.Sprintf("flood-%d", i), "x-functions-key", "KEY-A")
				if !assert.Equal(t, 200, reply.StatusCode, "%s", b) {
					return
				}
			}
		})
	}
	for i := range flood {
		next <- i
	}
	close(next)
	wg.Wait()
	triggers := f.sim.Counters().Triggers
	require.Equal(t, flood+1, triggers)

	reply, again := hostPost(t, w.url+"/api/remediate", body, "Idempotency-Key", "change-4711", "x-functions-key", "KEY-B")
	require.Equal(t, 200, reply.StatusCode)
	assert.Equal(t, "true", reply.Header.Get("Idempotent-Replayed"), "B's answer outlived A's flood")
	assert.JSONEq(t, string(first), string(again))
	reply, _ = hostPost(t, w.url+"/api/remediate", body, "Idempotency-Key", "flood-0", "x-functions-key", "KEY-A")
	assert.Empty(t, reply.Header.Get("Idempotent-Replayed"), "A's oldest went to make room for A's newest")
	assert.Equal(t, triggers+1, f.sim.Counters().Triggers)
}

// TestSelectorsAreBoundedThroughTheBinary: 5,000 names, or 5,000 targets,
// are a 400 naming where the request went past its cap, before any Graph
// read.
func TestSelectorsAreBoundedThroughTheBinary(t *testing.T) {
	t.Parallel()
	f := newTenant(t, 100, intunesim.Options{})
	w := startWorker(t, f.env()...)
	names := make([]string, 5000)
	targets := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf(`"PC-%05d"`, i)
		targets[i] = `{"script_policy_id":"` + f.script + `","device_names":["PC-1"]}`
	}
	for body, field := range map[string]string{
		`{"targets":[{"script_policy_id":"` + f.script + `","device_names":[` + strings.Join(names, ",") + `]}]}`: "targets[0].device_names",
		`{"targets":[` + strings.Join(targets, ",") + `]}`:                                                        "targets[20]",
	} {
		reply, b := hostPost(t, w.url+"/api/remediate", body)
		assert.Equal(t, 400, reply.StatusCode, "%.300s", b)
		assert.Contains(t, string(b), `"field":"`+field+`"`)
	}
	assert.Zero(t, f.sim.Counters().Requests, "refused before any Graph read")
}
