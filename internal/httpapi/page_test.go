package httpapi

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/replay"
	"github.com/remediator/remediator/internal/runs"
)

// TestPageEscapesWhatDevicesSay: device names, messages and script output
// come from Graph and from the devices' own scripts: the page shows them
// as text, never as markup, and carries no script, remote resource or key
// other than the link its caller holds.
func TestPageEscapesWhatDevicesSay(t *testing.T) {
	t.Parallel()
	hostile := `<script>alert(1)</script><img src=x onerror=alert(2)>"'&`
	s := &remediate.Summary{RunID: "0123456789abcdef01234567", Status: remediate.StatusPartiallySucceeded,
		Counts: remediate.Counts{Total: 3, Succeeded: 2, Failed: 1},
		Devices: []remediate.DeviceResult{
			{DeviceID: "d1", DeviceName: hostile, Outcome: remediate.Failed, Reason: "graph_error", Message: hostile},
			{DeviceID: "d2", DeviceName: "PC-2", Outcome: remediate.Succeeded, FollowUp: &remediate.FollowUp{State: remediate.FollowScriptError, Error: hostile}},
			{DeviceID: "d3", DeviceName: "PC-3", Outcome: remediate.Succeeded, FollowUp: &remediate.FollowUp{State: remediate.FollowNoIssue}},
		}}
	r := httptest.NewRequest("GET", "https://app.example/api/remediate/runs/0123456789abcdef01234567?format=html&follow=true&code=KEY-1", nil)
	l := links{base: "https://app.example", code: "KEY-1", runs: "/api/remediate/runs/"}
	ans := renderPage(s.RunID, runs.Status{Summary: s, Done: true, PageCount: 1}, l, r, true)
	require.Equal(t, 200, ans.Status)
	page := string(ans.HTML)
	assert.NotContains(t, page, "<script")
	assert.NotContains(t, page, "<img")
	assert.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;")
	assert.Equal(t, 2, strings.Count(page, `class="device"`), "the failed device and the script error need attention, the rest not")
	assert.Contains(t, page, `aria-label="Script error: 1 of 2"`, "the scripts' chart counts the followed devices")
	assert.Equal(t, strings.Count(page, "KEY-1"), strings.Count(page, "code=KEY-1"), "the key only in the caller's own links")
	assert.Contains(t, ans.Headers["Content-Security-Policy"], "default-src 'none'")
	assert.Regexp(t, `style-src 'sha256-[A-Za-z0-9+/=]+'`, ans.Headers["Content-Security-Policy"])
	assert.NotRegexp(t, `(?i)https?://(?:[a-z0-9-]+\.)*(?:googleapis|cdn|jsdelivr|unpkg)`, page, "nothing remote")

	// Paged: the page says which, and links the next with the same key.
	ans = renderPage(s.RunID, runs.Status{Summary: s, Done: true, Page: 1, PageCount: 3}, l, r, false)
	page = string(ans.HTML)
	assert.Contains(t, page, "page 2 of the run's 3", "the second page, counted from 1")
	assert.Contains(t, page, "?code=KEY-1&amp;format=html&amp;page=2")
	assert.Contains(t, page, "?code=KEY-1&amp;format=html&amp;page=0")
}

// TestPageThroughTheAPI: the status URL answers the page for a browser
// (Accept: text/html) or format=html, for the run's caller only; its
// counts are the JSON's; a running run's page refreshes itself and offers
// to cancel it with a POST form and the page's token, which the API
// checks; a POST from another site is refused.
func TestPageThroughTheAPI(t *testing.T) {
	t.Parallel()
	api, tenant, q := asyncAPI(t, time.Second, replay.NewMemory())
	api.opts.PublicBaseURL = "https://app.example"
	h := api.Handler()
	status, _, out := call(h, "POST", "/api/remediate", listed(tenant, 120, `,"mode":"async"`))
	require.Equal(t, 202, status, "%s", out)
	run := decode[Accepted](t, out).RunID
	page := func(headers ...string) (int, http.Header, string) {
		st, hdr, b := call(h, "GET", "/api/remediate/runs/"+run+"?format=html", "", headers...)
		return st, hdr, string(b)
	}
	st, hdr, body := page()
	require.Equal(t, 200, st)
	assert.Equal(t, "text/html; charset=utf-8", hdr.Get("Content-Type"))
	if !strings.Contains(body, `id="state">succeeded`) {
		assert.Equal(t, "10", hdr.Get("Refresh"), "a run under way reloads itself")
		assert.Contains(t, body, `id="cancel"`)
		cookie := hdr.Get("Set-Cookie")
		require.Contains(t, cookie, csrfCookie+"=")
		assert.Contains(t, cookie, "SameSite=Strict")
		token := regexp.MustCompile(`name="csrf" value="([0-9a-f]{32})"`).FindStringSubmatch(body)
		require.NotNil(t, token)

		st, _, out := call(h, "POST", "/api/remediate/runs/"+run+"/cancel", "csrf="+token[1],
			"Content-Type", "application/x-www-form-urlencoded", "Origin", "https://evil.example", "Cookie", strings.Split(cookie, ";")[0])
		assert.Equal(t, 403, st, "another site's form: %s", out)
		st, _, out = call(h, "POST", "/api/remediate/runs/"+run+"/cancel", "csrf=0000",
			"Content-Type", "application/x-www-form-urlencoded", "Origin", "https://app.example", "Cookie", strings.Split(cookie, ";")[0])
		assert.Equal(t, 403, st, "a form without its page's token: %s", out)
	}
	q.Wait()
	st, _, body = page("Accept", "text/html,application/xhtml+xml")
	require.Equal(t, 200, st)
	assert.Contains(t, body, `id="state">succeeded`)
	assert.NotContains(t, body, `id="cancel"`, "a finished run offers no cancel")
	_, _, js := call(h, "GET", "/api/remediate/runs/"+run, "")
	s := decode[remediate.Summary](t, js)
	total := regexp.MustCompile(`id="total">(\d+)<`).FindStringSubmatch(body)
	require.NotNil(t, total)
	assert.Equal(t, strconv.Itoa(s.Counts.Total), total[1], "the page's counts are the JSON's")
	assert.Contains(t, body, `data-outcome="Triggered" data-count="`+strconv.Itoa(s.Counts.Succeeded)+`"`)

	api.opts.Caller = func(*http.Request) app.Caller { return app.Caller{ID: "someone-else"} }
	st, _, _ = page()
	assert.Equal(t, 404, st, "another caller's run is not found as a page either")
}
