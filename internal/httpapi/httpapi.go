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

// API serves the remediation endpoints.
type API struct {
	runner Runner
	limits remediate.Limits
	creds  Credentials
	log    *slog.Logger
}

// New returns the API; creds may be nil (no authentication, simulators).
func New(runner Runner, limits remediate.Limits, creds Credentials, log *slog.Logger) *API {
	return &API{runner: runner, limits: limits, creds: creds, log: log}
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
	mux.HandleFunc("/api/remediate", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		WriteJSON(w, http.StatusMethodNotAllowed, errorBody("method_not_allowed", "use POST", nil))
	})
	return mux
}

func (a *API) serveRemediate(w http.ResponseWriter, r *http.Request) {
	res := a.Remediate(r.Context(), http.MaxBytesReader(w, r.Body, MaxBody))
	for k, v := range res.Headers {
		w.Header().Set(k, v)
	}
	WriteJSON(w, res.Status, res.Body)
}

// Remediate decodes, validates and runs a request read from body: 200, 424
// or 422 with a summary; 400 or 413 for a bad request; 403 or 503 (with
// Retry-After) when no Graph credential can be had for the run's tenant,
// in which case nothing is triggered. Adapters that do not speak HTTP
// directly call this.
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
	req, err := remediate.Decode(bytes.NewReader(raw))
	var plan remediate.Plan
	if err == nil {
		plan, err = remediate.Validate(req, a.limits)
	}
	var invalid *remediate.InvalidRequestError
	switch {
	case errors.As(err, &invalid):
		return Result{Status: http.StatusBadRequest, Body: errorBody("invalid_request", invalid.Error(), invalid.Details)}
	case err != nil:
		return Result{Status: http.StatusBadRequest, Body: errorBody("invalid_request", err.Error(), nil)}
	}
	if a.creds != nil {
		var cerr error
		if ctx, cerr = a.creds.Prepare(ctx, plan.TenantID); cerr != nil {
			return credentialFailure(cerr)
		}
	}
	s := a.runner.Run(ctx, plan)
	return Result{Status: s.HTTPStatus(), Body: s}
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
