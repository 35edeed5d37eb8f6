// Package azure adapts remediator to the Azure Functions custom-handler
// protocol. The host starts the binary with FUNCTIONS_CUSTOMHANDLER_PORT
// and calls it on 127.0.0.1: GET / to see it is up, the HTTP functions
// remediate and alert either forwarded (POST /api/<route>, the caller's own
// request) or in payload mode (POST /<function> with a
// {"Data":...,"Metadata":...} envelope), and the timer function schedule in
// payload mode.
//
// The host never tells the worker its deadline, so every invocation runs
// under FUNCTION_TIMEOUT, and HTTP functions also under the front end's
// limit (HTTP_RESPONSE_BUDGET): the answer always leaves before the host or
// the load balancer gives up.
package azure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/remediator/remediator/internal/httpapi"
)

// Remediator runs remediation requests and alerts; *httpapi.API
// implements it.
type Remediator interface {
	Remediate(ctx context.Context, body io.Reader) httpapi.Result
	Alert(ctx context.Context, body []byte, queryScript string) httpapi.Result
	Run(ctx context.Context, id string, page int, follow bool) httpapi.Result
}

// Settings configure the adapter.
type Settings struct {
	// FunctionTimeout mirrors host.json functionTimeout. Default 5 min.
	FunctionTimeout time.Duration
	// HTTPBudget bounds HTTP functions below the front end's 230 s.
	// Default 200 s.
	HTTPBudget time.Duration
	// ScheduledRequest is the request body the timer function runs; nil
	// when none is configured.
	ScheduledRequest []byte
	// Worker works the queue functions (worker, poison); nil when no run
	// storage is configured.
	Worker Worker
}

// Host serves the custom-handler protocol.
type Host struct {
	run      Remediator
	settings Settings
	log      *slog.Logger
}

// New returns a Host.
func New(run Remediator, s Settings, log *slog.Logger) *Host {
	if s.FunctionTimeout <= 0 {
		s.FunctionTimeout = 5 * time.Minute
	}
	if s.HTTPBudget <= 0 {
		s.HTTPBudget = 200 * time.Second
	}
	return &Host{run: run, settings: s, log: log}
}

// Handler routes the host's calls.
func (h *Host) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("POST /api/remediate", h.forwarded("remediate", h.remediate))
	mux.HandleFunc("POST /api/alert", h.forwarded("alert", h.alert))
	mux.HandleFunc("POST /remediate", h.payload("remediate", h.remediate))
	mux.HandleFunc("POST /alert", h.payload("alert", h.alert))
	mux.HandleFunc("POST /schedule", h.schedule)
	mux.HandleFunc("GET /api/runs/{id}", h.forwarded("runs", h.runStatus))
	mux.HandleFunc("POST /runs", h.payload("runs", h.runStatus))
	mux.HandleFunc("POST /worker", h.queue("worker", Worker.Work))
	mux.HandleFunc("POST /poison", h.queue("poison", Worker.Poison))
	return mux
}

// call is one invocation of an HTTP function, however it arrived.
type call struct {
	function     string
	invocationID string
	id           string // route parameter {id}
	url          string // the URL the caller used (forwarded: its scheme and host)
	body         []byte
	query        func(string) string
	header       func(string) string
}

// answer is an HTTP function's result.
type answer struct {
	status  int
	headers map[string]string
	body    any
}

type function func(ctx context.Context, c call) answer

// forwarded serves a function whose caller's request the host forwards as
// is.
func (h *Host) forwarded(name string, fn function) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, httpapi.MaxBody))
		if err != nil {
			httpapi.WriteJSON(w, http.StatusRequestEntityTooLarge, httpapi.ErrorBody("request_too_large", "the body is over 1 MiB"))
			return
		}
		a := h.invoke(r.Context(), fn, call{function: name, invocationID: r.Header.Get("X-Azure-Functions-InvocationId"),
			id: r.PathValue("id"), url: httpapi.BaseURL(r), body: body, query: r.URL.Query().Get, header: r.Header.Get})
		for k, v := range a.headers {
			w.Header().Set(k, v)
		}
		httpapi.WriteJSON(w, a.status, a.body)
	}
}

// payload serves an HTTP function in payload mode: the request arrives
// inside an envelope and the answer goes back as Outputs.res.
func (h *Host) payload(name string, fn function) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var env envelope
		var req hostRequest
		err := json.NewDecoder(io.LimitReader(r.Body, 2*httpapi.MaxBody)).Decode(&env)
		if err == nil {
			raw, ok := env.binding("req")
			if !ok {
				err = errors.New("no request binding in Data")
			} else {
				err = json.Unmarshal(raw, &req)
			}
		}
		var a answer
		if err != nil {
			a = answer{status: http.StatusBadRequest, body: httpapi.ErrorBody("invalid_invocation", "the host's payload could not be read: "+err.Error())}
		} else {
			var body []byte
			if req.Body != nil {
				body = []byte(*req.Body)
			}
			a = h.invoke(r.Context(), fn, call{function: name, invocationID: r.Header.Get("X-Azure-Functions-InvocationId"),
				id: req.Params.get("id"), url: req.URL, body: body, query: req.Query.get, header: req.Headers.get})
		}
		out, _ := json.Marshal(a.body)
		headers := map[string]string{"Content-Type": "application/json"}
		for k, v := range a.headers {
			headers[k] = v
		}
		writeInvokeResponse(w, invokeResponse{Outputs: map[string]any{"res": httpOutput{StatusCode: a.status, Headers: headers, Body: string(out)}}})
	}
}

// invoke runs fn within the HTTP deadline and writes the audit line.
func (h *Host) invoke(ctx context.Context, fn function, c call) answer {
	ctx, cancel := context.WithTimeout(ctx, min(h.settings.FunctionTimeout, h.settings.HTTPBudget))
	defer cancel()
	ctx = httpapi.WithCall(ctx, httpapi.Call{IdempotencyKey: c.header("Idempotency-Key"), BaseURL: origin(c.url), Code: c.query("code")})
	started := time.Now()
	a := fn(ctx, c)
	h.audit(c.function, c.invocationID, c.header("X-MS-CLIENT-PRINCIPAL-NAME"), a.status, a.body, started)
	return a
}

func (h *Host) remediate(ctx context.Context, c call) answer {
	r := h.run.Remediate(ctx, bytes.NewReader(c.body))
	return answer{status: r.Status, headers: r.Headers, body: r.Body}
}

func (h *Host) alert(ctx context.Context, c call) answer {
	r := h.run.Alert(ctx, c.body, c.query("script_policy_id"))
	return answer{status: r.Status, headers: r.Headers, body: r.Body}
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
	res := h.run.Remediate(ctx, bytes.NewReader(h.settings.ScheduledRequest))
	h.audit("schedule", invocation, "timer", res.Status, res.Body, started, "past_due", ti.IsPastDue)
	out, _ := json.Marshal(res.Body)
	writeInvokeResponse(w, invokeResponse{Logs: []string{line(res.Status, res.Body), string(out)}, ReturnValue: res.Body})
}
