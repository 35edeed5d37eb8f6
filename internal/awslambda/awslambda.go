// Package awslambda adapts remediator to AWS Lambda: Lambda Function URL
// and API Gateway HTTP API (payload 2.0) requests become an *http.Request
// for the one HTTP API (POST /remediate, POST /alert, GET /runs/{id}), as
// aws-lambda-go's lambdaurl wraps a handler; EventBridge scheduled events
// run the configured scheduled request through the application service.
// The same JSON contract and status codes as on Azure.
package awslambda

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/httpapi"
)

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
	api     *httpapi.API
	handler http.Handler
	svc     *app.Service
	s       Settings
	log     *slog.Logger
}

// New returns a Handler over the one HTTP API and the application service.
func New(api *httpapi.API, svc *app.Service, s Settings, log *slog.Logger) *Handler {
	return &Handler{api: api, handler: api.Handler(), svc: svc, s: s, log: log}
}

// eventKey carries the HTTP event behind a request, for the audit line.
type eventKey struct{}

// Audit is the audit line's view of an HTTP invocation on Lambda: the
// invocation's request id and the IAM caller, if IAM authorized it.
func Audit(r *http.Request) []any {
	caller := ""
	if ev, ok := r.Context().Value(eventKey{}).(*events.APIGatewayV2HTTPRequest); ok {
		if a := ev.RequestContext.Authorizer; a != nil && a.IAM != nil {
			caller = a.IAM.UserARN
		}
	}
	return []any{"aws_request_id", requestID(r.Context()), "caller", caller}
}

// Caller is who sent an HTTP invocation: the IAM caller when IAM
// authorized it, else "", the shared caller.
func Caller(r *http.Request) string {
	if ev, ok := r.Context().Value(eventKey{}).(*events.APIGatewayV2HTTPRequest); ok {
		if a := ev.RequestContext.Authorizer; a != nil && a.IAM != nil && a.IAM.UserARN != "" {
			return "iam:" + a.IAM.UserARN
		}
	}
	return ""
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
		return h.http(ctx, &req), nil
	case (p.Source == "aws.events" || p.Source == "aws.scheduler") && p.DetailType == "Scheduled Event":
		return h.scheduled(ctx)
	}
	return nil, fmt.Errorf("remediator: unsupported event (source %q, detail-type %q): expected a Function URL or API Gateway HTTP API request, or an EventBridge scheduled event", p.Source, p.DetailType)
}

// http serves an HTTP event with the one HTTP API.
func (h *Handler) http(ctx context.Context, ev *events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	if !strings.Contains(ev.RequestContext.DomainName, ".lambda-url.") && ev.RequestContext.APIID != "" {
		// API Gateway gives up after 29 s: the answer must leave before.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, apiGatewayLimit)
		defer cancel()
	}
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			return response(httpapi.ErrorAnswer("invalid_request", "the body is marked base64 but is not"))
		}
		body = b
	}
	host := ev.RequestContext.DomainName
	if host == "" {
		host = "localhost"
	}
	u := &url.URL{Scheme: "https", Host: host, Path: route(ev.RawPath), RawQuery: ev.RawQueryString}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, eventKey{}, ev), ev.RequestContext.HTTP.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return response(httpapi.ErrorAnswer("invalid_request", "the request could not be read: "+err.Error()))
	}
	for k, v := range ev.Headers {
		req.Header.Set(k, v)
	}
	rec := httpapi.Record(h.handler, req)
	return events.APIGatewayV2HTTPResponse{StatusCode: rec.Status, Headers: rec.Headers(), Body: rec.Body.String()}
}

// route maps a Function URL or API Gateway path (any stage or prefix) to
// the API's routes: .../remediate, .../alert, .../runs/{id}.
func route(path string) string {
	p := strings.TrimSuffix(path, "/")
	switch {
	case strings.HasSuffix(p, "/remediate"):
		return "/api/remediate"
	case strings.HasSuffix(p, "/alert"):
		return "/api/alert"
	case strings.Contains(p, "/runs/"):
		return "/api/runs/" + p[strings.LastIndex(p, "/")+1:]
	}
	return p
}

// scheduled runs the configured request for an EventBridge schedule.
func (h *Handler) scheduled(ctx context.Context) (any, error) {
	if h.s.ScheduledRequest == nil {
		return nil, fmt.Errorf("remediator: a scheduled event arrived but no SCHEDULED_REQUEST or SCHEDULED_REQUEST_FILE is configured")
	}
	started := time.Now()
	res, err := h.svc.Remediate(ctx, "", h.s.ScheduledRequest)
	ans := httpapi.RenderSchedule(res, err)
	h.api.Audit(ctx, "schedule", ans, started, "aws_request_id", requestID(ctx), "caller", "eventbridge")
	if ans.Status >= 400 && ans.Status != http.StatusFailedDependency {
		// A refused scheduled request is the deployment's error: fail the
		// invocation so it shows in Lambda's error metrics.
		b, _ := json.Marshal(ans.Body)
		return nil, fmt.Errorf("remediator: the scheduled request was refused (HTTP %d): %s", ans.Status, b)
	}
	return ans.Body, nil
}

// response is an answer the adapter gives itself (the event could not
// become a request).
func response(a httpapi.Answer) events.APIGatewayV2HTTPResponse {
	b, _ := json.Marshal(a.Body)
	return events.APIGatewayV2HTTPResponse{StatusCode: a.Status, Headers: map[string]string{"Content-Type": "application/json"}, Body: string(b)}
}

func requestID(ctx context.Context) string {
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		return lc.AwsRequestID
	}
	return ""
}
