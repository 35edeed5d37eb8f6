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

	"github.com/remediator/remediator/internal/remediate"
)

// MaxBody is the largest request body accepted (1 MiB holds ~10,000
// devices).
const MaxBody = 1 << 20

// Runner runs a validated plan; *remediate.Engine implements it.
type Runner interface {
	Run(ctx context.Context, plan remediate.Plan) *remediate.Summary
}

// API serves the remediation endpoints.
type API struct {
	runner Runner
	limits remediate.Limits
	log    *slog.Logger
}

// New returns the API.
func New(runner Runner, limits remediate.Limits, log *slog.Logger) *API {
	return &API{runner: runner, limits: limits, log: log}
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
	status, body := a.Remediate(r.Context(), http.MaxBytesReader(w, r.Body, MaxBody))
	WriteJSON(w, status, body)
}

// Remediate decodes, validates and runs a request read from body and
// returns the HTTP status and the value to send as JSON: 200/424/422 with
// a summary, 400 or 413 with an error. Adapters that do not speak HTTP
// directly call this.
func (a *API) Remediate(ctx context.Context, body io.Reader) (int, any) {
	raw, err := io.ReadAll(io.LimitReader(body, MaxBody+1))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || len(raw) > MaxBody {
		return http.StatusRequestEntityTooLarge, errorBody("request_too_large",
			fmt.Sprintf("the body is larger than %d bytes; split the request", MaxBody), nil)
	}
	if err != nil {
		return http.StatusBadRequest, errorBody("invalid_request", "reading the body: "+err.Error(), nil)
	}
	req, err := remediate.Decode(bytes.NewReader(raw))
	if err == nil {
		var plan remediate.Plan
		plan, err = remediate.Validate(req, a.limits)
		if err == nil {
			s := a.runner.Run(ctx, plan)
			return s.HTTPStatus(), s
		}
	}
	var invalid *remediate.InvalidRequestError
	if errors.As(err, &invalid) {
		return http.StatusBadRequest, errorBody("invalid_request", invalid.Error(), invalid.Details)
	}
	return http.StatusBadRequest, errorBody("invalid_request", err.Error(), nil)
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
