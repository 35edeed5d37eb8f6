// Package remediate is remediator's domain: the request and its
// validation, the engine that triggers on-demand remediation on every
// device of a run within Intune's limits and the run's deadline, and the
// summary that accounts for every device exactly once. It knows nothing of
// Azure or AWS; adapters translate their payloads to a Request and the
// Summary back.
package remediate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/remediator/remediator/internal/graph"
	"github.com/remediator/remediator/internal/pace"
)

// Graph is what the engine needs from Microsoft Graph; *graph.Client
// implements it. Each method makes one attempt; the engine retries.
type Graph interface {
	Trigger(ctx context.Context, coll graph.Collection, deviceID, scriptID string) (graph.Response, error)
	Devices(ctx context.Context, ids []string) ([]graph.Lookup, error)
	ListDevices(ctx context.Context, filter string, top int, next string) (graph.Page, error)
	GroupDevices(ctx context.Context, groupID, next string) (graph.GroupPage, error)
	Script(ctx context.Context, id string) (graph.Script, error)
}

// Config tunes the engine.
type Config struct {
	// Concurrency bounds the calls in flight. Default 8.
	Concurrency int
	// Headroom is kept between the last call and the deadline to write the
	// summary: the smaller of Headroom and a tenth of the run's budget.
	// Default 2 s.
	Headroom time.Duration
	// BackoffBase and BackoffMax shape the waits after a 429 without
	// Retry-After and after 503/504. Defaults 1 s and 60 s.
	BackoffBase, BackoffMax time.Duration
	// UnavailableRetries is how often a 503, 504 or lost answer is retried
	// (the trigger may already have taken effect). Default 2.
	UnavailableRetries int
	// MaxDevices caps the devices a run triggers once selectors are
	// resolved (MAX_DEVICES_PER_RUN); 0 is no cap.
	MaxDevices int
	// MaxFleetPercent refuses, without confirm_device_count, runs that
	// trigger more than this share of the tenant's Windows devices; 0 or
	// 100 is off.
	MaxFleetPercent float64
	// AllowedScripts, when not empty, is the only scripts runs may use
	// (lower-case ids); ScriptPins pins scripts to their
	// lastModifiedDateTime so a script edited after approval is refused.
	AllowedScripts map[string]bool
	ScriptPins     map[string]time.Time
	// Cooldown remembers triggers; a device+script triggered within
	// CooldownPeriod is skipped. Nil or 0 turns it off.
	Cooldown       Cooldown
	CooldownPeriod time.Duration
}

func (c *Config) defaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.Headroom <= 0 {
		c.Headroom = 2 * time.Second
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 60 * time.Second
	}
	if c.UnavailableRetries < 0 {
		c.UnavailableRetries = 0
	} else if c.UnavailableRetries == 0 {
		c.UnavailableRetries = 2
	}
}

// Engine runs remediation plans. It is safe for concurrent use; runs share
// its Pacer, so together they stay under the write pace.
type Engine struct {
	graph Graph
	pacer *pace.Pacer
	cfg   Config
	log   *slog.Logger
}

// New returns an Engine.
func New(g Graph, p *pace.Pacer, cfg Config, log *slog.Logger) *Engine {
	cfg.defaults()
	return &Engine{graph: g, pacer: p, cfg: cfg, log: log}
}

// Run carries out plan and accounts for every device in the returned
// summary. It never returns per-device failures as errors: they are data
// in the summary. The run stops starting calls before the earlier of ctx's
// deadline and plan.Invoke, keeping headroom to answer.
func (e *Engine) Run(ctx context.Context, plan Plan) *Summary {
	started := time.Now()
	s := &Summary{
		RunID:                 newRunID(),
		DryRun:                plan.DryRun,
		Warnings:              append([]string(nil), plan.Warnings...),
		StartedAt:             started.UTC(),
		IgnorePartialFailures: plan.IgnorePartialFailures,
	}
	r := &run{engine: e, plan: plan, throttle: &throttleLog{}}
	r.runCtx, r.callCtx, r.cancel = e.deadlines(ctx, started, plan.Invoke)
	defer r.cancel()

	if d := e.allowlist(plan); d != nil {
		return e.reject(s, r, started, http.StatusForbidden, "script_not_allowed", "a script is not on this deployment's allowlist (ALLOWED_SCRIPT_POLICY_IDS); nothing was triggered", d)
	}
	var misses []DeviceResult
	if len(plan.Targets) > 0 {
		items, m, problems := r.resolve()
		if problems != nil {
			return e.reject(s, r, started, http.StatusUnprocessableEntity, "target_resolution_failed", "the targets could not be resolved; nothing was triggered", problems)
		}
		plan.Items, misses = mergeItems(plan.Items, items, &s.Warnings), m
		r.plan = plan
	}
	s.Devices = make([]DeviceResult, len(plan.Items), len(plan.Items)+len(misses))
	for i, it := range plan.Items {
		s.Devices[i] = DeviceResult{DeviceID: it.DeviceID, ScriptPolicyID: it.ScriptPolicyID, Collection: string(it.Collection),
			Outcome: NotAttempted, Reason: ReasonDeadline}
	}
	s.Devices = append(s.Devices, misses...)
	eligible := make([]bool, len(s.Devices))
	for i := range plan.Items {
		eligible[i] = true
	}
	if status, code, msg, d := r.checkScripts(s); d != nil {
		return e.reject(s, r, started, status, code, msg, d)
	}
	if plan.ValidateDevices || len(plan.Targets) > 0 {
		if rejected := r.validate(s, eligible); rejected {
			s.Status = StatusRejected
			return e.finish(s, r, started)
		}
	}
	r.applyCooldown(s, eligible)
	for i := range eligible {
		if eligible[i] && s.Devices[i].Outcome == NotAttempted {
			s.ResolvedDeviceCount++
		}
	}
	if status, code, msg := r.checkCaps(s); status != 0 {
		if !plan.DryRun {
			return e.reject(s, r, started, status, code, msg, nil)
		}
		s.Warnings = append(s.Warnings, msg)
	}
	if plan.DryRun {
		s.Status = StatusPlanned
		for i := range s.Devices {
			if eligible[i] && s.Devices[i].Outcome == NotAttempted {
				s.Devices[i].Outcome, s.Devices[i].Reason = Planned, ""
			}
		}
		if rate := e.pacer.WriteRate(); rate > 0 {
			s.EstimatedDurationMS = int64(float64(s.ResolvedDeviceCount) / rate * 1000)
		}
		return e.finish(s, r, started)
	}
	r.triggerAll(s, eligible)
	r.markCooldown(s)
	return e.finish(s, r, started)
}

// reject ends a run before anything is triggered: every device not yet
// accounted for is not_attempted with reason run_rejected.
func (e *Engine) reject(s *Summary, r *run, started time.Time, status int, code, msg string, details []FieldError) *Summary {
	if s.Devices == nil {
		for _, it := range r.plan.Items {
			s.Devices = append(s.Devices, DeviceResult{DeviceID: it.DeviceID, ScriptPolicyID: it.ScriptPolicyID, Collection: string(it.Collection)})
		}
	}
	for i := range s.Devices {
		if s.Devices[i].Outcome == "" || s.Devices[i].Outcome == NotAttempted {
			s.Devices[i].Outcome, s.Devices[i].Reason = NotAttempted, ReasonRunRejected
		}
	}
	s.Status = StatusRejected
	s.Error = &ErrorInfo{Code: code, Message: msg, Details: details, status: status}
	return e.finish(s, r, started)
}

func (e *Engine) finish(s *Summary, r *run, started time.Time) *Summary {
	s.Warnings = append(s.Warnings, r.warnings...)
	s.Throttling = Throttling{ThrottledResponses: r.throttle.count(), WaitedMS: r.throttle.waited().Milliseconds()}
	s.tally()
	fin := time.Now()
	s.FinishedAt = fin.UTC()
	s.DurationMS = fin.Sub(started).Milliseconds()
	e.log.Info("run finished", "run_id", s.RunID, "status", s.Status, "dry_run", s.DryRun,
		"total", s.Counts.Total, "succeeded", s.Counts.Succeeded, "failed", s.Counts.Failed,
		"skipped", s.Counts.Skipped, "not_attempted", s.Counts.NotAttempted,
		"throttled", s.Throttling.ThrottledResponses, "duration_ms", s.DurationMS)
	return s
}

// deadlines derives the run's contexts: runCtx ends when no new call may
// start (deadline minus headroom) or when ctx is cancelled; callCtx bounds
// calls already in flight (half the headroom later) but is not cancelled
// with ctx, so a shutdown lets them finish and be accounted for.
func (e *Engine) deadlines(ctx context.Context, now time.Time, invoke time.Duration) (runCtx, callCtx context.Context, cancel func()) {
	end, ok := ctx.Deadline()
	if invoke > 0 && (!ok || now.Add(invoke).Before(end)) {
		end, ok = now.Add(invoke), true
	}
	detached := context.WithoutCancel(ctx)
	if !ok {
		runCtx, c1 := context.WithCancel(ctx)
		return runCtx, detached, c1
	}
	headroom := min(e.cfg.Headroom, end.Sub(now)/10)
	runCtx, c1 := context.WithDeadline(ctx, end.Add(-headroom))
	callCtx, c2 := context.WithDeadline(detached, end.Add(-headroom/2))
	return runCtx, callCtx, func() { c1(); c2() }
}

// run is the state of one Run.
type run struct {
	engine          *Engine
	plan            Plan
	runCtx, callCtx context.Context
	cancel          func()
	throttle        *throttleLog
	warnMu          sync.Mutex
	warnings        []string
}

// stopReason says why no more calls may start.
func (r *run) stopReason() string {
	if errors.Is(context.Cause(r.runCtx), context.Canceled) {
		return ReasonCanceled
	}
	return ReasonDeadline
}

func (r *run) triggerAll(s *Summary, eligible []bool) {
	var g errgroup.Group
	g.SetLimit(r.engine.cfg.Concurrency)
	for i, it := range r.plan.Items {
		if !eligible[i] || s.Devices[i].Outcome != NotAttempted {
			continue
		}
		if r.runCtx.Err() != nil {
			s.Devices[i].Reason = r.stopReason()
			continue
		}
		g.Go(func() error {
			r.trigger(it, &s.Devices[i])
			return nil
		})
	}
	_ = g.Wait()
}

// trigger sends one device's trigger, retrying 429 for as long as the run
// may, and 503/504/lost answers at most UnavailableRetries times.
func (r *run) trigger(it Item, res *DeviceResult) {
	e := r.engine
	unavailable, throttled := 0, 0
	for {
		if _, err := e.pacer.Write(r.runCtx); err != nil {
			r.stopped(res)
			return
		}
		res.Attempts++
		resp, err := e.graph.Trigger(r.callCtx, it.Collection, it.DeviceID, it.ScriptPolicyID)
		if err == nil {
			res.Outcome, res.Reason, res.Message = Succeeded, "", ""
			res.HTTPStatus, res.RequestID = resp.Status, resp.RequestID
			return
		}
		ge := asGraphError(err)
		res.Outcome, res.Reason = Failed, ""
		res.HTTPStatus, res.ErrorCode, res.RequestID, res.Message = ge.Status, ge.Code, ge.RequestID, ge.Message
		switch {
		case ge.Throttled() && throttled < maxThrottledRetries:
			throttled++
			r.onThrottled(ge, throttled)
			continue
		case ge.Unavailable() && unavailable < e.cfg.UnavailableRetries:
			unavailable++
			wait, ok := pace.RetryAfter(ge.RetryAfter, time.Now())
			if !ok {
				wait = pace.Backoff(unavailable, e.cfg.BackoffBase, e.cfg.BackoffMax)
			}
			if pace.Sleep(r.runCtx, wait) == nil {
				continue
			}
		}
		if ge.Status == 403 {
			res.Message += " — " + triggerPermissionHint
		}
		if ge.Unavailable() {
			res.Reason = ReasonMayHaveApplied
			res.Message = "no definite answer (" + ge.Message + "); the trigger may have taken effect"
		}
		return
	}
}

// Permission hints for Graph 403s: the reference page lists only Read
// scopes for the trigger, but practitioners get 403 without
// PrivilegedOperations.All.
const (
	triggerPermissionHint = "the app needs the Graph application permission DeviceManagementManagedDevices.PrivilegedOperations.All (with admin consent) to trigger remediations"
	lookupPermissionHint  = "the app needs the Graph application permission DeviceManagementManagedDevices.Read.All to look devices up"
)

// maxThrottledRetries bounds the 429 retries of one device for runs
// without any deadline.
const maxThrottledRetries = 100

// stopped records why a device's next attempt could not start.
func (r *run) stopped(res *DeviceResult) {
	if res.Attempts > 0 && res.HTTPStatus != 429 {
		// A 503/504/lost answer was being retried: it may have applied.
		res.Reason = ReasonMayHaveApplied
		res.Message = "no definite answer (" + res.Message + ") and no time left to retry; the trigger may have taken effect"
		return
	}
	res.Outcome, res.Reason = NotAttempted, r.stopReason()
	if res.Attempts > 0 {
		res.Message = "still throttled when the run's time ran out; Intune did not accept the trigger"
	}
}

// onThrottled closes the gate for every worker: for Retry-After, else for
// a capped exponential backoff.
func (r *run) onThrottled(ge *graph.Error, n int) {
	wait, ok := pace.RetryAfter(ge.RetryAfter, time.Now())
	if !ok {
		wait = pace.Backoff(n, r.engine.cfg.BackoffBase, r.engine.cfg.BackoffMax)
	}
	r.engine.pacer.Pause(wait)
	r.throttle.add(wait)
}

func asGraphError(err error) *graph.Error {
	var ge *graph.Error
	if errors.As(err, &ge) {
		return ge
	}
	return &graph.Error{Message: err.Error(), Transport: true}
}

func newRunID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
