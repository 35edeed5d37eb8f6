package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/intunesim"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/testing/azurite"
	"github.com/remediator/remediator/internal/testing/funchost"
)

// startFront puts the Functions host's HTTP front, with its per-function
// keys, in front of a worker: the app's own host.json and function.json
// decide routes and keys.
func startFront(t testing.TB, w *worker) *funchost.Front {
	t.Helper()
	app, err := funchost.Load("..")
	require.NoError(t, err)
	front, err := funchost.Start(app, w.url)
	require.NoError(t, err)
	t.Cleanup(front.Close)
	return front
}

func withKey(t testing.TB, raw, key string) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	q := u.Query()
	q.Set("code", key)
	u.RawQuery = q.Encode()
	return u.String()
}

// TestFlowFollowsItsRunWithTheSubmitKey plays a Logic App (or a connector)
// that holds only the remediate function's key, through a host that
// admits a key only at its own function: it submits, follows Location as
// given until the run is done, and reads every page through nextLink with
// that same key.
func TestFlowFollowsItsRunWithTheSubmitKey(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	f := newTenant(t, 1500, intunesim.Options{WriteLimit: 100000, ReadLimit: 100000})
	w := startWorker(t, f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=flow", "RUN_PAGE_SIZE=100")...)
	front := startFront(t, w)
	key := front.App.Key("remediate")
	devs := f.eligible(0, 250)

	reply, b := hostPost(t, front.URL+"/api/remediate", f.request(devs, `,"mode":"async"`))
	require.Equal(t, 401, reply.StatusCode, "no key, no run: %s", b)
	reply, b = hostPost(t, front.URL+"/api/remediate?code="+url.QueryEscape(front.App.Key("runs")), f.request(devs, `,"mode":"async"`))
	require.Equal(t, 401, reply.StatusCode, "the runs function's key does not open remediate: %s", b)

	reply, b = hostPost(t, front.URL+"/api/remediate?code="+url.QueryEscape(key), f.request(devs, `,"mode":"async"`))
	require.Equal(t, 202, reply.StatusCode, "%s", b)
	var acc struct {
		RunID string `json:"run_id"`
	}
	require.NoError(t, json.Unmarshal(b, &acc))
	loc := reply.Header.Get("Location")
	require.True(t, strings.HasPrefix(loc, front.URL+"/api/remediate/runs/"+acc.RunID+"?"), loc)
	assert.NotContains(t, string(b), key, "the key travels in Location only, never in a body")

	// The first poll, as the designer makes it: Location as given.
	reply, b = get(t, loc)
	require.Equal(t, 202, reply.StatusCode, "the submit key opens the run's status: %s", b)
	assert.Equal(t, loc, reply.Header.Get("Location"))
	// What the previous Location did: the runs function's route with the
	// remediate key is refused by the host.
	reply, _ = get(t, withKey(t, front.URL+"/api/runs/"+acc.RunID, key))
	assert.Equal(t, 401, reply.StatusCode, "a function key opens only its own function")
	reply, _ = get(t, withKey(t, front.URL+"/api/remediate/runs/"+acc.RunID, front.App.Key("alert")))
	assert.Equal(t, 401, reply.StatusCode)

	host := newQueueHost(t, conn, "flow")
	host.pump(t, w, host.work, "worker")

	var devices []remediate.DeviceResult
	next, pages := loc, 0
	for next != "" {
		reply, b = get(t, next)
		require.Equal(t, 200, reply.StatusCode, "page %d: %s", pages, b)
		var p runPage
		require.NoError(t, json.Unmarshal(b, &p))
		assert.Equal(t, pages, p.Page)
		assert.Equal(t, 250, p.Counts.Succeeded)
		assert.NotContains(t, string(b), key, "nor in a page")
		devices = append(devices, p.Devices...)
		pages++
		next = ""
		if p.NextLink != "" {
			require.True(t, strings.HasPrefix(p.NextLink, front.URL+"/api/remediate/runs/"+acc.RunID), p.NextLink)
			next = withKey(t, p.NextLink, key)
		}
	}
	assert.Equal(t, 3, pages)
	require.Len(t, devices, 250)
	for i, d := range devices {
		assert.Equal(t, devs[i].ID, d.DeviceID)
		assert.Equal(t, 1, f.sim.TriggerCount(d.DeviceID, f.script))
	}

	// The same key in the header works as well, and follow-up needs
	// nothing more.
	req, err := http.NewRequest(http.MethodGet, front.URL+"/api/remediate/runs/"+acc.RunID+"?follow=true", nil)
	require.NoError(t, err)
	req.Header.Set("x-functions-key", key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	// A host key is a caller of its own: it opens every function, but not
	// the runs another key started.
	reply, _ = get(t, withKey(t, front.URL+"/api/runs/"+acc.RunID, front.App.HostKey))
	assert.Equal(t, 404, reply.StatusCode)
	assert.NotContains(t, w.logs.String(), key, "no function key in a log line")

	// An id that is not one (bytes that are not even text) is no run: 404,
	// without a storage call or an error line.
	for _, id := range []string{"%ff%fe", "..%2f..%2fmeta", strings.Repeat("a", 300)} {
		reply, b = get(t, withKey(t, front.URL+"/api/remediate/runs/"+id, key))
		assert.Equal(t, 404, reply.StatusCode, "%s: %s", id, b)
	}
	assert.NotContains(t, w.logs.String(), `"level":"ERROR"`)
}

// TestLargeSynchronousAnswerIsReplayed: a 6,000-device synchronous answer
// (about 1.5 MB, over an Azure Table entity's 1 MiB) is kept for its
// Idempotency-Key in run storage, and a retry after it finished, from
// another process, gets the same answer and triggers nothing.
func TestLargeSynchronousAnswerIsReplayed(t *testing.T) {
	t.Parallel()
	conn := azurite.Start(t)
	f := newTenant(t, 12000, intunesim.Options{WriteLimit: 100000, ReadLimit: 100000})
	env := f.env("AzureWebJobsStorage="+conn, "REMEDIATION_QUEUE=large", "MAX_DEVICES_PER_RUN=6000", "MAX_CONCURRENCY=32")
	w := startWorker(t, env...)
	devs := f.eligible(0, 6000)
	body := f.request(devs, `,"mode":"sync"`)

	reply, first := hostPost(t, w.url+"/api/remediate", body, "Idempotency-Key", "change-6000")
	require.Equal(t, 200, reply.StatusCode, "%.500s", first)
	require.Greater(t, len(first), 1<<20, "the answer is larger than one table entity")
	s := summaryOf(t, first)
	require.Len(t, s.Devices, 6000)
	assert.Equal(t, 6000, s.Counts.Succeeded)
	assert.Empty(t, reply.Header.Get("Idempotency-Kept"))
	assert.NotContains(t, w.logs.String(), "answer not kept")

	other := startWorker(t, env...)
	reply, again := hostPost(t, other.url+"/api/remediate", body, "Idempotency-Key", "change-6000")
	require.Equal(t, 200, reply.StatusCode, "%.500s", again)
	assert.Equal(t, "true", reply.Header.Get("Idempotent-Replayed"))
	assert.JSONEq(t, string(first), string(again), "the same answer")
	assert.Equal(t, 6000, f.sim.Counters().Triggers, "every device triggered once")
	for _, d := range devs {
		require.Equal(t, 1, f.sim.TriggerCount(d.ID, f.script), d.ID)
	}
}
