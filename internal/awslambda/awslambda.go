// Package awslambda adapts remediator to AWS Lambda: Lambda Function URL
// and API Gateway HTTP API (payload 2.0) requests for POST /remediate,
// POST /alert and GET /runs/{id}, and EventBridge scheduled events that run
// the configured scheduled request. The same JSON contract and status
// codes as on Azure.
package awslambda

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/remediator/remediator/internal/httpapi"
)

// Runner runs remediation requests and alerts; *httpapi.API implements
// it.
type Runner interface {
	Remediate(ctx context.Context, body io.Reader) httpapi.Result
	Alert(ctx context.Context, body []byte, queryScript string) httpapi.Result
}

// apiGatewayLimit is API Gateway's integration timeout: an HTTP API
// answers 503 to the caller after it, whatever the function does.
const apiGatewayLimit = 29 * time.Second

// Settings configure the adapter.
type Settings struct {
	// ScheduledRequest is the request scheduled events run; nil if none.
	ScheduledRequest []byte
}

// Handler is the Lambda function.
type Handler struct {
	run Runner
	s   Settings
	log *slog.Logger
}

// New returns a Handler.
func New(run Runner, s Settings, log *slog.Logger) *Handler {
	return &Handler{run: run, s: s, log: log}
}

// probe reads just enough of an event to tell its kind.
type probe struct {
	RequestContext struct {
		HTTP struct {
			Method string `json:"method"`
		} `json:"http"`
	} `json:"requestContext"`
	Source     string `json:"source"`
	DetailType string `json:"detail-type"`
}

// Invoke handles one event. HTTP events always get an HTTP response (a
// refused request is a 4xx, not an invocation error); scheduled events
// return the run's summary; other events are an error naming what arrived.
func (h *Handler) Invoke(ctx context.Context, raw json.RawMessage) (any, error) {
	var p probe
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("remediator: the event is not JSON: %w", err)
	}
	switch {
	case p.RequestContext.HTTP.Method != "":
		var req events.APIGatewayV2HTTPRequest
		if err := json.Unmarshal(raw, &req); err != nil {
			return nil, fmt.Errorf("remediator: the HTTP event could not be read: %w", err)
		}
		return h.http(ctx, req), nil
	case (p.Source == "aws.events" || p.Source == "aws.scheduler") && p.DetailType == "Scheduled Event":
		return h.scheduled(ctx)
	}
	return nil, fmt.Errorf("remediator: unsupported event (source %q, detail-type %q): expected a Function URL or API Gateway HTTP API request, or an EventBridge scheduled event", p.Source, p.DetailType)
}

func (h *Handler) http(ctx context.Context, req events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	started := time.Now()
	method, path := req.RequestContext.HTTP.Method, strings.TrimSuffix(req.RawPath, "/")
	if !strings.Contains(req.RequestContext.DomainName, ".lambda-url.") && req.RequestContext.APIID != "" {
		// API Gateway gives up after 29 s: the answer must leave before.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, apiGatewayLimit)
		defer cancel()
	}
	body := []byte(req.Body)
	if req.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(req.Body)
		if err != nil {
			return response(httpapi.Result{Status: http.StatusBadRequest, Body: httpapi.ErrorBody("invalid_request", "the body is marked base64 but is not")})
		}
		body = b
	}
	var res httpapi.Result
	function := "unknown"
	switch {
	case strings.HasSuffix(path, "/remediate"):
		function = "remediate"
		// Idempotency keys are kept per instance here: Lambda has no run
		// storage (see README).
		cctx := httpapi.WithCall(ctx, httpapi.Call{IdempotencyKey: headerOf(req.Headers, "Idempotency-Key")})
		res = h.only(method, http.MethodPost, func() httpapi.Result { return h.run.Remediate(cctx, bytes.NewReader(body)) })
	case strings.HasSuffix(path, "/alert"):
		function = "alert"
		res = h.only(method, http.MethodPost, func() httpapi.Result {
			return h.run.Alert(ctx, body, req.QueryStringParameters["script_policy_id"])
		})
	case strings.Contains(path, "/runs/"):
		function = "runs"
		id := path[strings.LastIndex(path, "/")+1:]
		res = h.only(method, http.MethodGet, func() httpapi.Result {
			return httpapi.Result{Status: http.StatusNotFound, Body: httpapi.ErrorBody("unknown_run",
				"no run "+id+": this deployment runs every request synchronously and keeps no run state")}
		})
	default:
		res = httpapi.Result{Status: http.StatusNotFound, Body: httpapi.ErrorBody("not_found", "no such route: use POST /remediate, POST /alert or GET /runs/{id}")}
	}
	caller := ""
	if a := req.RequestContext.Authorizer; a != nil && a.IAM != nil {
		caller = a.IAM.UserARN
	}
	attrs := []any{"aws_request_id", requestID(ctx), "function", function, "caller", caller,
		"http_status", res.Status, "duration_ms", time.Since(started).Milliseconds()}
	h.log.Info("invocation", append(attrs, httpapi.AuditAttrs(res.Body)...)...)
	return response(res)
}

func (h *Handler) only(method, want string, fn func() httpapi.Result) httpapi.Result {
	if method != want {
		return httpapi.Result{Status: http.StatusMethodNotAllowed, Headers: map[string]string{"Allow": want},
			Body: httpapi.ErrorBody("method_not_allowed", "use "+want)}
	}
	return fn()
}

// scheduled runs the configured request for an EventBridge schedule.
func (h *Handler) scheduled(ctx context.Context) (any, error) {
	if h.s.ScheduledRequest == nil {
		return nil, fmt.Errorf("remediator: a scheduled event arrived but no SCHEDULED_REQUEST or SCHEDULED_REQUEST_FILE is configured")
	}
	started := time.Now()
	res := h.run.Remediate(ctx, bytes.NewReader(h.s.ScheduledRequest))
	attrs := []any{"aws_request_id", requestID(ctx), "function", "schedule", "caller", "eventbridge",
		"http_status", res.Status, "duration_ms", time.Since(started).Milliseconds()}
	h.log.Info("invocation", append(attrs, httpapi.AuditAttrs(res.Body)...)...)
	if res.Status >= 400 && res.Status != http.StatusFailedDependency {
		// A refused scheduled request is the deployment's error: fail the
		// invocation so it shows in Lambda's error metrics.
		b, _ := json.Marshal(res.Body)
		return nil, fmt.Errorf("remediator: the scheduled request was refused (HTTP %d): %s", res.Status, b)
	}
	return res.Body, nil
}

func response(res httpapi.Result) events.APIGatewayV2HTTPResponse {
	b, err := json.Marshal(res.Body)
	if err != nil {
		res.Status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"the answer could not be encoded"}}`)
	}
	headers := map[string]string{"Content-Type": "application/json"}
	for k, v := range res.Headers {
		headers[k] = v
	}
	return events.APIGatewayV2HTTPResponse{StatusCode: res.Status, Headers: headers, Body: string(b)}
}

func requestID(ctx context.Context) string {
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		return lc.AwsRequestID
	}
	return ""
}

// headerOf reads a header case-insensitively (API Gateway lower-cases
// them, Function URLs keep the caller's case).
func headerOf(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}
