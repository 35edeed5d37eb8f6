// Package httpapi exposes the remediation engine over HTTP: POST
// /api/remediate takes a remediation request and answers with the run's
// summary. The Azure Functions and Lambda adapters mount the same handler.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/alert"
	"github.com/remediator/remediator/internal/credential"
	"github.com/remediator/remediator/internal/remediate"
)

// MaxBody is the largest request body accepted (1 MiB holds ~10,000
// devices).
const MaxBody = 1 << 20

// Runner runs a validated plan; *remediate.Engine implements it.
type Runner interface {
	Run(ctx context.Context, plan remediate.Plan) *remediate.Summary
}

// Credentials resolves the Graph credential of a run's tenant before
// anything is triggered and returns the context the run carries it in;
// *credential.Source implements it. Its errors are *credential.Error.
type Credentials interface {
	Prepare(ctx context.Context, tenant string) (context.Context, error)
}

// Options configure the API.
type Options struct {
	// Limits bound requests.
	Limits remediate.Limits
	// Credentials, when set, resolve each run's tenant first; nil is no
	// authentication (simulators).
	Credentials Credentials
	// Alerts map Azure Monitor alerts to requests.
	Alerts alert.Settings
	// Runs, when set, takes runs that do not fit one answer (mode async,
	// or auto beyond the time left); nil keeps every run synchronous.
	Runs Runs
	// Replays keeps answers by idempotency key (Idempotency-Key, an
	// alert's id and fired time). Default: in this process.
	Replays Replays
	// IdempotencyTTL is how long answers are kept. Default 24 h.
	IdempotencyTTL time.Duration
	// SyncBudget is the longest a mode auto run answers synchronously
	// (its triggers estimated at the write pace), below the callers' own
	// limits: Logic Apps and Power Automate give up on a call after 120 s
	// but follow a 202 by themselves. Default 90 s.
	SyncBudget time.Duration
}

// API serves the remediation endpoints.
type API struct {
	runner Runner
	opts   Options
	log    *slog.Logger
}

// New returns the API.
func New(runner Runner, opts Options, log *slog.Logger) *API {
	if opts.Replays == nil {
		opts.Replays = NewMemoryReplays()
	}
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = 24 * time.Hour
	}
	if opts.SyncBudget <= 0 {
		opts.SyncBudget = 90 * time.Second
	}
	return &API{runner: runner, opts: opts, log: log}
}

// Result is an answer: status, extra headers and the value sent as JSON.
type Result struct {
	Status  int
	Headers map[string]string
	Body    any
}

// Handler routes POST /api/remediate.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/remediate", a.serveRemediate)
	mux.HandleFunc("POST /api/alert", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
		res := Result{Status: http.StatusRequestEntityTooLarge, Body: errorBody("request_too_large", "the body is over 1 MiB", nil)}
		if err == nil {
			res = a.Alert(r.Context(), body, r.URL.Query().Get("script_policy_id"))
		}
		writeResult(w, res)
	})
	mux.HandleFunc("GET /api/runs/{id}", func(w http.ResponseWriter, r *http.Request) {
		page, follow, res := StatusQuery(r.URL.Query().Get)
		if res == nil {
			ctx := WithCall(r.Context(), Call{BaseURL: BaseURL(r), Code: r.URL.Query().Get("code")})
			r := a.Run(ctx, r.PathValue("id"), page, follow)
			res = &r
		}
		writeResult(w, *res)
	})
	mux.HandleFunc("/api/remediate", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		WriteJSON(w, http.StatusMethodNotAllowed, errorBody("method_not_allowed", "use POST", nil))
	})
	return mux
}

func (a *API) serveRemediate(w http.ResponseWriter, r *http.Request) {
	ctx := WithCall(r.Context(), Call{IdempotencyKey: r.Header.Get("Idempotency-Key"), BaseURL: BaseURL(r), Code: r.URL.Query().Get("code")})
	writeResult(w, a.Remediate(ctx, http.MaxBytesReader(w, r.Body, MaxBody)))
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
	scheme := "https"
	switch p := r.Header.Get("X-Forwarded-Proto"); {
	case p != "":
		scheme = p
	case r.TLS == nil && (strings.HasPrefix(host, "127.0.0.1") || strings.HasPrefix(host, "localhost") || strings.HasPrefix(host, "[::1]")):
		scheme = "http"
	}
	return scheme + "://" + host
}

// StatusQuery reads the page and follow parameters of GET runs/{id}; res
// is a 400 when one is malformed.
func StatusQuery(get func(string) string) (page int, follow bool, res *Result) {
	bad := func(field, msg string) (int, bool, *Result) {
		return 0, false, &Result{Status: http.StatusBadRequest, Body: errorBody("invalid_request", field+": "+msg, []remediate.FieldError{{Field: field, Message: msg}})}
	}
	if v := get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return bad("page", "must be a page number from 0")
		}
		page = n
	}
	if v := get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return bad("follow", "must be true or false")
		}
		follow = b
	}
	return page, follow, nil
}

func writeResult(w http.ResponseWriter, res Result) {
	for k, v := range res.Headers {
		w.Header().Set(k, v)
	}
	WriteJSON(w, res.Status, res.Body)
}

// Remediate decodes, validates and runs a request read from body: 200, 424
// or 422 with a summary; 202 with Location and Retry-After for a run handed
// to workers; 400 or 413 for a bad request; 403 or 503 (with Retry-After)
// when no Graph credential can be had for the run's tenant, in which case
// nothing is triggered. A repeated Idempotency-Key (see WithCall) gets the
// first answer again. Adapters that do not speak HTTP directly call this.
func (a *API) Remediate(ctx context.Context, body io.Reader) Result {
	raw, err := io.ReadAll(io.LimitReader(body, MaxBody+1))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || len(raw) > MaxBody {
		return Result{Status: http.StatusRequestEntityTooLarge, Body: errorBody("request_too_large",
			fmt.Sprintf("the body is larger than %d bytes; split the request", MaxBody), nil)}
	}
	if err != nil {
		return Result{Status: http.StatusBadRequest, Body: errorBody("invalid_request", "reading the body: "+err.Error(), nil)}
	}
	key := callOf(ctx).IdempotencyKey
	if key == "" {
		return a.remediate(ctx, raw)
	}
	return a.idempotent(ctx, "remediate:"+key, raw, func() Result { return a.remediate(ctx, raw) })
}

func (a *API) remediate(ctx context.Context, raw []byte) Result {
	req, err := remediate.Decode(bytes.NewReader(raw))
	var plan remediate.Plan
	if err == nil {
		plan, err = remediate.Validate(req, a.opts.Limits)
	}
	var invalid *remediate.InvalidRequestError
	switch {
	case errors.As(err, &invalid):
		return Result{Status: http.StatusBadRequest, Body: errorBody("invalid_request", invalid.Error(), invalid.Details)}
	case err != nil:
		return Result{Status: http.StatusBadRequest, Body: errorBody("invalid_request", err.Error(), nil)}
	}
	if a.opts.Credentials != nil {
		var cerr error
		if ctx, cerr = a.opts.Credentials.Prepare(ctx, plan.TenantID); cerr != nil {
			return credentialFailure(cerr)
		}
	}
	prep, ok := a.runner.(Preparer)
	if a.opts.Runs == nil || !ok {
		if plan.Mode == remediate.ModeAsync {
			return Result{Status: http.StatusBadRequest, Body: errorBody("invalid_request", "mode: this deployment runs synchronously only (no run storage is configured)",
				[]remediate.FieldError{{Field: "mode", Message: "async needs run storage"}})}
		}
		s := a.runner.Run(ctx, plan)
		return Result{Status: s.HTTPStatus(), Body: s}
	}
	p := prep.Prepare(ctx, plan)
	if s := p.Done(); s != nil {
		return Result{Status: s.HTTPStatus(), Body: s}
	}
	if plan.Mode == remediate.ModeAsync || plan.Mode == remediate.ModeAuto && !fits(ctx, p.Estimated(), a.opts.SyncBudget) {
		return a.submit(ctx, p, plan)
	}
	s := p.Execute()
	return Result{Status: s.HTTPStatus(), Body: s}
}

// fits reports whether triggers estimated to take d can be answered
// synchronously: within budget and four fifths of the time ctx has left.
func fits(ctx context.Context, d, budget time.Duration) bool {
	if d > budget {
		return false
	}
	dl, ok := ctx.Deadline()
	return !ok || d <= time.Until(dl)*4/5
}

// Alert maps an Azure Monitor alert (common alert schema) to a run:
// 200 {"status":"ignored"} for a resolved alert, 400/422 for an alert that
// cannot be acted on (never 5xx: action groups retry those), else the
// run's answer. Alert runs skip ineligible devices rather than refusing.
// A re-sent alert (same alertId and firedDateTime) gets the first answer
// again with Idempotent-Replayed: true and triggers nothing.
func (a *API) Alert(ctx context.Context, body []byte, queryScript string) Result {
	m, err := alert.Map(body, queryScript, a.opts.Alerts)
	var ae *alert.Error
	switch {
	case errors.As(err, &ae):
		return Result{Status: ae.Status, Body: errorBody("alert_not_actionable", ae.Message, nil)}
	case err != nil:
		return Result{Status: http.StatusBadRequest, Body: errorBody("invalid_request", err.Error(), nil)}
	case m.Ignored:
		return Result{Status: http.StatusOK, Body: map[string]string{"status": "ignored", "reason": m.Reason, "alert_id": m.AlertID}}
	}
	return a.idempotent(ctx, "alert:"+m.Key, nil, func() Result {
		req, _ := json.Marshal(m.Request)
		r := a.Remediate(ctx, bytes.NewReader(req))
		if s, ok := r.Body.(*remediate.Summary); ok {
			s.Warnings = append(s.Warnings, m.Warnings...)
			s.Warnings = append(s.Warnings, "devices from the alert's "+m.Source+" (rule "+m.AlertRule+")")
		}
		return r
	})
}

func credentialFailure(err error) Result {
	var ce *credential.Error
	if !errors.As(err, &ce) {
		return Result{Status: http.StatusServiceUnavailable, Headers: map[string]string{"Retry-After": "60"},
			Body: errorBody("credential_unavailable", err.Error(), nil)}
	}
	r := Result{Status: ce.Status, Body: errorBody(ce.Code, ce.Message, nil)}
	if ce.RetryAfter > 0 {
		r.Headers = map[string]string{"Retry-After": strconv.Itoa(int(ce.RetryAfter.Seconds()))}
	}
	return r
}

// ErrorResponse is the body of every 4xx answer.
type ErrorResponse struct {
	Error struct {
		Code    string                 `json:"code"`
		Message string                 `json:"message"`
		Details []remediate.FieldError `json:"details,omitempty"`
	} `json:"error"`
}

// ErrorBody builds an ErrorResponse.
func ErrorBody(code, msg string) ErrorResponse { return errorBody(code, msg, nil) }

func errorBody(code, msg string, details []remediate.FieldError) ErrorResponse {
	var e ErrorResponse
	e.Error.Code, e.Error.Message, e.Error.Details = code, msg, details
	return e
}

// WriteJSON writes v as the JSON body of a response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"the answer could not be encoded"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
