// Package graph is remediator's Microsoft Graph client: the only package
// that imports the Graph SDK. It triggers on-demand remediation, looks
// devices up in $batch requests and pages through device lists, one HTTP
// attempt per call. Retrying and pacing are the caller's (internal/pace and
// the engine): the SDK's own retry and compression middleware are left out
// because, in random order, they corrupt retried POST bodies.
//
// Responses are read as bytes into small local structs; the SDK's model
// factories are never used, which keeps the binary at ~10 MB instead of
// ~80 MB.
package graph

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/remediator/remediator/internal/fault"

	abs "github.com/microsoft/kiota-abstractions-go"
	"github.com/microsoft/kiota-abstractions-go/authentication"
	khttp "github.com/microsoft/kiota-http-go"
	kjson "github.com/microsoft/kiota-serialization-json-go"
	"github.com/microsoftgraph/msgraph-beta-sdk-go/devicemanagement"
	"github.com/microsoftgraph/msgraph-beta-sdk-go/models/odataerrors"
	core "github.com/microsoftgraph/msgraph-sdk-go-core"

	"github.com/remediator/remediator/internal/intune"
)

// DefaultBaseURL is Microsoft Graph beta.
const DefaultBaseURL = "https://graph.microsoft.com/beta"

// Config configures a Client.
type Config struct {
	// BaseURL is the Graph base URL, DefaultBaseURL when empty.
	BaseURL string
	// Tokens authorizes each request; nil sends no token (simulators
	// only).
	Tokens TokenSource
	// CallTimeout bounds one HTTP attempt. Default intune.DefaultCallTimeout.
	CallTimeout time.Duration
	// MaxResponseBytes bounds the body of one answer, counted after
	// decompression (a small gzip can inflate to gigabytes). Default
	// intune.DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// Transport is the HTTP transport under the middleware; nil uses a
	// clone of http.DefaultTransport that keeps enough idle connections for
	// concurrent workers.
	Transport http.RoundTripper
}

// Client calls Graph. It is safe for concurrent use.
type Client struct {
	adapter *core.GraphRequestAdapterBase
	dm      *devicemanagement.DeviceManagementRequestBuilder
	timeout time.Duration
	calls   atomic.Int64
}

// New builds a Client with an explicit, deterministic middleware chain: no
// compression, no SDK retries.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	cfg.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/")
	base, err := url.Parse(cfg.BaseURL)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("graph: base URL %q is not a URL", cfg.BaseURL)
	}
	var auth authentication.AuthenticationProvider = &authentication.AnonymousAuthenticationProvider{}
	if cfg.Tokens != nil {
		auth = bearer{tokens: cfg.Tokens, origin: originOf(base)}
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = intune.DefaultCallTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = intune.DefaultMaxResponseBytes
	}
	if cfg.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		cfg.Transport = t
	}
	c := &Client{timeout: cfg.CallTimeout}
	opts := core.GraphClientOptions{GraphServiceVersion: "beta", GraphServiceLibraryVersion: "0.165.0"}
	mws := []khttp.Middleware{
		core.NewGraphTelemetryHandler(&opts),
		captureHandler{calls: &c.calls, maxBody: cfg.MaxResponseBytes},
		khttp.NewParametersNameDecodingHandler(),
		khttp.NewUserAgentHandler(),
		// No redirect handler: a redirect is never followed (a trigger
		// "accepted" by another host never reached Intune); captureHandler
		// turns a 3xx into a failure with its status.
	}
	hc := &http.Client{
		Transport: khttp.NewCustomTransportWithParentTransport(cfg.Transport, mws...),
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	adapter, err := core.NewGraphRequestAdapterBaseWithParseNodeFactoryAndSerializationWriterFactoryAndHttpClient(
		auth, opts, kjson.NewJsonParseNodeFactory(), kjson.NewJsonSerializationWriterFactory(), hc)
	if err != nil {
		return nil, fmt.Errorf("graph: building the request adapter: %w", err)
	}
	adapter.SetBaseUrl(cfg.BaseURL) // before any builder: batch item URLs are made relative to it
	c.adapter = adapter
	c.dm = devicemanagement.NewDeviceManagementRequestBuilderInternal(map[string]string{"baseurl": cfg.BaseURL}, adapter)
	return c, nil
}

// Calls is the number of HTTP requests sent so far ($batch counts once).
func (c *Client) Calls() int64 { return c.calls.Load() }

// Trigger asks Intune to run scriptID on deviceID now. A nil error means
// Graph answered 204: the request is queued, not yet run. Any failure is an
// *intune.Error.
func (c *Client) Trigger(ctx context.Context, coll intune.Collection, deviceID, scriptID string) (intune.Response, error) {
	var resp intune.Response
	err := c.once(ctx, func(ctx context.Context) (*capture, error) {
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		ctx, capt := withCapture(ctx)
		var err error
		if coll == intune.CoManagedDevices {
			body := devicemanagement.NewComanagedDevicesItemInitiateOnDemandProactiveRemediationPostRequestBody()
			body.SetScriptPolicyId(&scriptID)
			err = c.dm.ComanagedDevices().ByManagedDeviceId(deviceID).InitiateOnDemandProactiveRemediation().Post(ctx, body, nil)
		} else {
			body := devicemanagement.NewManagedDevicesItemInitiateOnDemandProactiveRemediationPostRequestBody()
			body.SetScriptPolicyId(&scriptID)
			err = c.dm.ManagedDevices().ByManagedDeviceId(deviceID).InitiateOnDemandProactiveRemediation().Post(ctx, body, nil)
		}
		if err != nil {
			return capt, toError(ctx, err, capt)
		}
		resp = intune.Response{Status: capt.status, RequestID: capt.header.Get("request-id")}
		return capt, nil
	})
	return resp, err
}

// errorMapping maps every error status to the OData error type.
var errorMapping = abs.ErrorMappings{"XXX": odataerrors.CreateODataErrorFromDiscriminatorValue}

// sendBytes sends ri and returns the raw response body.
func (c *Client) sendBytes(ctx context.Context, ri *abs.RequestInformation) ([]byte, error) {
	var body []byte
	err := c.once(ctx, func(ctx context.Context) (*capture, error) {
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		ctx, capt := withCapture(ctx)
		res, err := c.adapter.SendPrimitive(ctx, ri, "[]byte", errorMapping)
		if err != nil {
			return capt, toError(ctx, err, capt)
		}
		body, _ = res.([]byte)
		return capt, nil
	})
	return body, err
}

// captureKey carries a *capture through the request context.
type captureKey struct{}

// capture records the status and headers of the last HTTP response of a
// call, which the SDK drops for bodies it cannot parse.
type capture struct {
	status int
	header http.Header
	body   []byte // the start of an error response's body
	gen    uint64 // generation of the credential whose token was sent
}

func withCapture(ctx context.Context) (context.Context, *capture) {
	c := &capture{header: http.Header{}}
	return context.WithValue(ctx, captureKey{}, c), c
}

// captureHandler is a middleware that counts requests and fills the
// request's capture.
type captureHandler struct {
	calls   *atomic.Int64
	maxBody int64
}

// Intercept implements khttp.Middleware.
func (h captureHandler) Intercept(p khttp.Pipeline, i int, req *http.Request) (*http.Response, error) {
	h.calls.Add(1)
	resp, err := p.Next(req, i)
	if err == nil && resp != nil && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// Kiota counts every status under 400 as success: a redirect would
		// read as an accepted trigger.
		if c, ok := req.Context().Value(captureKey{}).(*capture); ok {
			c.status, c.header = resp.StatusCode, resp.Header.Clone()
		}
		_ = resp.Body.Close()
		return nil, &redirectError{status: resp.StatusCode, location: redirectHost(resp.Header.Get("Location"))}
	}
	if c, ok := req.Context().Value(captureKey{}).(*capture); ok && resp != nil {
		c.status = resp.StatusCode
		c.header = resp.Header.Clone()
		if resp.StatusCode >= 400 && resp.Body != nil {
			// Keep the body for errors the SDK maps without it (batch
			// envelopes, non-JSON bodies), and hand the SDK a copy.
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			c.body = b
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
	}
	if resp != nil && resp.Body != nil {
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: h.maxBody, max: h.maxBody}
	}
	return resp, err
}

// limitedBody fails a read past max bytes: no answer from Graph, however
// large or however well it compresses, takes more memory than that.
type limitedBody struct {
	io.ReadCloser
	left, max int64
}

// Read implements io.Reader: it reads at most one byte past max, which
// tells a body of max bytes from a larger one.
func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left >= 0 && int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	if b.left < 0 {
		return 0, b.tooLarge()
	}
	n, err := b.ReadCloser.Read(p)
	if b.left -= int64(n); b.left < 0 {
		return 0, b.tooLarge()
	}
	return n, err
}

func (b *limitedBody) tooLarge() error {
	return fmt.Errorf("graph: the answer is larger than %d bytes (GRAPH_MAX_RESPONSE_MB); not read", b.max)
}

// redirectError is a 3xx answer: never followed, always a failure.
type redirectError struct {
	status   int
	location string
}

// Error says where Graph redirected to.
func (e *redirectError) Error() string {
	return fmt.Sprintf("Graph answered %d, a redirect to %s; redirects are never followed, so the call did not reach Intune", e.status, e.location)
}

// redirectHost is the host a Location points at (never the whole URL,
// which may hold a token).
func redirectHost(loc string) string {
	u, err := url.Parse(loc)
	if err != nil || u.Host == "" {
		return "a relative or unreadable location"
	}
	return u.Scheme + "://" + u.Host
}

// toError turns whatever the SDK returned into an *intune.Error, never calling
// ODataError.Error (it panics on bodies without a message).
func toError(ctx context.Context, err error, capt *capture) *intune.Error {
	e := &intune.Error{Status: capt.status, Err: err}
	if capt.status != 0 {
		e.RequestID = capt.header.Get("request-id")
		e.ClientRequestID = capt.header.Get("client-request-id")
		e.RetryAfter = capt.header.Get("Retry-After")
	}
	var oe *odataerrors.ODataError
	var ae abs.ApiErrorable
	var te *tokenError
	var re *redirectError
	switch {
	case errors.As(err, &re):
		e.Status, e.Message = re.status, re.Error()
	case errors.As(err, &te):
		e.Code, e.Message = string(fault.TokenUnavailable), te.Error()
	case errors.As(err, &oe):
		e.Status = oe.GetStatusCode()
		if me := oe.GetErrorEscaped(); me != nil {
			e.Code = deref(me.GetCode())
			e.Message = intune.CleanMessage(deref(me.GetMessage()))
			if ie := me.GetInnerError(); ie != nil && e.RequestID == "" {
				e.RequestID = deref(ie.GetRequestId())
			}
		}
		if e.Message == "" {
			e.Message = "error body without a message"
		}
	case errors.As(err, &ae):
		e.Status = ae.GetStatusCode()
		e.Code, e.Message = intune.ErrorBody(capt.body)
		if e.Message == "" {
			e.Message = "error response without Graph error details"
		}
	case capt.status >= 400:
		e.Message = "error response with a body that is not JSON (" + capt.header.Get("Content-Type") + ")"
		if snippet := strings.TrimSpace(string(capt.body)); snippet != "" && len(snippet) <= 200 {
			e.Message += ": " + snippet
		}
	case capt.status == 0:
		e.Transport = true
		switch {
		case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
			e.Message = "no response before the call timed out"
		default:
			e.Message = "no response: " + err.Error()
		}
	default:
		e.Message = err.Error()
	}
	if e.Status == 0 && !e.Transport {
		e.Status = capt.status
	}
	return e
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
