package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

// statusOf is the one table from the codes the layers below answer with to
// HTTP statuses. Per-device failures are never a 5xx: callers such as
// Logic Apps retry 5xx and would trigger devices again.
var statusOf = map[string]int{
	// The request itself.
	remediate.CodeInvalidRequest: http.StatusBadRequest,
	"request_too_large":          http.StatusRequestEntityTooLarge,
	"method_not_allowed":         http.StatusMethodNotAllowed,
	"invalid_invocation":         http.StatusBadRequest,
	app.CodeNotFound:             http.StatusNotFound,
	// Runs refused before their first trigger.
	remediate.CodeScriptNotAllowed:       http.StatusForbidden,
	remediate.CodeScriptChanged:          http.StatusForbidden,
	remediate.CodeScriptInvalid:          http.StatusUnprocessableEntity,
	remediate.CodeTargetResolutionFailed: http.StatusUnprocessableEntity,
	remediate.CodeDeviceValidationFailed: http.StatusUnprocessableEntity,
	remediate.CodeTooManyDevices:         http.StatusUnprocessableEntity,
	remediate.CodeConfirmationRequired:   http.StatusPreconditionRequired,
	remediate.CodeFleetSizeUnknown:       http.StatusServiceUnavailable,
	remediate.CodeGraphUnavailable:       http.StatusServiceUnavailable,
	app.CodeAlertNotActionable:           http.StatusUnprocessableEntity,
	// Credentials.
	"unknown_tenant":         http.StatusForbidden,
	"token_unavailable":      http.StatusServiceUnavailable,
	"key_vault_unavailable":  http.StatusServiceUnavailable,
	"bad_credential":         http.StatusServiceUnavailable,
	"credential_unavailable": http.StatusServiceUnavailable,
	// Storage and idempotency.
	app.CodeStorageUnavailable: http.StatusServiceUnavailable,
	"in_progress":              http.StatusConflict,
	"idempotency_key_reused":   http.StatusUnprocessableEntity,
	// Runs that ran: some devices failed or were not attempted, and the
	// request does not ignore partial failures.
	"devices_failed": http.StatusFailedDependency,
	app.CodeInternal: http.StatusInternalServerError,
}

// StatusOf is the HTTP status of code (500 for a code the table lacks).
func StatusOf(code string) int {
	if s, ok := statusOf[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Answer is an HTTP answer: status, extra headers and the value sent as
// JSON.
type Answer struct {
	Status  int
	Headers map[string]string
	Body    any
}

// links is where a caller finds a run: the scheme and host it used, and
// the function key it passed in the query string, if any, which goes into
// Location only (pollers such as Logic Apps may not repeat headers), never
// into a body or a log line.
type links struct {
	base, code string
}

func linksOf(r *http.Request) links {
	return links{base: BaseURL(r), code: r.URL.Query().Get("code")}
}

// BaseURL is the scheme and host a request was sent to, for absolute
// Location URLs: the forwarding headers when a front end set them, else
// the Host header; https unless the request came over plain HTTP to this
// machine (local runs).
func BaseURL(r *http.Request) string {
	host := r.Host
	if h := r.Header.Get("X-Forwarded-Host"); h != "" {
		host = h
	}
	if host == "" {
		return ""
	}
	scheme := "https"
	switch p := r.Header.Get("X-Forwarded-Proto"); {
	case p != "":
		scheme = p
	case r.TLS == nil && (strings.HasPrefix(host, "127.0.0.1") || strings.HasPrefix(host, "localhost") || strings.HasPrefix(host, "[::1]")):
		scheme = "http"
	}
	return scheme + "://" + host
}

// statusPath is the route of a run's status.
func statusPath(id string) string { return "/api/runs/" + url.PathEscape(id) }

// locations returns the status URL for the body and the Location header.
func (l links) locations(id string) (body, header string) {
	body = l.base + statusPath(id)
	header = body
	if l.code != "" {
		header += "?code=" + url.QueryEscape(l.code)
	}
	return body, header
}

func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second)))
}

// Render is the HTTP answer to a run's result or refusal, for HTTP
// requests and for the triggers that report one (timers, schedules).
func Render(res app.Result, err error, l links) Answer {
	if err != nil {
		var e *app.Error
		if !errors.As(err, &e) {
			e = &app.Error{Code: app.CodeInternal, Message: err.Error()}
		}
		a := Answer{Status: StatusOf(e.Code), Body: errorBody(e.Code, e.Message, e.Details)}
		if e.Summary != nil {
			a.Body = e.Summary
		}
		if e.RetryAfter > 0 {
			a.Headers = map[string]string{"Retry-After": retryAfter(e.RetryAfter)}
		}
		return a
	}
	if acc := res.Accepted; acc != nil {
		bodyURL, header := l.locations(acc.RunID)
		wait := min(max(acc.Estimated/4, 5*time.Second), 60*time.Second)
		return Answer{Status: http.StatusAccepted,
			Headers: map[string]string{"Location": header, "Retry-After": retryAfter(wait)},
			Body: Accepted{RunID: acc.RunID, Status: remediate.StatusAccepted, StatusURL: bodyURL, ResolvedDeviceCount: acc.ResolvedDeviceCount,
				Counts: acc.Counts, Queued: acc.Queued, EstimatedDurationMS: acc.Estimated.Milliseconds(), Warnings: acc.Warnings}}
	}
	return Answer{Status: summaryStatus(res.Summary), Body: res.Summary}
}

// RenderSchedule is Render for triggers without a caller to link back to.
func RenderSchedule(res app.Result, err error) Answer { return Render(res, err, links{}) }

// summaryStatus is the status of a run that ran (or was planned): 424 when
// a device failed or was not attempted and partial failures are not
// ignored, else 200.
func summaryStatus(s *remediate.Summary) int {
	if s.Status != remediate.StatusPlanned && s.Counts.Failed+s.Counts.NotAttempted > 0 && !s.IgnorePartialFailures {
		return StatusOf("devices_failed")
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
	Page      int    `json:"page"`
	PageCount int    `json:"page_count"`
	NextPage  string `json:"next_page,omitempty"`
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
		rp.NextPage = bodyURL + "?page=" + strconv.Itoa(st.Page+1)
	}
	return Answer{Status: summaryStatus(st.Summary), Body: rp}
}

// ErrorResponse is the body of every refusal that has no run summary.
type ErrorResponse struct {
	Error struct {
		Code    string                 `json:"code"`
		Message string                 `json:"message"`
		Details []remediate.FieldError `json:"details,omitempty"`
	} `json:"error"`
}

func errorBody(code, msg string, details []remediate.FieldError) ErrorResponse {
	var e ErrorResponse
	e.Error.Code, e.Error.Message, e.Error.Details = code, msg, details
	return e
}

// ErrorAnswer is a refusal with code and message, its status from the
// table (for adapters that refuse a transport they cannot read).
func ErrorAnswer(code, msg string) Answer {
	return Answer{Status: StatusOf(code), Body: errorBody(code, msg, nil)}
}

// write sends a as JSON.
func write(w http.ResponseWriter, a Answer) {
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
