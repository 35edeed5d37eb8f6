// Package httpapi is remediator's one HTTP surface, served on every host:
// POST /api/remediate, POST /api/alert, the status of a run under the
// function that started it (GET /api/remediate/runs/{id}, GET
// /api/alert/runs/{id}) and under the runs function (GET /api/runs/{id}),
// and the health check GET /. It owns every route and every status code; the host
// adapters (Azure Functions payload mode, Lambda) only turn their
// transport into an *http.Request and the answer back.
package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/app"
	"github.com/remediator/remediator/internal/fault"
	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/replay"
	"github.com/remediator/remediator/internal/runs"
)

// MaxBody is the largest request body accepted (1 MiB holds ~10,000
// devices).
const MaxBody = 1 << 20

// Options configure the API.
type Options struct {
	// Replays keeps answers by idempotency key (Idempotency-Key, an
	// alert's id and fired time). Default: in this process.
	Replays replay.Store
	// IdempotencyTTL is how long answers are kept. Default 24 h.
	IdempotencyTTL time.Duration
	// MaxAnswerBytes bounds the JSON of an answer (MAX_ANSWER_BYTES):
	// larger summaries leave out the devices that succeeded. 0 is no
	// bound.
	MaxAnswerBytes int
	// StoreTimeout bounds each call to the idempotency store: when storage
	// is slow or down, a keyed request is refused (503, nothing triggered)
	// within seconds rather than after the storage client's retries.
	// Default 2 s.
	StoreTimeout time.Duration
	// Audit adds the host's own attributes (invocation id, caller) to the
	// audit line each request writes; nil adds none.
	Audit func(r *http.Request) []any
	// Caller identifies the caller of a request, as the host vouches for
	// it (the function key, the App Service Authentication principal, the
	// IAM caller). A caller sees only its own runs and idempotency keys.
	// Nil: every request is the shared caller.
	Caller func(r *http.Request) app.Caller
	// CallerRate is the requests a minute each caller may make
	// (CALLER_RATE); past it, 429 with Retry-After. 0 is no limit.
	CallerRate float64
	// PublicBaseURL is the scheme and host callers reach the API at
	// (PUBLIC_BASE_URL, else https://WEBSITE_HOSTNAME), for absolute
	// Location and status URLs. Empty: loopback hosts for local runs,
	// else relative URLs.
	PublicBaseURL string
}

// API serves the remediation endpoints.
type API struct {
	svc  *app.Service
	opts Options
	log  *slog.Logger
	rate *callerRate
}

// DefaultIdempotencyTTL is IDEMPOTENCY_TTL: how long an answer is kept
// for its Idempotency-Key.
const DefaultIdempotencyTTL = 24 * time.Hour

// New returns the API over the application service.
func New(svc *app.Service, opts Options, log *slog.Logger) *API {
	if opts.Replays == nil {
		opts.Replays = replay.NewMemory()
	}
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = DefaultIdempotencyTTL
	}
	opts.PublicBaseURL = strings.TrimSuffix(opts.PublicBaseURL, "/")
	if opts.StoreTimeout <= 0 {
		opts.StoreTimeout = remediate.DefaultStoreTimeout
	}
	return &API{svc: svc, opts: opts, log: log, rate: newCallerRate(opts.CallerRate)}
}

// Routes are the API's routes. The Functions host admits a function key
// only at its own function ("a function key allows access only to a
// specific function endpoint": Microsoft's function-access-keys docs; the
// host's SecretManager.GetAuthorizationLevelAsync matches the key against
// the host keys and the invoked function's keys), so each function serves
// the status of the runs it started under its own route: a flow that
// submitted with the remediate function's key polls Location and pages
// nextLink with that same key. GET /api/runs/{id} (function runs) stays
// for host-key callers.
var Routes = []struct {
	// Pattern is the ServeMux pattern; Function the Azure function that
	// serves it (its function.json route covers the path) and the audit
	// line's function.
	Pattern, Function string
}{
	{"POST /api/remediate", "remediate"},
	{"GET /api/remediate/runs/{id}", "remediate"},
	{"POST /api/remediate/runs/{id}/cancel", "remediate"},
	{"POST /api/remediate/runs/{id}/resume", "remediate"},
	{"POST /api/alert", "alert"},
	{"GET /api/alert/runs/{id}", "alert"},
	{"POST /api/alert/runs/{id}/cancel", "alert"},
	{"POST /api/alert/runs/{id}/resume", "alert"},
	{"GET /api/runs/{id}", "runs"},
}

// RoutePrefix is where the Functions host mounts HTTP functions
// (host.json's extensions.http.routePrefix): the routes' prefix on Azure
// and locally. Lambda's Function URLs and API Gateway mount them at the
// root (prefix "").
const RoutePrefix = "/api"

// Handler routes every request of the Functions host and of local serve:
// the routes under RoutePrefix.
func (a *API) Handler() http.Handler { return a.HandlerUnder(RoutePrefix) }

// HandlerUnder routes every request, the table's routes mounted under
// prefix (RoutePrefix, or "" at the root).
func (a *API) HandlerUnder(prefix string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		write(w, Answer{Status: http.StatusOK, Body: map[string]string{"status": "ok"}})
	})
	var paths []string
	for _, rt := range Routes {
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = prefix + strings.TrimPrefix(path, RoutePrefix)
		paths = append(paths, method+" "+path)
		fn := a.status
		switch {
		case strings.HasSuffix(path, "/cancel"):
			fn = a.cancel
		case strings.HasSuffix(path, "/resume"):
			fn = a.resume
		case method == http.MethodPost && rt.Function == "remediate":
			fn = a.remediate
		case method == http.MethodPost && rt.Function == "alert":
			fn = a.alert
		}
		// The route, and its path under any other method: a 405 naming
		// the method (ServeMux's own 405 has no JSON body).
		mux.Handle(method+" "+path, a.audited(rt.Function, fn))
		mux.Handle(path, a.audited(rt.Function, func(*http.Request) Answer {
			return Answer{Status: http.StatusMethodNotAllowed, Headers: map[string]string{"Allow": method},
				Body: errorBody(fault.MethodNotAllowed, "use "+method, nil)}
		}))
	}
	notFound := "no such route: use " + strings.Join(paths, ", ")
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		write(w, Answer{Status: http.StatusNotFound, Body: errorBody(fault.NotFound, notFound, nil)})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), prefixKey{}, prefix)))
	})
}

// prefixKey carries the prefix the routes are mounted under, for the
// links an answer gives.
type prefixKey struct{}

// FunctionOf is the function that serves path (under prefix), "" for none:
// for adapters that refuse a request before it reaches the handler and
// still write its audit line.
func FunctionOf(prefix, path string) string {
	rest, ok := strings.CutPrefix(path, prefix+"/")
	if !ok {
		return ""
	}
	for _, rt := range Routes {
		_, p, _ := strings.Cut(rt.Pattern, " ")
		first, _, _ := strings.Cut(strings.TrimPrefix(p, RoutePrefix+"/"), "/")
		if got, _, _ := strings.Cut(rest, "/"); got == first {
			return rt.Function
		}
	}
	return ""
}

// audited serves fn and writes the request's audit line: who called which
// function and how it ended. It never logs headers, keys, URLs or bodies.
func (a *API) audited(function string, fn func(r *http.Request) Answer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started := time.Now()
		var ans Answer
		if ok, wait := a.rate.allow(a.caller(r).ID, started); ok {
			ans = fn(r)
		} else {
			ans = ErrorAnswer(fault.TooManyRequests, "this caller sent more requests than CALLER_RATE allows; retry after Retry-After")
			ans.Headers = map[string]string{"Retry-After": retryAfter(wait)}
		}
		a.Audit(r.Context(), function, ans, started, a.hostAttrs(r)...)
		write(w, ans)
	})
}

func (a *API) hostAttrs(r *http.Request) []any {
	if a.opts.Audit == nil {
		return nil
	}
	return a.opts.Audit(r)
}

// Audit writes one invocation's audit line (HTTP requests write theirs
// themselves; timers and schedules call this).
func (a *API) Audit(ctx context.Context, function string, ans Answer, started time.Time, attrs ...any) {
	line := append([]any{"function", function}, attrs...)
	line = append(line, "http_status", ans.Status, "duration_ms", time.Since(started).Milliseconds())
	a.log.InfoContext(ctx, "invocation", append(line, AuditAttrs(ans.Body)...)...)
}

// caller is who sent r.
func (a *API) caller(r *http.Request) app.Caller {
	if a.opts.Caller == nil {
		return app.Caller{}
	}
	return a.opts.Caller(r)
}

// readBody reads a request body of at most MaxBody bytes.
func readBody(r *http.Request) ([]byte, *Answer) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig) || len(raw) > MaxBody:
		return nil, &Answer{Status: http.StatusRequestEntityTooLarge, Body: errorBody(fault.RequestTooLarge,
			"the body is larger than "+strconv.Itoa(MaxBody)+" bytes; split the request", nil)}
	case err != nil:
		return nil, &Answer{Status: http.StatusBadRequest, Body: errorBody(fault.InvalidRequest, "reading the body: "+err.Error(), nil)}
	}
	return raw, nil
}

// remediate answers POST /api/remediate: 200, 424 or 422 with a summary;
// 202 with Location and Retry-After for a run handed to workers; 400 or
// 413 for a bad request; 403 or 503 (with Retry-After) when no Graph
// credential can be had for the run's tenant, in which case nothing is
// triggered. A repeated Idempotency-Key gets the first answer again.
func (a *API) remediate(r *http.Request) Answer {
	raw, bad := readBody(r)
	if bad != nil {
		return *bad
	}
	links, caller := a.linksOf(r), a.caller(r)
	run := func() Answer {
		res, err := a.svc.Remediate(r.Context(), caller, raw)
		return a.render(res, err, links)
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		return run()
	}
	return a.idempotent(r.Context(), replay.Key("remediate", caller.ID, key), raw, links, run)
}

// alert answers POST /api/alert (common alert schema): 200
// {"status":"ignored"} for a resolved alert, 400/422 for an alert that
// cannot be acted on (never 5xx: action groups retry those), else the
// run's answer. A re-sent alert (same alertId and firedDateTime) gets the
// first answer again with Idempotent-Replayed: true and triggers nothing.
func (a *API) alert(r *http.Request) Answer {
	raw, bad := readBody(r)
	if bad != nil {
		return *bad
	}
	m, err := a.svc.MapAlert(raw, r.URL.Query().Get("script_policy_id"))
	if err != nil {
		return a.render(app.Result{}, err, a.linksOf(r))
	}
	if m.Ignored {
		return Answer{Status: http.StatusOK, Body: map[string]string{"status": "ignored", "reason": m.Reason, "alert_id": m.AlertID}}
	}
	links, caller := a.linksOf(r), a.caller(r)
	run := func() Answer {
		res, err := a.svc.Alert(r.Context(), caller, m)
		return a.render(res, err, links)
	}
	if m.Key == "" {
		return run()
	}
	return a.idempotent(r.Context(), replay.Key("alert", caller.ID, m.Key), nil, links, run)
}

// cancel stops a run of the caller's (POST .../runs/{id}/cancel): 202 with
// Location while its chunks being worked stop, or the final answer once
// nothing is left; again, the same.
func (a *API) cancel(r *http.Request) Answer { return a.act(r, a.svc.Cancel) }

// resume goes on with a halted rollout of the caller's (POST
// .../runs/{id}/resume): the halted wave's gate is overridden and the next
// wave starts; 202 with Location, as the run goes on. A run that is not
// halted is left as it is (its status is the answer).
func (a *API) resume(r *http.Request) Answer { return a.act(r, a.svc.Resume) }

// act does a cancel or resume: a POST from a web page must be one of this
// deployment's own forms; a form goes back to the run's page (303), a flow
// gets the run's status.
func (a *API) act(r *http.Request, do func(context.Context, app.Caller, string) (runs.Status, error)) Answer {
	if refused := a.formRefusal(r); refused != nil {
		return *refused
	}
	id := r.PathValue("id")
	st, err := do(r.Context(), a.caller(r), id)
	if err != nil {
		return a.render(app.Result{}, err, links{})
	}
	l := a.linksOf(r)
	if r.PostForm != nil {
		page, _ := l.locations(id)
		return Answer{Status: http.StatusSeeOther, Headers: map[string]string{"Location": l.keyed(page, url.Values{"format": {"html"}})},
			Body: map[string]string{"status": st.Summary.Status}}
	}
	return renderStatus(id, st, l)
}

// status answers GET /api/{remediate/,alert/,}runs/{id}: 202 with Location and Retry-After
// while devices are queued, else the summary (200, or 424 like a
// synchronous run with failures) with page (0-based) of its devices;
// follow=true adds each triggered device's script results. 404 for an
// unknown run.
func (a *API) status(r *http.Request) Answer {
	q := r.URL.Query()
	page, follow := 0, false
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return a.render(app.Result{}, fault.Invalid("page", "must be a page number from 0"), links{})
		}
		page = n
	}
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return a.render(app.Result{}, fault.Invalid("follow", "must be true or false"), links{})
		}
		follow = b
	}
	id := r.PathValue("id")
	st, err := a.svc.Status(r.Context(), a.caller(r).ID, id, page, follow)
	if err != nil {
		return a.render(app.Result{}, err, links{})
	}
	if wantsPage(r) {
		return renderPage(id, st, a.linksOf(r), r, follow)
	}
	return renderStatus(id, st, a.linksOf(r))
}
