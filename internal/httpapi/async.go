package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/remediator/remediator/internal/remediate"
	"github.com/remediator/remediator/internal/runs"
)

// Preparer splits a run into preparation and triggering, which lets runs
// too long for one answer go to workers; *remediate.Engine implements it.
type Preparer interface {
	Prepare(ctx context.Context, plan remediate.Plan) *remediate.Prepared
}

// Runs is the asynchronous side; *runs.Service implements it.
type Runs interface {
	Submit(ctx context.Context, s *remediate.Summary, pending []int, tenant string) error
	Status(ctx context.Context, id string, page int, follow bool) (runs.Status, error)
}

// Call is what an adapter knows of the HTTP request behind a call.
type Call struct {
	// IdempotencyKey is the Idempotency-Key header.
	IdempotencyKey string
	// BaseURL is the scheme and host the caller used, for absolute
	// Location URLs ("" gives relative ones).
	BaseURL string
	// Code is the function key the caller passed in the query string, if
	// any: it goes into Location only (pollers such as Logic Apps may not
	// repeat headers), never into a body or a log line.
	Code string
}

type callKey struct{}

// WithCall returns ctx carrying c for Remediate and Alert.
func WithCall(ctx context.Context, c Call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

func callOf(ctx context.Context) Call {
	c, _ := ctx.Value(callKey{}).(Call)
	return c
}

// Accepted is the body of a 202.
type Accepted struct {
	RunID               string           `json:"run_id"`
	Status              string           `json:"status"`
	StatusURL           string           `json:"status_url"`
	ResolvedDeviceCount int              `json:"resolved_device_count"`
	Counts              remediate.Counts `json:"counts"`
	Queued              int              `json:"queued"`
	EstimatedDurationMS int64            `json:"estimated_duration_ms,omitempty"`
	Warnings            []string         `json:"warnings"`
}

// statusPath is the route of the runs function.
func statusPath(id string) string { return "/api/runs/" + url.PathEscape(id) }

// locations returns the status URL for the body and the Location header.
func locations(c Call, id string) (body, header string) {
	body = c.BaseURL + statusPath(id)
	header = body
	if c.Code != "" {
		header += "?code=" + url.QueryEscape(c.Code)
	}
	return body, header
}

func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second)))
}

// submit hands a prepared run to workers and answers 202.
func (a *API) submit(ctx context.Context, p *remediate.Prepared, plan remediate.Plan) Result {
	s, pending := p.Queue()
	if err := a.opts.Runs.Submit(ctx, s, pending, plan.TenantID); err != nil {
		a.log.Error("run could not be queued; nothing was triggered", "run_id", s.RunID, "error", err.Error())
		return Result{Status: 503, Headers: map[string]string{"Retry-After": "30"},
			Body: errorBody("storage_unavailable", "the run could not be stored or queued; nothing was triggered, send it again", nil)}
	}
	bodyURL, header := locations(callOf(ctx), s.RunID)
	wait := min(max(p.Estimated()/4, 5*time.Second), 60*time.Second)
	return Result{Status: 202,
		Headers: map[string]string{"Location": header, "Retry-After": retryAfter(wait)},
		Body: Accepted{RunID: s.RunID, Status: remediate.StatusAccepted, StatusURL: bodyURL, ResolvedDeviceCount: s.ResolvedDeviceCount,
			Counts: s.Counts, Queued: len(pending), EstimatedDurationMS: s.EstimatedDurationMS, Warnings: s.Warnings}}
}

// RunPage is a finished run's summary with one page of its devices.
type RunPage struct {
	*remediate.Summary
	Page      int    `json:"page"`
	PageCount int    `json:"page_count"`
	NextPage  string `json:"next_page,omitempty"`
}

// Running is the body of a 202 for a run that is not finished.
type Running struct {
	*remediate.Summary
	Queued    int    `json:"queued"`
	StatusURL string `json:"status_url"`
	Page      int    `json:"page"`
	PageCount int    `json:"page_count"`
}

// Run answers GET runs/{id}: 202 with Location and Retry-After while
// devices are queued, else the summary (200, or 424 like a synchronous run
// with failures) with page (0-based) of its devices; follow adds each
// triggered device's script results. 404 for an unknown run.
func (a *API) Run(ctx context.Context, id string, page int, follow bool) Result {
	if a.opts.Runs == nil {
		return Result{Status: 404, Body: errorBody("not_found", "this deployment keeps no runs (no storage is configured)", nil)}
	}
	st, err := a.opts.Runs.Status(ctx, id, page, follow)
	switch {
	case errors.Is(err, runs.ErrNotFound):
		return Result{Status: 404, Body: errorBody("not_found", "no run "+strconv.Quote(id), nil)}
	case errors.Is(err, runs.ErrNoPage):
		return Result{Status: 400, Body: errorBody("invalid_request", "page: "+err.Error(), []remediate.FieldError{{Field: "page", Message: "out of range"}})}
	case err != nil:
		a.log.Error("run status unavailable", "run_id", id, "error", err.Error())
		return Result{Status: 503, Headers: map[string]string{"Retry-After": "10"}, Body: errorBody("storage_unavailable", "the run could not be read; try again", nil)}
	}
	bodyURL, header := locations(callOf(ctx), id)
	if !st.Done {
		return Result{Status: 202, Headers: map[string]string{"Location": header, "Retry-After": retryAfter(st.RetryAfter)},
			Body: Running{Summary: st.Summary, Queued: st.Queued, StatusURL: bodyURL, Page: st.Page, PageCount: st.PageCount}}
	}
	rp := RunPage{Summary: st.Summary, Page: st.Page, PageCount: st.PageCount}
	if st.Page+1 < st.PageCount {
		rp.NextPage = bodyURL + "?page=" + strconv.Itoa(st.Page+1)
	}
	return Result{Status: st.Summary.HTTPStatus(), Body: rp}
}

// Replays keeps answers by idempotency key; MemoryReplays is the
// process-local one, package azstore the durable one.
type Replays interface {
	// Begin reserves key for ttl. It returns the stored answer when the
	// key was answered before, and ErrInProgress while another request
	// holds it.
	Begin(ctx context.Context, key string, ttl time.Duration) (*Stored, error)
	// Finish stores the answer for key.
	Finish(ctx context.Context, key string, s Stored) error
	// Abandon releases key without an answer, so a retry runs anew.
	Abandon(ctx context.Context, key string) error
}

// ErrInProgress is returned by Replays.Begin for a key being answered.
var ErrInProgress = errors.New("httpapi: a request with this key is in progress")

// Stored is a kept answer.
type Stored struct {
	Status      int               `json:"status"`
	Headers     map[string]string `json:"headers,omitempty"`
	Body        json.RawMessage   `json:"body"`
	RequestHash string            `json:"request_hash"`
}

func hashOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// idempotent answers fn once per key within the TTL: later requests with
// the key get the first answer again with Idempotent-Replayed: true and
// trigger nothing. Answers a retry should not replay (5xx, 429) are not
// kept. Without a store, or without a key, fn just runs.
func (a *API) idempotent(ctx context.Context, key string, request []byte, fn func() Result) Result {
	if key == "" || a.opts.Replays == nil {
		return fn()
	}
	hash := hashOf(request)
	var prev *Stored
	var err error
	for {
		prev, err = a.opts.Replays.Begin(ctx, key, a.opts.IdempotencyTTL)
		if !errors.Is(err, ErrInProgress) {
			break
		}
		// Another delivery is being answered: wait for its answer while
		// this one may.
		select {
		case <-ctx.Done():
			return Result{Status: 409, Headers: map[string]string{"Retry-After": "10"},
				Body: errorBody("in_progress", "a request with this idempotency key is still being processed; retry later for its answer", nil)}
		case <-time.After(500 * time.Millisecond):
		}
	}
	switch {
	case err != nil:
		a.log.Error("idempotency store unavailable; nothing was triggered", "error", err.Error())
		return Result{Status: 503, Headers: map[string]string{"Retry-After": "30"},
			Body: errorBody("storage_unavailable", "the idempotency key could not be checked; nothing was triggered, send the request again", nil)}
	case prev != nil && prev.RequestHash != "" && prev.RequestHash != hash:
		return Result{Status: 422, Body: errorBody("idempotency_key_reused",
			"this Idempotency-Key was used for a different request; use a new key", []remediate.FieldError{{Field: "Idempotency-Key", Message: "reused with another body"}})}
	case prev != nil:
		h := map[string]string{}
		for k, v := range prev.Headers {
			h[k] = v
		}
		if loc, ok := h["Location"]; ok && callOf(ctx).Code != "" {
			h["Location"] = loc + "?code=" + url.QueryEscape(callOf(ctx).Code)
		}
		h["Idempotent-Replayed"] = "true"
		return Result{Status: prev.Status, Headers: h, Body: prev.Body}
	}
	res := fn()
	if res.Status >= 500 || res.Status == 429 {
		if err := a.opts.Replays.Abandon(context.WithoutCancel(ctx), key); err != nil {
			a.log.Warn("idempotency key not released", "error", err.Error())
		}
		return res
	}
	// The function key a caller put in the query string goes into
	// Location, never into storage: a replay adds the replaying caller's.
	headers := map[string]string{}
	for k, v := range res.Headers {
		headers[k] = v
	}
	if loc, ok := headers["Location"]; ok {
		headers["Location"], _, _ = strings.Cut(loc, "?")
	}
	body, err := json.Marshal(res.Body)
	if err == nil {
		err = a.opts.Replays.Finish(context.WithoutCancel(ctx), key, Stored{Status: res.Status, Headers: headers, Body: body, RequestHash: hash})
	}
	if err != nil {
		a.log.Error("answer not kept for its idempotency key", "error", err.Error())
	}
	return res
}
