package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

// codes is the one table from the codes the layers below answer with to
// HTTP statuses, with what each means to a caller. Per-device failures are
// never a 5xx: callers such as Logic Apps retry 5xx and would trigger
// devices again.
var codes = []struct {
	Code    fault.Code
	Status  int
	Meaning string
}{
	{fault.DevicesFailed, http.StatusFailedDependency, "the run ran (the body is its summary): a device failed or was not attempted and `ignore_partial_failures` is false"},
	{fault.InvalidRequest, http.StatusBadRequest, "the request is invalid; `error.details` names each field at fault"},
	{fault.InvalidInvocation, http.StatusBadRequest, "the Functions host's payload could not be read"},
	{fault.RequestTooLarge, http.StatusRequestEntityTooLarge, "the body is over 1 MiB (about 10,000 devices): split the request"},
	{fault.MethodNotAllowed, http.StatusMethodNotAllowed, "wrong method for the route (`Allow` says which)"},
	{fault.UnsupportedMediaType, http.StatusUnsupportedMediaType, "local `serve`: a POST body not sent as `Content-Type: application/json`"},
	{fault.FormRejected, http.StatusForbidden, "a cancel or resume sent from a web page that is not this deployment's own, or a form without its page's token: reload the page"},
	{fault.NotLocal, http.StatusForbidden, "local `serve`: a `Host` other than its loopback address, or a request from a web page (`Origin`)"},
	{fault.NotFound, http.StatusNotFound, "no such run, no such route, or a deployment without run storage"},
	{fault.ScriptNotAllowed, http.StatusForbidden, "a script is not on `ALLOWED_SCRIPT_POLICY_IDS`"},
	{fault.ScriptChanged, http.StatusForbidden, "a pinned script was edited after its approval (`ALLOWED_SCRIPT_PINS`)"},
	{fault.CallerNotAllowed, http.StatusForbidden, "the request is outside its caller's rule in `CALLER_POLICY` (scripts, tenants, max_devices)"},
	{fault.UnknownTenant, http.StatusForbidden, "no credential for the request's `tenant_id`"},
	{fault.ScriptInvalid, http.StatusUnprocessableEntity, "a script does not exist or is not a remediation script"},
	{fault.TargetResolutionFailed, http.StatusUnprocessableEntity, "a selector (filter, name, group) could not be resolved"},
	{fault.DeviceValidationFailed, http.StatusUnprocessableEntity, "listed devices failed validation (the body is the run's summary, each device with its reason)"},
	{fault.TooManyDevices, http.StatusUnprocessableEntity, "the targets resolve to more than `MAX_DEVICES_PER_RUN`"},
	{fault.AlertNotActionable, http.StatusUnprocessableEntity, "the alert names no device or no script"},
	{fault.AnswerTooLarge, http.StatusUnprocessableEntity, "more devices than one answer can account for (`MAX_ANSWER_BYTES`) and no run storage to take the run: split it"},
	{fault.IdempotencyKeyReused, http.StatusUnprocessableEntity, "the `Idempotency-Key` was used for another body"},
	{fault.ConfirmationRequired, http.StatusPreconditionRequired, "over `MAX_FLEET_PERCENT`: send `confirm_device_count` (the message says the number)"},
	{fault.TooManyRequests, http.StatusTooManyRequests, "the caller sent more requests than `CALLER_RATE` allows; retry after `Retry-After`"},
	{fault.InProgress, http.StatusConflict, "a request with this `Idempotency-Key` is still being answered; retry after `Retry-After`"},
	{fault.FleetSizeUnknown, http.StatusServiceUnavailable, "the tenant's Windows devices could not be counted for `MAX_FLEET_PERCENT`"},
	{fault.GraphUnavailable, http.StatusServiceUnavailable, "Graph could not be read while preparing the run (throttled, unavailable): send it again after `Retry-After`"},
	{fault.TokenUnavailable, http.StatusServiceUnavailable, "no Graph token could be had"},
	{fault.KeyVaultUnavailable, http.StatusServiceUnavailable, "Key Vault could not be read, or the secret does not exist"},
	{fault.BadCredential, http.StatusServiceUnavailable, "the secret in Key Vault is not a usable credential"},
	{fault.CredentialUnavailable, http.StatusServiceUnavailable, "the credential could not be resolved"},
	{fault.StorageUnavailable, http.StatusServiceUnavailable, "run storage could not be reached; nothing was triggered"},
	{fault.Internal, http.StatusInternalServerError, "a fault of remediator's own"},
}

// StatusOf is the HTTP status of code (500 for a code the table lacks).
func StatusOf(code fault.Code) int {
	for _, c := range codes {
		if c.Code == code {
			return c.Status
		}
	}
	return http.StatusInternalServerError
}

// CodesMarkdown is the README's table of codes and statuses, generated
// from the one table.
func CodesMarkdown() string {
	var b strings.Builder
	b.WriteString("| status | code | meaning |\n|---|---|---|\n")
	for _, c := range codes {
		fmt.Fprintf(&b, "| %d | `%s` | %s |\n", c.Status, c.Code, c.Meaning)
	}
	return b.String()
}

// Answer is an HTTP answer: status, extra headers and the value sent as
// JSON.
type Answer struct {
	Status  int
	Headers map[string]string
	Body    any
	// HTML, when set, is sent instead of Body (the run as a page).
	HTML []byte
}

// links is where a caller finds a run: the scheme and host it used, and
// the function key it passed in the query string, if any, which goes into
// Location only (pollers such as Logic Apps may not repeat headers), never
// into a body or a log line.
type links struct {
	base, code string
	// runs is the route runs are read under: that of the function the
	// request came to, so the key that opened it opens the run too.
	runs string
}

func (a *API) linksOf(r *http.Request) links {
	prefix, ok := r.Context().Value(prefixKey{}).(string)
	if !ok {
		prefix = RoutePrefix
	}
	l := links{base: a.baseURL(r), code: r.URL.Query().Get("code"), runs: prefix + "/runs/"}
	if fn := FunctionOf(prefix, r.URL.Path); fn == "remediate" || fn == "alert" {
		l.runs = prefix + "/" + fn + "/runs/"
	}
	return l
}

// baseURL is the scheme and host for absolute Location URLs, from trusted
// configuration only: PublicBaseURL (PUBLIC_BASE_URL, or WEBSITE_HOSTNAME,
// which Azure sets), else, for local runs, the loopback host the request
// came to; else none (relative URLs). Forwarding headers and other Host
// values are never used: a caller could point another caller's Location,
// with its function key, at a host of its choosing.
func (a *API) baseURL(r *http.Request) string {
	if a.opts.PublicBaseURL != "" {
		return a.opts.PublicBaseURL
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); (ip != nil && ip.IsLoopback()) || host == "localhost" {
		return "http://" + r.Host
	}
	return ""
}

// locations returns the status URL for the body and the Location header.
func (l links) locations(id string) (body, header string) {
	runs := l.runs
	if runs == "" {
		runs = RoutePrefix + "/runs/" // a timer's run: the runs function
	}
	body = l.base + runs + url.PathEscape(id)
	return body, l.keyed(body, nil)
}

// keyed is u with the query q and the function key the caller passed in
// the query string, if any: a link the caller itself holds.
func (l links) keyed(u string, q url.Values) string {
	if l.code != "" {
		q = maps.Clone(q)
		if q == nil {
			q = url.Values{}
		}
		q.Set("code", l.code)
	}
	if len(q) == 0 {
		return u
	}
	return u + "?" + q.Encode()
}

func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second)))
}

// render is the HTTP answer to a run's result or refusal.
func (a *API) render(res app.Result, err error, l links) Answer {
	if err != nil {
		var e *fault.Error
		if !errors.As(err, &e) {
			e = &fault.Error{Code: fault.Internal, Message: err.Error()}
		}
		ans := Answer{Status: StatusOf(e.Code), Body: errorBody(e.Code, e.Message, e.Details)}
		if sum := remediate.Rejected(e); sum != nil {
			ans.Body = compact(sum, a.opts.MaxAnswerBytes)
		}
		if e.RetryAfter > 0 {
			ans.Headers = map[string]string{"Retry-After": retryAfter(e.RetryAfter)}
		}
		return ans
	}
	if acc := res.Accepted; acc != nil {
		bodyURL, header := l.locations(acc.RunID)
		wait := min(max(acc.Estimated/4, 5*time.Second), 60*time.Second)
		return Answer{Status: http.StatusAccepted,
			Headers: map[string]string{"Location": header, "Retry-After": retryAfter(wait)},
			Body: Accepted{RunID: acc.RunID, Status: remediate.StatusAccepted, StatusURL: bodyURL, ResolvedDeviceCount: acc.ResolvedDeviceCount,
				Counts: acc.Counts, Queued: acc.Queued, EstimatedDurationMS: acc.Estimated.Milliseconds(), Warnings: acc.Warnings}}
	}
	return Answer{Status: summaryStatus(res.Summary), Body: compact(res.Summary, a.opts.MaxAnswerBytes)}
}

// RenderSchedule is the answer to a run of a trigger that reports one but
// has no caller to link back to (timers, schedules).
func (a *API) RenderSchedule(res app.Result, err error) Answer { return a.render(res, err, links{}) }

// compact fits a summary into max bytes of JSON (0 is no bound): first
// without the devices that succeeded or are planned, counted in
// omitted_devices; then also without the other devices' messages. The
// counts always cover every device, and every device that did not succeed
// is listed (the run was refused before it started if they could not be).
func compact(s *remediate.Summary, max int) *remediate.Summary {
	if max <= 0 || s == nil || jsonSize(s) <= max {
		return s
	}
	c := *s
	c.Devices = make([]remediate.DeviceResult, 0, len(s.Devices))
	for _, d := range s.Devices {
		if d.Outcome == remediate.Succeeded || d.Outcome == remediate.Planned {
			c.OmittedDevices++
			continue
		}
		c.Devices = append(c.Devices, d)
	}
	c.Warnings = append(append([]string(nil), s.Warnings...), fmt.Sprintf(
		"%d devices that succeeded (or are planned) are not listed: the answer would be over MAX_ANSWER_BYTES (%d bytes); counts cover every device, and a run sent with mode async lists every device in its pages", c.OmittedDevices, max))
	if jsonSize(&c) <= max {
		return &c
	}
	for i := range c.Devices {
		c.Devices[i].Message = ""
	}
	c.Warnings = append(c.Warnings, "the listed devices' messages are left out to fit MAX_ANSWER_BYTES")
	return &c
}

func jsonSize(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return 0
	}
	return len(b)
}

// summaryStatus is the status of a run that ran (or was planned): 424 when
// a device failed or was not attempted and partial failures are not
// ignored, else 200.
func summaryStatus(s *remediate.Summary) int {
	failed := s.Counts.Failed + s.Counts.NotAttempted
	switch s.Status {
	case remediate.StatusCancelled:
		failed = s.Counts.Failed // devices not attempted are what the caller asked for
	case remediate.StatusHalted:
		return http.StatusOK // a final answer: the flow decides to resume or cancel
	}
	if s.Status != remediate.StatusPlanned && failed > 0 && !s.IgnorePartialFailures {
		return StatusOf(fault.DevicesFailed)
	}
	return http.StatusOK
}

// Accepted is the body of a 202.
type Accepted struct {
	RunID               string           `json:"run_id"`
	Status              string           `json:"status"`
	StatusURL           string           `json:"status_url"`
	ResolvedDeviceCount int              `json:"resolved_device_count"`
	Counts              remediate.Counts `json:"counts"`
	Queued              int              `json:"queued"`
	EstimatedDurationMS int64            `json:"estimated_duration_ms,omitempty"`
	Warnings            []string         `json:"warnings"`
}

// RunPage is a finished run's summary with one page of its devices.
type RunPage struct {
	*remediate.Summary
	Page      int `json:"page"`
	PageCount int `json:"page_count"`
	// NextLink is the next page's full URL (the name Power Platform's
	// x-ms-pageable accepts), absent on the last page.
	NextLink string `json:"nextLink,omitempty"`
	// ResumeURL and CancelURL, for a halted rollout, are where its caller
	// goes on (POST, same key) or stops it.
	ResumeURL string `json:"resume_url,omitempty"`
	CancelURL string `json:"cancel_url,omitempty"`
}

// Running is the body of a 202 for a run that is not finished.
type Running struct {
	*remediate.Summary
	Queued    int    `json:"queued"`
	StatusURL string `json:"status_url"`
	Page      int    `json:"page"`
	PageCount int    `json:"page_count"`
}

// renderStatus is the answer to GET runs/{id}.
func renderStatus(id string, st runs.Status, l links) Answer {
	bodyURL, header := l.locations(id)
	if !st.Done {
		return Answer{Status: http.StatusAccepted, Headers: map[string]string{"Location": header, "Retry-After": retryAfter(st.RetryAfter)},
			Body: Running{Summary: st.Summary, Queued: st.Queued, StatusURL: bodyURL, Page: st.Page, PageCount: st.PageCount}}
	}
	rp := RunPage{Summary: st.Summary, Page: st.Page, PageCount: st.PageCount}
	if st.Page+1 < st.PageCount {
		rp.NextLink = bodyURL + "?page=" + strconv.Itoa(st.Page+1)
	}
	if st.Summary.Status == remediate.StatusHalted {
		rp.ResumeURL, rp.CancelURL = bodyURL+"/resume", bodyURL+"/cancel"
	}
	return Answer{Status: summaryStatus(st.Summary), Body: rp}
}

// ErrorResponse is the body of every refusal that has no run summary.
type ErrorResponse struct {
	Error struct {
		Code    fault.Code         `json:"code"`
		Message string             `json:"message"`
		Details []fault.FieldError `json:"details,omitempty"`
	} `json:"error"`
}

func errorBody(code fault.Code, msg string, details []fault.FieldError) ErrorResponse {
	var e ErrorResponse
	e.Error.Code, e.Error.Message, e.Error.Details = code, msg, details
	return e
}

// ErrorAnswer is a refusal with code and message, its status from the
// table (for adapters that refuse a transport they cannot read).
func ErrorAnswer(code fault.Code, msg string) Answer {
	return Answer{Status: StatusOf(code), Body: errorBody(code, msg, nil)}
}

// write sends a as JSON.
func write(w http.ResponseWriter, a Answer) {
	if a.HTML != nil {
		for k, v := range a.Headers {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(a.Status)
		_, _ = w.Write(a.HTML)
		return
	}
	b, err := json.Marshal(a.Body)
	if err != nil {
		a.Status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"the answer could not be encoded"}}`)
	}
	for k, v := range a.Headers {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.Status)
	_, _ = w.Write(append(b, '\n'))
}
