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
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/httpapi"
)

// apiGatewayLimit is API Gateway's integration timeout: an HTTP API
// answers 503 to the caller after it, whatever the function does.
const apiGatewayLimit = 29 * time.Second

// Settings configure the adapter.
type Settings struct {
	// ScheduledRequest is the request scheduled events run; nil if none.
	ScheduledRequest []byte
	// DirectInvocation is the caller an event that is itself a request
	// runs as, under CALLER_POLICY ("schedule", "invoke"); "" refuses
	// such events (DIRECT_INVOCATION).
	DirectInvocation string
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
	return &Handler{api: api, handler: api.HandlerUnder(""), svc: svc, s: s, log: log}
}

// eventKey carries the HTTP event behind a request, for the audit line.
type eventKey struct{}

// Audit is the audit line's view of an HTTP invocation on Lambda: the
// invocation's request id and the IAM caller, if IAM authorized it.
func Audit(r *http.Request) []any {
	caller := ""
	if ev, ok := r.Context().Value(eventKey{}).(*events.APIGatewayV2HTTPRequest); ok {
		if a := ev.RequestContext.Authorizer; a != nil && a.IAM != nil {
			caller = "iam:" + RoleARN(a.IAM.UserARN)
		}
	}
	return []any{"aws_request_id", requestID(r.Context()), "caller", caller}
}

// Caller is who sent an HTTP invocation: the IAM caller when IAM
// authorized it (an assumed role as the role itself), else the shared
// caller.
func Caller(r *http.Request) app.Caller {
	if ev, ok := r.Context().Value(eventKey{}).(*events.APIGatewayV2HTTPRequest); ok {
		if a := ev.RequestContext.Authorizer; a != nil && a.IAM != nil && a.IAM.UserARN != "" {
			return app.Caller{ID: "iam:" + RoleARN(a.IAM.UserARN)}
		}
	}
	return app.Caller{}
}

// RoleARN is the IAM identity an ARN stands for: an assumed role's session
// ARN (arn:aws:sts::<account>:assumed-role/<role>/<session>, whose
// session name the caller chooses) becomes the role's ARN
// (arn:aws:iam::<account>:role/<role>), so no policy entry can be claimed
// by picking a session name. Other ARNs are kept as they are.
func RoleARN(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "sts" {
		return arn
	}
	res := strings.Split(parts[5], "/")
	if len(res) < 3 || res[0] != "assumed-role" || res[1] == "" {
		return arn
	}
	return "arn:" + parts[1] + ":iam::" + parts[4] + ":role/" + res[1]
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
	// Records are SQS, SNS, S3, DynamoDB… events: named, not served.
	Records []struct {
		EventSource  string `json:"eventSource"`
		EventSource2 string `json:"EventSource"` // SNS spells it so
	} `json:"Records"`
	// A remediation request: EventBridge Scheduler sends a schedule's
	// Input as the event itself (aws-lambda-go#563), not an envelope.
	ManagedDevices   json.RawMessage `json:"managed_devices"`
	CoManagedDevices json.RawMessage `json:"comanaged_devices"`
	Targets          json.RawMessage `json:"targets"`
}

// Invoke implements lambda.Handler on the raw payload, so that an event
// that is not even JSON is refused by remediator, with its audit line,
// rather than by the runtime library.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	out, err := h.Handle(ctx, payload)
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

// Handle handles one event. HTTP events always get an HTTP response (a
// refused request is a 4xx, not an invocation error); EventBridge
// scheduled events run SCHEDULED_REQUEST, and an event that is itself a
// remediation request (an EventBridge Scheduler schedule's Input) runs as
// it is, both returning the run's summary; other events are an error
// naming what arrived. Every invocation writes one audit line.
func (h *Handler) Handle(ctx context.Context, raw []byte) (any, error) {
	started := time.Now()
	var p probe
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, h.refuse(ctx, started, "unknown", "the event is not JSON: "+err.Error())
	}
	switch {
	case p.RequestContext.HTTP.Method != "":
		var req events.APIGatewayV2HTTPRequest
		if err := json.Unmarshal(raw, &req); err != nil {
			return nil, h.refuse(ctx, started, "unknown", "the HTTP event could not be read: "+err.Error())
		}
		return h.http(ctx, &req), nil
	case (p.Source == "aws.events" || p.Source == "aws.scheduler") && p.DetailType == "Scheduled Event":
		if h.s.ScheduledRequest == nil {
			return nil, h.refuse(ctx, started, "schedule", "a scheduled event arrived but no SCHEDULED_REQUEST or SCHEDULED_REQUEST_FILE is configured")
		}
		return h.scheduled(ctx, h.s.ScheduledRequest)
	case p.ManagedDevices != nil || p.CoManagedDevices != nil || p.Targets != nil:
		// Whoever may invoke the function can write such an event: it runs
		// only when the deployment allows it, as the caller it names, under
		// that caller's rule.
		if h.s.DirectInvocation == "" {
			return nil, h.refuse(ctx, started, "invoke", "an event that is a remediation request arrived, but DIRECT_INVOCATION is off")
		}
		return h.invoked(ctx, raw)
	}
	source := p.Source
	if len(p.Records) > 0 {
		source = p.Records[0].EventSource + p.Records[0].EventSource2
	}
	return nil, h.refuse(ctx, started, "unknown", fmt.Sprintf("unsupported event (source %q, detail-type %q): expected a Function URL or API Gateway HTTP API request, an EventBridge scheduled event, or a remediation request as an EventBridge Scheduler schedule's input", source, p.DetailType))
}

// refuse writes the audit line of an invocation that is not served and
// returns its error (what Lambda reports as the invocation's failure).
func (h *Handler) refuse(ctx context.Context, started time.Time, function, msg string) error {
	h.api.Audit(ctx, function, httpapi.ErrorAnswer(fault.InvalidRequest, msg), started, "aws_request_id", requestID(ctx), "caller", "")
	return errors.New("remediator: " + msg)
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
			ans := httpapi.ErrorAnswer(fault.InvalidRequest, "the body is marked base64 but is not")
			h.api.Audit(ctx, httpapi.FunctionOf("", path(ev)), ans, time.Now(), "aws_request_id", requestID(ctx), "caller", "")
			return response(ans)
		}
		body = b
	}
	host := ev.RequestContext.DomainName
	if host == "" {
		host = "localhost"
	}
	u := &url.URL{Scheme: "https", Host: host, Path: path(ev), RawQuery: ev.RawQueryString}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, eventKey{}, ev), ev.RequestContext.HTTP.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return response(httpapi.ErrorAnswer(fault.InvalidRequest, "the request could not be read: "+err.Error()))
	}
	for k, v := range ev.Headers {
		req.Header.Set(k, v)
	}
	rec := httpapi.Record(h.handler, req)
	return events.APIGatewayV2HTTPResponse{StatusCode: rec.Status, Headers: rec.Headers(), Body: rec.Body.String()}
}

// path is the request's path as the API's routes see it: the raw path
// (as aws-lambda-go's lambdaurl passes it), less the stage API Gateway
// puts in front of a named stage's paths; "/" for the root, never ""
// (which ServeMux answers with a redirect to "/", a loop through a
// Function URL).
func path(ev *events.APIGatewayV2HTTPRequest) string {
	p := ev.RawPath
	if st := ev.RequestContext.Stage; st != "" && st != "$default" {
		if rest, ok := strings.CutPrefix(p, "/"+st); ok && (rest == "" || rest[0] == '/') {
			p = rest
		}
	}
	if p == "" {
		p = "/"
	}
	return p
}

// scheduled runs a request for an EventBridge schedule: the configured
// one, or the Scheduler schedule's own input.
func (h *Handler) scheduled(ctx context.Context, request []byte) (any, error) {
	started := time.Now()
	res, err := h.svc.Scheduled(ctx, request)
	ans := h.api.RenderSchedule(res, err)
	h.api.Audit(ctx, "schedule", ans, started, "aws_request_id", requestID(ctx), "caller", "eventbridge")
	if ans.Status >= 400 && ans.Status != http.StatusFailedDependency {
		// A refused scheduled request is the deployment's error: fail the
		// invocation so it shows in Lambda's error metrics.
		b, _ := json.Marshal(ans.Body)
		return nil, fmt.Errorf("remediator: the scheduled request was refused (HTTP %d): %s", ans.Status, b)
	}
	return ans.Body, nil
}

// invoked runs an event that is itself a request as the caller
// DIRECT_INVOCATION names, policed like any other.
func (h *Handler) invoked(ctx context.Context, request []byte) (any, error) {
	started := time.Now()
	caller := app.Caller{ID: h.s.DirectInvocation}
	res, err := h.svc.Remediate(ctx, caller, request)
	ans := h.api.RenderSchedule(res, err)
	h.api.Audit(ctx, h.s.DirectInvocation, ans, started, "aws_request_id", requestID(ctx), "caller", caller.ID)
	if ans.Status >= 400 && ans.Status != http.StatusFailedDependency {
		b, _ := json.Marshal(ans.Body)
		return nil, fmt.Errorf("remediator: the invocation's request was refused (HTTP %d): %s", ans.Status, b)
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

// InitError reports a failure to start through the Runtime API's
// init-error call (api is AWS_LAMBDA_RUNTIME_API), so the invocation that
// started the environment fails with the message rather than a bare
// Runtime.ExitError. Configuration messages name settings, never secrets.
func InitError(ctx context.Context, api string, cause error) {
	if api == "" {
		return
	}
	body, _ := json.Marshal(map[string]any{"errorMessage": cause.Error(), "errorType": "Runtime.ConfigurationError"})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+api+"/2018-06-01/runtime/init/error", bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Lambda-Runtime-Function-Error-Type", "Runtime.ConfigurationError")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_ = resp.Body.Close()
	}
}
