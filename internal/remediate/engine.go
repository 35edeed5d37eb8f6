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
	RunStates(ctx context.Context, scriptID, next string) (graph.RunStatePage, error)
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
	p := e.Prepare(ctx, plan)
	if s := p.Done(); s != nil {
		return s
	}
	return p.Execute()
}

// Prepared is a run resolved, validated and checked against the
// deployment's policy, with nothing triggered yet: Execute triggers it
// here, Queue hands its devices to workers (asynchronous runs).
type Prepared struct {
	e        *Engine
	s        *Summary
	r        *run
	eligible []bool
	started  time.Time
	done     bool
}

// Prepare does everything a run does before its first trigger: allowlist,
// target resolution, script checks, device validation, cooldown and caps.
// Prepared.Done is the summary when nothing is left to trigger (a rejected
// run or a dry run).
func (e *Engine) Prepare(ctx context.Context, plan Plan) *Prepared {
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
	p := &Prepared{e: e, s: s, r: r, started: started}
	end := func(s *Summary) *Prepared {
		r.cancel()
		p.done, p.s = true, s
		return p
	}

	if d := e.allowlist(plan); d != nil {
		return end(e.reject(s, r, started, http.StatusForbidden, "script_not_allowed", "a script is not on this deployment's allowlist (ALLOWED_SCRIPT_POLICY_IDS); nothing was triggered", d))
	}
	var misses []DeviceResult
	if len(plan.Targets) > 0 {
		items, m, problems := r.resolve()
		if problems != nil {
			return end(e.reject(s, r, started, http.StatusUnprocessableEntity, "target_resolution_failed", "the targets could not be resolved; nothing was triggered", problems))
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
	p.eligible = make([]bool, len(s.Devices))
	for i := range plan.Items {
		p.eligible[i] = true
	}
	if status, code, msg, d := r.checkScripts(s); d != nil {
		return end(e.reject(s, r, started, status, code, msg, d))
	}
	if plan.ValidateDevices || len(plan.Targets) > 0 {
		if rejected := r.validate(s, p.eligible); rejected {
			s.Status = StatusRejected
			return end(e.finish(s, r, started))
		}
	}
	r.applyCooldown(s, p.eligible)
	for i := range p.eligible {
		if p.eligible[i] && s.Devices[i].Outcome == NotAttempted {
			s.ResolvedDeviceCount++
		}
	}
	if status, code, msg := r.checkCaps(s); status != 0 {
		if !plan.DryRun {
			return end(e.reject(s, r, started, status, code, msg, nil))
		}
		s.Warnings = append(s.Warnings, msg)
	}
	if rate := e.pacer.WriteRate(); rate > 0 {
		s.EstimatedDurationMS = int64(float64(s.ResolvedDeviceCount) / rate * 1000)
	}
	if plan.DryRun {
		s.Status = StatusPlanned
		for i := range s.Devices {
			if p.eligible[i] && s.Devices[i].Outcome == NotAttempted {
				s.Devices[i].Outcome, s.Devices[i].Reason = Planned, ""
			}
		}
		return end(e.finish(s, r, started))
	}
	return p
}

// Done is the final summary when nothing is left to trigger, else nil.
func (p *Prepared) Done() *Summary {
	if p.done {
		return p.s
	}
	return nil
}

// Estimated is how long triggering the run's devices takes at the write
// pace (0 when the pace is unlimited).
func (p *Prepared) Estimated() time.Duration {
	return time.Duration(p.s.EstimatedDurationMS) * time.Millisecond
}

// Execute triggers the prepared devices within the run's deadline and
// returns the final summary.
func (p *Prepared) Execute() *Summary {
	if p.done {
		return p.s
	}
	defer p.r.cancel()
	p.done = true
	p.r.triggerAll(p.s, p.eligible)
	p.r.markCooldown(p.s)
	return p.e.finish(p.s, p.r, p.started)
}

// Queue ends the synchronous part of the run for workers to carry on: it
// returns the summary so far, in which the devices left to trigger are
// not_attempted with reason queued, and their indexes in it.
func (p *Prepared) Queue() (*Summary, []int) {
	if p.done {
		return p.s, nil
	}
	p.r.cancel()
	p.done = true
	var pending []int
	for i := range p.s.Devices {
		if p.eligible[i] && p.s.Devices[i].Outcome == NotAttempted {
			p.s.Devices[i].Reason = ReasonQueued
			pending = append(pending, i)
		}
	}
	p.r.account(p.s)
	p.s.Status = StatusAccepted
	return p.s, pending
}

// Trigger triggers items for a worker of an asynchronous run, within ctx's
// deadline (less headroom), and returns one result per item, in order:
// items the deadline left are not_attempted with reason deadline. Accepted
// triggers are recorded in the cooldown store.
func (e *Engine) Trigger(ctx context.Context, items []Item) ([]DeviceResult, Throttling) {
	s := &Summary{Devices: make([]DeviceResult, len(items))}
	r := &run{engine: e, plan: Plan{Items: items}, throttle: &throttleLog{}}
	r.runCtx, r.callCtx, r.cancel = e.deadlines(ctx, time.Now(), 0)
	defer r.cancel()
	eligible := make([]bool, len(items))
	for i, it := range items {
		s.Devices[i] = DeviceResult{DeviceID: it.DeviceID, ScriptPolicyID: it.ScriptPolicyID, Collection: string(it.Collection),
			Outcome: NotAttempted, Reason: ReasonDeadline}
		eligible[i] = true
	}
	r.triggerAll(s, eligible)
	r.markCooldown(s)
	return s.Devices, r.throttling()
}

// WriteRate is the engine's write pace in triggers per second (0 when
// unlimited).
func (e *Engine) WriteRate() float64 { return e.pacer.WriteRate() }

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
	r.account(s)
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

// account adds the run's warnings and throttling to s and counts its
// devices.
func (r *run) account(s *Summary) {
	s.Warnings = append(s.Warnings, r.warnings...)
	s.Throttling = r.throttling()
	s.tally()
}

func (r *run) throttling() Throttling {
	return Throttling{ThrottledResponses: r.throttle.count(), WaitedMS: r.throttle.waited().Milliseconds()}
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
		sent := time.Now().UTC()
		resp, err := e.graph.Trigger(r.callCtx, it.Collection, it.DeviceID, it.ScriptPolicyID)
		if err == nil {
			res.Outcome, res.Reason, res.Message, res.TriggeredAt = Succeeded, "", "", sent
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
