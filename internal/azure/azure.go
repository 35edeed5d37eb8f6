// Package azure adapts remediator to the Azure Functions custom-handler
// protocol. The host starts the binary with FUNCTIONS_CUSTOMHANDLER_PORT
// and calls it on 127.0.0.1: HTTP functions either forwarded (the caller's
// own request, served by the one HTTP handler as it is) or in payload mode
// (POST /<function> with a {"Data":...,"Metadata":...} envelope, turned
// into an *http.Request for the same handler, the answer wrapped in
// Outputs.res); the timer function schedule and the queue functions worker
// and poison call the application service and the run workers directly.
//
// The host never tells the worker its deadline, so every invocation runs
// under FUNCTION_TIMEOUT, and HTTP functions also under the front end's
// limit (HTTP_RESPONSE_BUDGET): the answer always leaves before the host or
// the load balancer gives up.
package azure

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/httpapi"
	"github.com/remediator/remediator/internal/runs"
)

// Settings configure the adapter.
type Settings struct {
	// FunctionTimeout mirrors host.json functionTimeout. Default
	// runs.DefaultFunctionTimeout.
	FunctionTimeout time.Duration
	// HTTPBudget bounds HTTP functions below the front end's 230 s.
	// Default 200 s.
	HTTPBudget time.Duration
	// ScheduledRequest is the request body the timer function runs; nil
	// when none is configured.
	ScheduledRequest []byte
	// Runs works the queue functions (worker, poison) and serves the timer
	// function cleanup (retention); nil when no run storage is configured.
	Runs *runs.Service
}

// Host serves the custom-handler protocol.
type Host struct {
	api      *httpapi.API
	svc      *app.Service
	settings Settings
	log      *slog.Logger
}

// DefaultHTTPBudget is HTTP_RESPONSE_BUDGET: under the 230 s the Azure
// load balancer gives an HTTP answer.
const DefaultHTTPBudget = 200 * time.Second

// New returns a Host over the one HTTP API and the application service.
func New(api *httpapi.API, svc *app.Service, s Settings, log *slog.Logger) *Host {
	if s.FunctionTimeout <= 0 {
		s.FunctionTimeout = runs.DefaultFunctionTimeout
	}
	if s.HTTPBudget <= 0 {
		s.HTTPBudget = DefaultHTTPBudget
	}
	return &Host{api: api, svc: svc, settings: s, log: log}
}

// Handler routes the host's calls: payload-mode functions and non-HTTP
// triggers by function name, everything else (forwarded HTTP functions,
// the health check) to the HTTP API.
func (h *Host) Handler() http.Handler {
	api := h.bounded(h.api.Handler())
	mux := http.NewServeMux()
	mux.Handle("POST /remediate", h.payload("remediate", api))
	mux.Handle("POST /alert", h.payload("alert", api))
	mux.Handle("POST /runs", h.payload("runs", api))
	mux.HandleFunc("POST /schedule", h.schedule)
	mux.HandleFunc("POST /worker", h.queue("worker", (*runs.Service).Work))
	mux.HandleFunc("POST /poison", h.queue("poison", (*runs.Service).Poison))
	mux.HandleFunc("POST /cleanup", h.cleanup)
	mux.Handle("/", api)
	return mux
}

// bounded runs next under the HTTP functions' deadline.
func (h *Host) bounded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), min(h.settings.FunctionTimeout, h.settings.HTTPBudget))
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// payload serves an HTTP function in payload mode: the request arrives
// inside an envelope, is served by the HTTP API as if forwarded, and the
// answer goes back as Outputs.res.
func (h *Host) payload(function string, api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := h.request(r, function)
		if err != nil {
			h.log.Warn("payload not read", "function", function, "invocation_id", r.Header.Get("X-Azure-Functions-InvocationId"), "error", err.Error())
			ans := httpapi.ErrorAnswer(fault.InvalidInvocation, "the host's payload could not be read: "+err.Error())
			b, _ := json.Marshal(ans.Body)
			writeInvokeResponse(w, invokeResponse{Outputs: map[string]any{"res": httpOutput{StatusCode: ans.Status,
				Headers: map[string]string{"Content-Type": "application/json"}, Body: string(b)}}})
			return
		}
		rec := httpapi.Record(api, req)
		writeInvokeResponse(w, invokeResponse{Outputs: map[string]any{"res": httpOutput{StatusCode: rec.Status, Headers: rec.Headers(), Body: rec.Body.String()}}})
	})
}

// request builds the caller's request from a payload-mode envelope: the
// URL the caller used (its route), method, headers and body, all from
// Data.req; the route table is the HTTP API's alone.
func (h *Host) request(r *http.Request, function string) (*http.Request, error) {
	var env envelope
	if err := json.NewDecoder(io.LimitReader(r.Body, 2*httpapi.MaxBody)).Decode(&env); err != nil {
		return nil, err
	}
	raw, ok := env.binding("req")
	if !ok {
		return nil, errors.New("no request binding in Data")
	}
	var hr hostRequest
	if err := json.Unmarshal(raw, &hr); err != nil {
		return nil, err
	}
	// The caller's URL as the host received it (Data.req.Url): its path is
	// the route, as in forwarding mode; without one, the function's own
	// route under the prefix.
	u := &url.URL{Scheme: "https", Host: "localhost", Path: httpapi.RoutePrefix + "/" + function}
	if p, err := url.Parse(hr.URL); err == nil && p.Host != "" {
		u.Scheme, u.Host, u.Path, u.RawPath, u.RawQuery = p.Scheme, p.Host, p.Path, p.RawPath, p.RawQuery
	}
	method := cmp.Or(hr.Method, http.MethodPost)
	if u.RawQuery == "" && len(hr.Query) > 0 {
		q := url.Values{}
		for k, v := range hr.Query {
			q.Set(k, v)
		}
		u.RawQuery = q.Encode()
	}
	var body []byte
	if hr.Body != nil {
		body = []byte(*hr.Body)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range hr.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("X-Azure-Functions-InvocationId", r.Header.Get("X-Azure-Functions-InvocationId"))
	return req, nil
}

// schedule serves the timer function: it runs SCHEDULED_REQUEST and always
// answers 2xx to the host (anything else marks the invocation failed),
// with the summary in Logs and ReturnValue.
func (h *Host) schedule(w http.ResponseWriter, r *http.Request) {
	invocation := r.Header.Get("X-Azure-Functions-InvocationId")
	var env envelope
	var ti timerInfo
	err := json.NewDecoder(io.LimitReader(r.Body, httpapi.MaxBody)).Decode(&env)
	if err == nil {
		if raw, ok := env.binding("timer"); ok {
			ti, err = decodeTimer(raw)
		}
	}
	if err != nil {
		h.log.Warn("timer payload not read; running the schedule anyway", "invocation_id", invocation, "error", err.Error())
	}
	if h.settings.ScheduledRequest == nil {
		msg := "schedule: no SCHEDULED_REQUEST or SCHEDULED_REQUEST_FILE is configured; nothing to run"
		h.log.Warn(msg, "invocation_id", invocation)
		writeInvokeResponse(w, invokeResponse{Logs: []string{msg}})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.settings.FunctionTimeout)
	defer cancel()
	started := time.Now()
	res, err := h.svc.Scheduled(ctx, h.settings.ScheduledRequest)
	ans := h.api.RenderSchedule(res, err)
	h.api.Audit(ctx, "schedule", ans, started, "invocation_id", invocation, "caller", "timer", "past_due", ti.IsPastDue)
	out, _ := json.Marshal(ans.Body)
	writeInvokeResponse(w, invokeResponse{Logs: []string{line(ans.Status, ans.Body), string(out)}, ReturnValue: ans.Body})
}
